"""The malformed-input corpus (issue 12): circuits, protocols, command-line arguments, run
files and data folders a user gets wrong.  Every case must end in a clear error of biotp's
own -- a non-zero exit, no traceback, and a message naming the file, the key path, the value
and what was expected (as far as each applies) -- never in a traceback or silent nonsense.

Written against the command line (`biotp ...` as a subprocess) and the public API
(`biotp.load_circuit`, `biotp.load_protocol`, `biotp.training.Session`, `biotp.errors`) only,
so it holds while the modules behind them move.  Loader cases run in-process; every case
that needs a command runs it end to end.
"""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

import biotp
from biotp.errors import BiotpError, ConfigError

ROOT = Path(__file__).resolve().parents[1]
MAX_MESSAGE = 2000  # bytes: an error is a few lines, never a dump of the input

BASE = {
    "name": "tiny",
    "seed": 0,
    "network": {"layers": [{"type": "dense", "size": 16, "activation": "tanh"},
                           {"type": "dense", "size": 10, "activation": "linear"}]},
    "loss": "cross_entropy",
    "algorithm": {"name": "dtp", "eta_hat": 0.2},
    "optimizer": {"name": "rmsprop", "lr": 0.001},
    "feedback": {"noise": 0.1, "optimizer": {"name": "rmsprop", "lr": 0.001}},
    "data": {"dataset": "digits", "batch_size": 32, "val_split": 0.1, "limit": 200},
    "schedule": {"epochs": 1},
    "dynamics": {"tau_f": "2 ms", "tau_t": "2 ms", "dt": "0.5 ms", "forward_phase": "5 ms",
                 "target_phase": "5 ms", "plasticity": {"rule": "dtp", "eta": 0.1},
                 "record": {"layer1": ["h", "t"]}},
}

PROTOCOL = {
    "name": "tinyp",
    "circuit": "circuit.yaml",
    "engine": "torch",
    "stimuli": {"split": "train", "batch": 1, "count": 2},
    "evaluate": {"count": 20},
}


# ------------------------------------------------------------------------- helpers


def _biotp_command() -> list[str]:
    script = Path(sys.executable).with_name("biotp")
    if script.exists():
        return [sys.executable, str(script)]
    return [sys.executable, "-c", "import sys; from biotp.cli import main; sys.exit(main())"]


def cli(*args: str, cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    return subprocess.run([*_biotp_command(), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def mutated(*changes) -> dict:
    """BASE with (dotted.key, value) changes; value DELETE removes the key."""
    data = yaml.safe_load(yaml.safe_dump(BASE))
    for key, value in changes:
        *parents, last = key.split(".")
        node = data
        for p in parents:
            node = node[int(p)] if isinstance(node, list) else node.setdefault(p, {})
        if value is DELETE:
            del node[last]
        elif isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value
    return data


DELETE = object()


def write(path: Path, content) -> Path:
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif isinstance(content, str):
        path.write_text(content)
    else:
        path.write_text(yaml.safe_dump(content, sort_keys=False))
    return path


def assert_clear(message: str, *expected: str) -> None:
    """A message a user can act on: bounded, no traceback, naming each of `expected`."""
    assert "Traceback" not in message, message
    assert len(message.encode()) < MAX_MESSAGE, f"{len(message.encode())} bytes: {message[:500]}..."
    low = message.lower()
    missing = [e for e in expected if e.lower() not in low]
    assert not missing, f"message lacks {missing}:\n{message}"


def assert_refused(result: subprocess.CompletedProcess, *expected: str) -> None:
    out = result.stdout + result.stderr
    assert result.returncode != 0, f"exit 0:\n{out[-3000:]}"
    assert "Traceback" not in out, out[-5000:]
    assert "biotp: error:" in result.stderr or "error:" in result.stderr, out[-3000:]
    assert_clear(result.stderr, *expected)


def loader_error(path: Path, overrides=()) -> str:
    with pytest.raises(ConfigError) as info:
        biotp.load_circuit(path, list(overrides))
    return str(info.value)


# ------------------------------------------------------ circuits: the loader, in-process

BOMB = "a: &a [" + ",".join(["x"] * 10) + "]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [" + ",".join([f"*{chr(97 + i)}"] * 10) + "]\n" for i in range(8)
) + "network: {layers: *i}\n"

DUPLICATE = yaml.safe_dump(BASE, sort_keys=False) + "optimizer: {name: sgd, lr: 0.5}\n"

# id -> (file content, fragments the message must name beyond the file)
CIRCUIT_CASES = {
    "unknown-top-key": (mutated(("optimiser", {"name": "sgd"})), ["optimiser", "unknown key", "expected one of"]),
    "unknown-layer-key": (mutated(("network.layers.0.sise", 3)), ["network.layers.0.sise", "unknown key"]),
    "batch-size-string": (mutated(("data.batch_size", "many")), ["data.batch_size", "'many'", "integer"]),
    "size-true": (mutated(("network.layers.0.size", True)), ["network.layers.0.size", "true"]),
    "size-zero": (mutated(("network.layers.0.size", 0)), ["network.layers.0.size", "0", "greater than 0"]),
    "size-negative": (mutated(("network.layers.0.size", -3)), ["network.layers.0.size", "-3"]),
    "size-fraction": (mutated(("network.layers.0.size", 1.5)), ["network.layers.0.size", "1.5"]),
    "epochs-bool": (mutated(("schedule.epochs", False)), ["schedule.epochs", "false"]),
    "lr-infinite": (mutated(("optimizer.lr", float("inf"))), ["optimizer.lr", "inf", "finite"]),
    "lr-1e400": ("" + yaml.safe_dump(BASE, sort_keys=False).replace("lr: 0.001\n", "lr: 1e400\n", 1),
                 ["optimizer.lr", "finite"]),
    "lr-nan": (mutated(("optimizer.lr", float("nan"))), ["optimizer.lr", "nan"]),
    "lr-negative": (mutated(("optimizer.lr", -0.1)), ["optimizer.lr", "-0.1"]),
    "feedback-lr-infinite": (mutated(("feedback.optimizer.lr", float("inf"))), ["feedback.optimizer.lr", "finite"]),
    "eta-hat-nan": (mutated(("algorithm.eta_hat", float("nan"))), ["algorithm.eta_hat", "nan"]),
    "feedback-noise-negative": (mutated(("feedback.noise", -1)), ["feedback.noise", "-1"]),
    "seed-negative": (mutated(("seed", -1)), ["seed", "-1"]),
    "epochs-zero": (mutated(("schedule.epochs", 0)), ["schedule.epochs", "0"]),
    "val-split-too-large": (mutated(("data.val_split", 1.5)), ["data.val_split", "1.5"]),
    "dataset-unknown": (mutated(("data.dataset", "mnsit")), ["data.dataset", "mnsit", "digits"]),
    "activation-unknown": (mutated(("network.layers.0.activation", "relu6")), ["network.layers.0.activation", "relu6"]),
    "algorithm-unknown": (mutated(("algorithm", {"name": "dtpp"})), ["algorithm", "dtpp"]),
    "layers-empty": (mutated(("network.layers", [])), ["network.layers", "at least 1"]),
    "layers-not-a-list": (mutated(("network.layers", "dense")), ["network.layers", "'dense'"]),
    "input-shape-zero": (mutated(("network.input", [0, 8, 8])), ["network.input", "0"]),
    "name-dotdot": (mutated(("name", "../..")), ["name", "'../..'"]),
    "name-slash": (mutated(("name", "a/b")), ["name", "'a/b'"]),
    "dt-zero": (mutated(("dynamics.dt", "0 ms")), ["dynamics.dt", "0", "positive"]),
    "dt-1e400": (mutated(("dynamics.dt", "1e400 ms")), ["dynamics.dt", "finite"]),
    "tau-negative": (mutated(("dynamics.tau_f", "-2 ms")), ["dynamics.tau_f", "-0.002", "positive"]),
    "tau-zero": (mutated(("dynamics.tau_t", "0 ms")), ["dynamics.tau_t", "positive"]),
    "phase-negative": (mutated(("dynamics.forward_phase", "-5 ms")), ["dynamics.forward_phase", "≥ 0"]),
    "phase-huge": (mutated(("dynamics.target_phase", "1e9 s")), ["dynamics", "target_phase", "steps"]),
    "dt-wrong-unit": (mutated(("dynamics.dt", "5 volt")), ["dynamics.dt", "volt"]),
    "record-dt-zero": (mutated(("dynamics.record_dt", "0 ms")), ["dynamics.record_dt", "positive"]),
    "plasticity-eta-infinite": (mutated(("dynamics.plasticity.eta", float("inf"))),
                                ["dynamics.plasticity.eta", "finite"]),
    "duplicate-key": (DUPLICATE, ["optimizer", "duplicate"]),
    "non-utf8": (yaml.safe_dump(BASE).encode() + b"# caf\xe9 \xff\xfe\n", ["utf-8"]),
    "alias-bomb": (BOMB, []),
    "yaml-syntax": ("network: {layers: [\n", ["not valid yaml", "line"]),
    "top-level-list": ("- 1\n- 2\n", ["mapping", "list"]),
    "empty-file": ("", ["network", "required"]),
}


@pytest.mark.parametrize("content,expected", list(CIRCUIT_CASES.values()), ids=list(CIRCUIT_CASES))
def test_malformed_circuit_is_a_clear_config_error(tmp_path, content, expected):
    path = write(tmp_path / "circuit.yaml", content)
    t0 = time.perf_counter()
    message = loader_error(path)
    assert time.perf_counter() - t0 < 10
    assert_clear(message, str(path), *expected)


def test_missing_and_directory_circuit_files(tmp_path):
    assert_clear(loader_error(tmp_path / "nope.yaml"), str(tmp_path / "nope.yaml"), "cannot read")
    (tmp_path / "dir.yaml").mkdir()
    assert_clear(loader_error(tmp_path / "dir.yaml"), str(tmp_path / "dir.yaml"), "cannot read")


@pytest.mark.parametrize("override,expected", [
    ("network.layers.5.size=3", ["network.layers.5", "index below 2"]),
    ("optimizer.lr", ["optimizer.lr", "key.path=value"]),
    ("optimizer.lr=.inf", ["optimizer.lr", "finite"]),
    ("network.layers.0.size=true", ["network.layers.0.size", "true"]),
    ("data.batch_size.x=1", ["data.batch_size", "32"]),
], ids=["index-out-of-range", "no-equals", "infinite", "bool-size", "index-into-int"])
def test_malformed_override_is_a_clear_config_error(tmp_path, override, expected):
    path = write(tmp_path / "circuit.yaml", BASE)
    assert_clear(loader_error(path, [override]), str(path), *expected)


# ------------------------------------ circuits that load but cannot be built or trained


def _build_and_step(circuit):
    from biotp.training import Session

    session = Session(circuit, device="cpu")
    session.run_epoch(1)


@pytest.mark.parametrize("changes,expected", [
    ([("network.layers.0.size", 10**12)], ["network.layers", "1000000000000", "parameters"]),
    ([("network.layers.0", {"type": "dense", "size": 10**6, "repeat": 2})], ["network.layers", "parameters", "GB"]),
    ([("network.layers.0", {"type": "conv", "channels": 4, "kernel": 20, "padding": 0})],
     ["network.layers", "kernel", "20"]),
    ([("network.layers.0", {"type": "maxpool", "kernel": 16})], ["network.layers", "16"]),
    ([("network.input", 100)], ["network.input", "100", "64"]),
    ([("data.val_split", 10_000)], ["data.val_split", "10000"]),
    ([("network.layers.1.size", 3)], ["size", "3", "10"]),
], ids=["layer-size-unallocatable", "layers-too-large-together", "conv-kernel-exceeds-image",
        "pool-exceeds-image", "input-size-mismatch", "val-split-empties-train", "output-smaller-than-classes"])
def test_circuit_that_cannot_be_built_is_a_clear_error(tmp_path, changes, expected):
    path = write(tmp_path / "circuit.yaml", mutated(*changes))
    t0 = time.perf_counter()
    with pytest.raises(BiotpError) as info:
        _build_and_step(biotp.load_circuit(path))
    assert time.perf_counter() - t0 < 30
    assert_clear(str(info.value), str(path), *expected)


# ---------------------------------------------------------- protocols, in-process

PROTOCOL_CASES = {
    "unknown-key": ({"stimulus": {"count": 2}}, ["stimulus", "unknown key"]),
    "engine-unknown": ({"engine": "jax"}, ["engine", "'jax'"]),
    "count-zero": ({"stimuli": {"count": 0}}, ["stimuli.count", "0"]),
    "window-reversed": ({"interventions": [{"kind": "silence", "population": "layer1", "window": ["2 s", "1 s"]}]},
                        ["interventions.0.window", "stop"]),
    "phase-unknown": ({"interventions": [{"kind": "silence", "population": "layer1", "phases": ["later"]}]},
                      ["interventions.0.phases", "'later'"]),
    "intervention-kind-unknown": ({"interventions": [{"kind": "zap", "population": "layer1"}]},
                                  ["interventions.0", "'zap'"]),
    "lesion-fraction": ({"interventions": [{"kind": "lesion", "projection": "forward.layer1", "fraction": 2}]},
                        ["interventions.0.fraction", "2"]),
    "sweep-both": ({"sweep": {"grid": {"stimuli.count": [1]}, "points": [{}]}}, ["sweep", "exactly one"]),
    "sweep-grid-empty": ({"sweep": {"grid": {"stimuli.count": []}}}, ["sweep", "stimuli.count", "empty"]),
    "sweep-points-empty": ({"sweep": {"points": []}}, ["sweep", "points", "empty"]),
    "duplicate-phase": ({"phases": [{"name": "a", "trials": 1}, {"name": "a", "trials": 1}]}, ["phases", "unique"]),
    "evaluate-every-zero": ({"evaluate": {"every": 0}}, ["evaluate.every", "0"]),
}


@pytest.mark.parametrize("changes,expected", list(PROTOCOL_CASES.values()), ids=list(PROTOCOL_CASES))
def test_malformed_protocol_is_a_clear_config_error(tmp_path, changes, expected):
    write(tmp_path / "circuit.yaml", BASE)
    path = write(tmp_path / "protocol.yaml", {**PROTOCOL, **changes})
    with pytest.raises(ConfigError) as info:
        biotp.protocols.points(biotp.load_protocol(path))
    assert_clear(str(info.value), str(path), *expected)


def test_protocol_non_utf8_and_duplicate_keys(tmp_path):
    path = write(tmp_path / "protocol.yaml", yaml.safe_dump(PROTOCOL).encode() + b"# \xff\n")
    with pytest.raises(ConfigError) as info:
        biotp.load_protocol(path)
    assert_clear(str(info.value), str(path), "utf-8")
    write(path, yaml.safe_dump(PROTOCOL) + "engine: brian2\n")
    with pytest.raises(ConfigError) as info:
        biotp.load_protocol(path)
    assert_clear(str(info.value), str(path), "engine", "duplicate")


# ------------------------------------------------------------ the command line, end to end


@pytest.fixture
def work(tmp_path):
    """A directory with the tiny circuit and protocol, the command's working directory."""
    write(tmp_path / "circuit.yaml", BASE)
    write(tmp_path / "protocol.yaml", PROTOCOL)
    return tmp_path


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished one-epoch train run file of the tiny circuit (dtp) and of a bigger one."""
    d = tmp_path_factory.mktemp("trained")
    write(d / "circuit.yaml", BASE)
    r = cli("train", "circuit.yaml", "--out", "run.h5", "--quiet", cwd=d)
    assert r.returncode == 0, r.stderr
    return d / "run.h5"


def _foreign(path: Path) -> Path:
    with h5py.File(path, "w") as f:
        f["data"] = np.arange(3)
        f.attrs["creator"] = "not biotp"
    return path


def _copy_without(src: Path, dst: Path, attr: str | None = None, group: str | None = None) -> Path:
    shutil.copy(src, dst)
    with h5py.File(dst, "a") as f:
        if attr:
            del f.attrs[attr]
        if group:
            del f[group]
    return dst


CLI_CASES = {
    # train: arguments
    "train-device-tpu": (["train", "circuit.yaml", "--device", "tpu", "--quiet"], ["--device", "tpu", "cpu"]),
    "train-epochs-zero": (["train", "circuit.yaml", "--epochs", "0", "--quiet"], ["epochs", "0"]),
    "train-seed-negative": (["train", "circuit.yaml", "--seed", "-1", "--quiet"], ["seed", "-1"]),
    "train-set-no-equals": (["train", "circuit.yaml", "--set", "optimizer.lr"], ["optimizer.lr", "key.path=value"]),
    "train-set-unknown-key": (["train", "circuit.yaml", "--set", "optimizer.rate=1"], ["optimizer.rate", "unknown key"]),
    "train-algorithm-unknown": (["train", "circuit.yaml", "--algorithm", "dtpp"], ["algorithm", "dtpp", "expected one of"]),
    "train-missing-circuit": (["train", "nope.yaml"], ["nope.yaml", "cannot read"]),
    "train-non-utf8-circuit": (["train", "latin1.yaml"], ["latin1.yaml", "utf-8"]),
    "train-name-escapes-runs": (["train", "escape.yaml", "--quiet"], ["name", "'../..'"]),
    "train-out-is-directory": (["train", "circuit.yaml", "--out", "adir", "--quiet"], ["adir", "directory"]),
    "train-out-under-a-file": (["train", "circuit.yaml", "--out", "afile/run.h5", "--quiet"], ["afile"]),
    # train: runs that must stop
    "train-lr-1e6-explodes": (["train", "circuit.yaml", "--set", "optimizer.lr=1e6", "--set", "optimizer.name=sgd",
                               "--algorithm", "bp", "--epochs", "3", "--quiet", "--out", "x.h5"],
                              ["diverged", "epoch", "step", "optimizer.lr"]),
    "train-noise-explodes-hint": (["train", "circuit.yaml", "--set", "feedback.noise=1e30", "--set", "network.layers.0.repeat=2",
                                   "--quiet", "--out", "x.h5"],
                                  ["diverged", "feedback.noise = 1e+30"]),
    # train: resuming
    "resume-missing-file": (["train", "--resume", "nope.h5"], ["nope.h5", "no such run file"]),
    "resume-text-file": (["train", "--resume", "afile"], ["afile", "hdf5"]),
    "resume-foreign-hdf5": (["train", "--resume", "foreign.h5"], ["foreign.h5", "circuit_yaml"]),
    "resume-without-circuit-yaml": (["train", "--resume", "nocircuit.h5"], ["nocircuit.h5", "circuit_yaml"]),
    "resume-without-rng": (["train", "--resume", "norng.h5", "--epochs", "2", "--quiet"], ["norng.h5", "rng"]),
    "resume-without-checkpoint": (["train", "--resume", "nockpt.h5", "--epochs", "2", "--quiet"],
                                  ["nockpt.h5", "checkpoint"]),
    "resume-other-circuit": (["train", "bigger.yaml", "--resume", "run.h5", "--epochs", "2", "--quiet"],
                             ["run.h5", "network.layers.0.size", "16", "32"]),
    "resume-other-rule": (["train", "--resume", "run.h5", "--algorithm", "bp", "--epochs", "2", "--quiet"],
                          ["run.h5", "algorithm.name", "dtp", "bp"]),
    "resume-simulate-file-as-train": (["train", "--resume", "sim.h5", "--epochs", "2", "--quiet"], ["sim.h5", "kind"]),
    # simulate
    "simulate-duration-volt": (["simulate", "circuit.yaml", "--duration", "5 volt", "--quiet"], ["--duration", "volt"]),
    "simulate-examples-negative": (["simulate", "circuit.yaml", "--examples", "-5"], ["-5", "≥ 1"]),
    "simulate-examples-zero": (["simulate", "circuit.yaml", "--examples", "0"], ["0", "≥ 1"]),
    "simulate-batch-size-zero": (["simulate", "circuit.yaml", "--batch-size", "0"], ["0", "≥ 1"]),
    "simulate-threads-negative": (["simulate", "circuit.yaml", "--threads", "-1"], ["-1", "≥ 1"]),
    "simulate-record-missing-layer": (["simulate", "circuit.yaml", "--examples", "2", "--quiet",
                                       "--set", "dynamics.record={layer9: [h]}"], ["record", "layer9", "layer1"]),
    "simulate-record-unknown-variable": (["simulate", "circuit.yaml", "--examples", "2", "--quiet",
                                          "--set", "dynamics.record={layer1: [q]}"], ["record", "q"]),
    "simulate-tau-zero": (["simulate", "circuit.yaml", "--examples", "2", "--set", "dynamics.tau_f=0 ms"],
                          ["dynamics.tau_f", "positive"]),
    "simulate-device-tpu": (["simulate", "circuit.yaml", "--examples", "2", "--device", "tpu"], ["tpu", "cpu"]),
    "simulate-record-dt-off-grid": (["simulate", "circuit.yaml", "--examples", "2", "--set", "dynamics.record_dt=0.3 ms"],
                                    ["circuit.yaml", "dynamics", "record_dt", "whole number"]),
    "simulate-out-is-directory": (["simulate", "circuit.yaml", "--examples", "2", "--out", "adir", "--quiet"],
                                  ["adir", "directory"]),
    # run (protocols)
    "run-threads-negative": (["run", "protocol.yaml", "--threads", "-1"], ["-1", "≥ 1"]),
    "run-clamp-wrong-length": (["run", "clamp.yaml", "--quiet", "--out", "c.h5"],
                               ["clamp.yaml", "interventions.0.value", "3", "10"]),
    "run-empty-split": (["run", "protocol.yaml", "--quiet", "--out", "e.h5", "--set", "stimuli.split=val",
                         "--set", "circuit.data.val_split=0"], ["stimuli.split", "val", "empty"]),
    "run-missing-circuit": (["run", "protocol.yaml", "--set", "circuit=nope.yaml"], ["nope.yaml", "cannot read"]),
    "run-unknown-population": (["run", "silence.yaml", "--quiet", "--out", "s.h5"],
                               ["interventions.0.population", "layer7", "layer1"]),
    "run-out-is-directory": (["run", "protocol.yaml", "--out", "adir", "--quiet"], ["adir", "directory"]),
    # compare
    "compare-duplicate-rules": (["compare", "circuit.yaml", "--algorithms", "bp,bp"], ["bp,bp", "distinct"]),
    "compare-unknown-rule": (["compare", "circuit.yaml", "--algorithms", "bp,xyz"], ["xyz", "expected one of"]),
    "compare-empty-rules": (["compare", "circuit.yaml", "--algorithms", ","], ["--algorithms"]),
    "compare-out-is-train-file": (["compare", "circuit.yaml", "--algorithms", "bp", "--out", "run.h5", "--quiet"],
                                  ["run.h5", "kind", "compare"]),
    # inspect, plot, export
    "inspect-text-file": (["inspect", "afile"], ["afile", "hdf5"]),
    "inspect-missing": (["inspect", "nope.h5"], ["nope.h5", "no such"]),
    "plot-out-is-file": (["plot", "run.h5", "--out", "afile"], ["afile", "directory"]),
    "plot-what-unknown": (["plot", "run.h5", "--what", "pie", "--out", "figs"], ["pie", "expected"]),
    "plot-dpi-zero": (["plot", "run.h5", "--dpi", "0", "--out", "figs"], ["--dpi", "0"]),
    "plot-foreign-file": (["plot", "foreign.h5", "--out", "figs"], ["foreign.h5"]),
    "export-train-file": (["export", "run.h5", "--nwb", "x.nwb"], ["run.h5", "train"]),
    # data folders
    "data-dir-missing-mnist": (["train", "mnist.yaml", "--data-dir", "nodata", "--quiet"], ["nodata", "mnist"]),
    "data-dir-truncated-mnist": (["train", "mnist.yaml", "--data-dir", "bad", "--quiet"], ["bad", "mnist"]),
    "data-dir-is-a-file": (["train", "mnist.yaml", "--data-dir", "afile", "--quiet"], ["afile"]),
}


def _prepare(work: Path, trained: Path) -> None:
    write(work / "latin1.yaml", yaml.safe_dump(BASE).encode() + b"# \xe9\xff\n")
    write(work / "escape.yaml", mutated(("name", "../..")))
    write(work / "bigger.yaml", mutated(("network.layers.0.size", 32)))
    write(work / "nodyn.yaml", mutated(("dynamics", DELETE)))
    write(work / "mnist.yaml", mutated(("data.dataset", "mnist"), ("dynamics", DELETE)))
    write(work / "clamp.yaml", {**PROTOCOL, "interventions": [{"kind": "clamp", "population": "layer2",
                                                               "variable": "h", "value": [0.1, 0.2, 0.3]}]})
    write(work / "silence.yaml", {**PROTOCOL, "interventions": [{"kind": "silence", "population": "layer7"}]})
    (work / "adir").mkdir()
    (work / "afile").write_text("not a run file\n")
    shutil.copy(trained, work / "run.h5")
    _foreign(work / "foreign.h5")
    _copy_without(trained, work / "nocircuit.h5", attr="circuit_yaml")
    _copy_without(trained, work / "norng.h5", group="checkpoint/rng")
    _copy_without(trained, work / "nockpt.h5", group="checkpoint")
    shutil.copy(trained, work / "sim.h5")
    with h5py.File(work / "sim.h5", "a") as f:
        f.attrs["kind"] = "simulate"
    (work / "bad").mkdir()
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
                 "t10k-labels-idx1-ubyte.gz"):
        (work / "bad" / name).write_bytes(gzip.compress(b"\x00\x00\x08\x03" + b"\x00" * 20))


# run as a subprocess through the `biotp` script (the rest through the same entry point in-process)
END_TO_END = {
    "train-device-tpu", "train-epochs-zero", "train-set-no-equals", "train-missing-circuit", "train-non-utf8-circuit",
    "train-name-escapes-runs", "train-out-is-directory", "train-out-under-a-file", "train-lr-1e6-explodes",
    "resume-foreign-hdf5", "resume-without-circuit-yaml", "resume-without-rng", "resume-other-rule",
    "simulate-duration-volt", "simulate-examples-negative", "simulate-threads-negative",
    "simulate-record-missing-layer", "run-threads-negative", "run-clamp-wrong-length", "run-empty-split",
    "compare-duplicate-rules", "inspect-text-file", "plot-out-is-file", "export-train-file",
    "data-dir-truncated-mnist",
}


def cli_in_process(args, cwd: Path, capsys, monkeypatch) -> subprocess.CompletedProcess:
    """The console script's entry point called in this process (a traceback fails the test)."""
    from biotp.cli import main

    monkeypatch.chdir(cwd)
    capsys.readouterr()
    try:
        code = main(list(args))
    except SystemExit as exit:  # argparse's refusals
        code = exit.code
    out = capsys.readouterr()
    return subprocess.CompletedProcess(list(args), code, out.out, out.err)


@pytest.mark.parametrize("case", list(CLI_CASES))
def test_malformed_command_is_refused_clearly(work, trained, case, capsys, monkeypatch):
    args, expected = CLI_CASES[case]
    _prepare(work, trained)
    t0 = time.perf_counter()
    result = cli(*args, cwd=work) if case in END_TO_END else cli_in_process(args, work, capsys, monkeypatch)
    assert_refused(result, *expected)
    if any(a in ("adir", "afile/run.h5") for a in args) and "--out" in args:  # refused before any training
        assert "epoch" not in result.stdout and not list(work.glob("adir/*"))
    assert time.perf_counter() - t0 < 120
    assert not (work.parent / "runs").exists() or "escape" not in " ".join(args)


# ------------------------------------------ resumed sweeps and comparisons that changed


def test_resumed_protocol_with_a_changed_circuit_file_is_refused(work):
    r = cli("run", "protocol.yaml", "--out", "p.h5", "--quiet", cwd=work)
    assert r.returncode == 0, r.stderr
    write(work / "circuit.yaml", mutated(("optimizer.lr", 0.002)))
    assert_refused(cli("run", "protocol.yaml", "--out", "p.h5", "--quiet", cwd=work), "p.h5", "circuit")


def test_resumed_protocol_with_a_changed_protocol_file_is_refused(work):
    r = cli("run", "protocol.yaml", "--out", "p.h5", "--quiet", cwd=work)
    assert r.returncode == 0, r.stderr
    write(work / "protocol.yaml", {**PROTOCOL, "stimuli": {**PROTOCOL["stimuli"], "count": 3}})
    assert_refused(cli("run", "protocol.yaml", "--out", "p.h5", "--quiet", cwd=work), "p.h5", "protocol")


def test_resumed_comparison_with_a_changed_circuit_file_is_refused(work):
    r = cli("compare", "circuit.yaml", "--algorithms", "bp", "--out", "c.h5", "--quiet", "--no-track-angles", cwd=work)
    assert r.returncode == 0, r.stderr
    write(work / "circuit.yaml", mutated(("optimizer.lr", 0.002)))
    assert_refused(cli("compare", "circuit.yaml", "--algorithms", "bp,fa", "--out", "c.h5", "--quiet", cwd=work),
                   "c.h5", "optimizer.lr", "0.001", "0.002")
