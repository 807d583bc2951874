"""The configuration layer (biotp/config): YAML with lines, duplicate keys, strict types,
bounded messages, and the package's import hygiene."""

import os
import pkgutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import biotp
from biotp.circuit import load_circuit, parse_circuit
from biotp.config import ConfigError, parse_yaml

ROOT = Path(biotp.__file__).parent


def modules() -> list[str]:
    return sorted(m.name for m in pkgutil.walk_packages([str(ROOT)], "biotp.") if not m.name.endswith("__main__"))


def _isolated(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT.parent)}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)


def test_every_module_imports_first_in_a_fresh_interpreter():
    """No import cycle that survives only by statement order: each module of biotp, imported
    first in an interpreter of its own (a forked child of one that imported nothing of biotp)."""
    code = textwrap.dedent(f"""
        import importlib, os, sys, traceback
        failed = []
        for name in {modules()!r}:
            pid = os.fork()
            if pid == 0:
                try:
                    importlib.import_module(name)
                except BaseException:
                    traceback.print_exc()
                    os._exit(1)
                os._exit(0)
            if os.waitpid(pid, 0)[1] != 0:
                failed.append(name)
        print("FAILED", failed)
        sys.exit(1 if failed else 0)
    """)
    result = _isolated(code)
    assert result.returncode == 0, result.stdout + result.stderr[-4000:]


def test_config_does_not_import_torch():
    result = _isolated("import sys, biotp.config, biotp.config.units; "
                       "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'brian2', 'h5py')))")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_import_biotp_is_light_and_public_names_resolve():
    result = _isolated("import sys, biotp; assert 'torch' not in sys.modules; "
                       "print(biotp.load_circuit.__module__, biotp.Circuit.__name__, biotp.train.__module__)")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["biotp.circuit", "Circuit", "biotp.training"]
    result = _isolated("import biotp; print(biotp.protocols.points.__module__, biotp.nope)")
    assert "module 'biotp' has no attribute 'nope'" in result.stderr
    result = _isolated("import biotp; print(biotp.protocols.points.__name__)")
    assert result.returncode == 0 and result.stdout.strip() == "points", result.stderr


def _write(tmp_path, text, name="c.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


MLP = textwrap.dedent("""\
    name: c
    network:
      layers:
        - {size: 8}
        - {size: 10}
    data: {dataset: digits}
    optimizer: {name: adam, lr: 0.001}
""")


def test_duplicate_keys_are_an_error_naming_both_lines(tmp_path):
    path = _write(tmp_path, MLP + "data: {dataset: mnist}\n")
    with pytest.raises(ConfigError, match=r"c\.yaml:8: data: duplicate key \(first given on line 6\)"):
        load_circuit(path)


def test_error_names_the_line_of_the_key(tmp_path):
    path = _write(tmp_path, MLP.replace("{size: 8}", "{size: 8, activation: swish}"))
    with pytest.raises(ConfigError, match=r"c\.yaml: network\.layers\.0\.activation: .*got 'swish' \(line 4\)"):
        load_circuit(path)


@pytest.mark.parametrize("key, value, expected", [
    ("network.layers.0.size", "true", r"network\.layers\.0\.size: expected a number, not a boolean; got True"),
    ("network.layers.0.size", "3.0", r"network\.layers\.0\.size: .*integer.*got 3\.0"),
    ("network.layers.0.bias", "1", r"network\.layers\.0\.bias: .*boolean.*got 1"),
    ("optimizer.lr", ".inf", r"optimizer\.lr: .*finite.*got inf"),
    ("optimizer.lr", "1e400", r"optimizer\.lr: .*finite.*got '1e400'"),
    ("optimizer.lr", "true", r"optimizer\.lr: expected a number, not a boolean; got True"),
    ("data.batch_size", "0", r"data\.batch_size: .*greater than 0; got 0"),
    ("name", "../../etc", r"name: expected a plain name for file names .*; got '\.\./\.\./etc'"),
])
def test_strict_types(tmp_path, key, value, expected):
    path = _write(tmp_path, MLP)
    with pytest.raises(ConfigError, match=r"c\.yaml: " + expected):
        load_circuit(path, [f"{key}={value}"])


def test_an_alias_bomb_is_refused_in_bounded_text(tmp_path):
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, "
              f"*a{i - 1}, *a{i - 1}]" for i in range(1, 9)]
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines) + "\nnetwork: {layers: *a8}\n")
    with pytest.raises(ConfigError, match=r"bomb\.yaml: its aliases expand to .* values") as err:
        load_circuit(path)
    assert len(str(err.value)) < 500


def test_errors_are_bounded(tmp_path):
    layers = "\n".join(f"    - {{size: {'x' * 5000}}}" for _ in range(50))
    path = tmp_path / "many.yaml"
    path.write_text(f"network:\n  layers:\n{layers}\n")
    with pytest.raises(ConfigError) as err:
        load_circuit(path)
    text = str(err.value)
    assert "... and 30 more errors" in text and len(text) < 20 * 400


def test_non_utf8_yaml_is_a_clear_error(tmp_path):
    path = tmp_path / "latin.yaml"
    path.write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin\.yaml:1: not UTF-8 text"):
        load_circuit(path)


def test_lines_of_keys_and_list_items():
    doc = parse_yaml("a:\n  b: 1\n  c:\n    - x\n    - {d: 2}\n", "s.yaml")
    assert doc.lines[("a",)] == 1 and doc.lines[("a", "b")] == 2 and doc.lines[("a", "c", 1, "d")] == 5
    assert doc.line_of(("a", "c", 1, "d", "e")) == 5


def test_set_keys_carry_no_file_line(tmp_path):
    path = _write(tmp_path, MLP)
    with pytest.raises(ConfigError) as err:
        load_circuit(path, ["data.batch_size=-1"])
    assert "(line" not in str(err.value)


def test_parse_circuit_still_takes_a_mapping():
    with pytest.raises(ConfigError, match=r"<circuit>: expected a mapping of circuit keys"):
        parse_circuit([1, 2])


@pytest.mark.parametrize("layer, expected", [
    ({"size": 10**12}, r"dense \{'size': 1000000000000\} makes a network of [\d,]+ parameters, .* GB to train"),
    ({"type": "conv", "channels": 4, "kernel": 20, "padding": 0},
     r"conv \{.*'kernel': 20.*\} on an input of shape \[1, 8, 8\] gives the empty output shape \[4, -11, -11\]"),
    ({"type": "maxpool", "kernel": 16}, r"maxpool \{'kernel': 16\} on an input of shape \[1, 8, 8\] gives the empty"),
])
def test_layers_that_cannot_be_built_name_the_layer(tmp_path, layer, expected):
    from biotp.training import Session

    path = _write(tmp_path, MLP)
    circuit = load_circuit(path, [f"network.layers.0={layer}"])
    with pytest.raises(ConfigError, match=r"c\.yaml: network\.layers \(expanded\) 0: " + expected):
        Session(circuit, device="cpu")


def test_a_split_the_dataset_cannot_give_names_the_circuit_key(tmp_path):
    from biotp.training import Session

    with pytest.raises(ConfigError, match=r"c\.yaml: data\.val_split: 10000: expected a count in 0\.\.1436"):
        Session(load_circuit(_write(tmp_path, MLP), ["data.val_split=10000"]), device="cpu")


@pytest.mark.parametrize("sweep, expected", [
    ({"points": []}, "points is empty"), ({"grid": {}}, "grid is empty"),
    ({"grid": {"stimuli.count": []}}, "grid stimuli.count is empty"),
])
def test_an_empty_protocol_sweep_is_an_error(tmp_path, sweep, expected):
    import yaml

    from biotp.protocols import load_protocol

    _write(tmp_path, MLP)
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({"name": "p", "circuit": "c.yaml", "sweep": sweep}))
    with pytest.raises(ConfigError, match=rf"p\.yaml: sweep: {expected}"):
        load_protocol(path)
