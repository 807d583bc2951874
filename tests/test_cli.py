"""The command line: help, train/inspect round trip, and clean errors (exit status 2)."""

from pathlib import Path

import h5py
import pytest

from biotp.cli import main


def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for word in ("train", "inspect", "data", "biotp simulate circuits/mlp.yaml"):
        assert word in out


def test_train_then_inspect(tmp_path, capsys):
    out = tmp_path / "run.h5"
    code = main(["train", "circuits/mlp.yaml", "--algorithm", "sdtp", "--epochs", "1", "--quiet",
                 "--set", "data.limit=200", "--seed", "4", "--out", str(out), "--track-angles"])
    assert code == 0
    with h5py.File(out) as f:
        assert f.attrs["seed"] == 4 and "sdtp" in f.attrs["circuit_yaml"]
        assert "--algorithm sdtp" in f.attrs["command"]
    assert main(["inspect", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "angle_layer1" in shown and "name: sdtp" in shown


def test_errors_exit_2_with_message(tmp_path, capsys):
    assert main(["train", "circuits/mlp.yaml", "--set", "data.batchsize=3", "--quiet"]) == 2
    assert "circuits/mlp.yaml: data.batchsize: unknown key" in capsys.readouterr().err
    assert main(["train", "circuits/mlp.yaml", "--set", "data.dataset=mnist", "--data-dir", str(tmp_path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path) in err and "biotp data fetch mnist" in err
    assert main(["inspect", str(tmp_path / "nope.h5")]) == 2
    assert "no such run file" in capsys.readouterr().err
    assert main(["inspect", str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"biotp: error: {tmp_path}: a directory, not a run file; expected an HDF5 file\n"


def test_data_list(capsys, tmp_path):
    assert main(["data", "list", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "digits" in out and "mnist" in out


def test_one_module_per_verb_with_the_shared_options_defined_once():
    import importlib

    from biotp.cli import VERBS, build_parser, options

    parser = build_parser()
    verbs = parser._subparsers._group_actions[0].choices
    assert set(verbs) == set(VERBS)
    for verb in VERBS:
        module = importlib.import_module(f"biotp.cli.{verb}")
        assert callable(module.add_parser) and callable(module.run)
    for verb in ("train", "simulate", "compare"):
        flags = {f for a in verbs[verb]._actions for f in a.option_strings}
        assert {"--data-dir", "--threads", "--quiet", "--device", "--set", "--seed"} <= flags, verb
    assert {f for a in verbs["run"]._actions for f in a.option_strings} >= {"--data-dir", "--threads", "--quiet"}
    assert options.add_device.__module__ == "biotp.cli.options"


@pytest.mark.parametrize("argv, expected", [
    (["train", "circuits/mlp.yaml", "--device", "tpu", "--quiet"], "--device 'tpu': unknown device; expected cpu, cuda"),
    (["simulate", "circuits/mlp.yaml", "--device", "tpu", "--quiet"], "--device 'tpu': unknown device"),
])
def test_an_unknown_device_is_one_clear_error(argv, expected, capsys):
    assert main(argv) == 2
    assert expected in capsys.readouterr().err


def test_an_unavailable_cuda_is_an_error_not_a_fallback():
    import torch

    from biotp.config import ConfigError
    from biotp.devices import pick_device

    assert pick_device(None).type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert pick_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match=r"--device cuda:1: CUDA is not available on this machine"):
            pick_device("cuda:1")


@pytest.mark.parametrize("verb", ["train", "simulate", "compare"])
def test_threads_must_be_at_least_one(verb, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([verb, "circuits/mlp.yaml", "--threads", "-1"])
    assert exit_.value.code == 2
    assert "-1: expected a whole number ≥ 1" in capsys.readouterr().err


def test_plot_takes_the_short_output_option(tmp_path, capsys):
    run = tmp_path / "run.h5"
    assert main(["train", "circuits/mlp.yaml", "--epochs", "1", "--quiet", "--set", "data.limit=100",
                 "--out", str(run)]) == 0
    figures = tmp_path / "figures"
    assert main(["plot", str(run), "-o", str(figures), "--what", "curves"]) == 0
    assert list(figures.glob("*.png"))
    figure = tmp_path / "fig.png"  # a file name: the figure itself (one kind asked for)
    assert main(["plot", str(run), "-o", str(figure), "--what", "curves"]) == 0
    written = capsys.readouterr().out.split()
    assert written[-1] == str(figure) and figure.read_bytes()[:4] == b"\x89PNG"
    assert main(["plot", str(run), "-o", str(tmp_path / "all.pdf")]) == 0  # one: all.pdf; several: all-<kind>.pdf
    written = [Path(p) for p in capsys.readouterr().out.split()]
    assert written and all(p.exists() and p.suffix == ".pdf" and p.name.startswith("all") for p in written)
    assert main(["plot", str(run), "-o", str(run)]) == 2  # an existing file that is no figure name
    assert "a file, not a directory" in capsys.readouterr().err


def test_the_examples_of_run_help_load():
    """`biotp run --help`'s examples name protocols and --set keys that exist and agree
    (running them is the slow part: see the brief's record of running them)."""
    import shlex

    from biotp.cli import build_parser
    from biotp.protocols import load_protocol

    parser = build_parser()
    run = parser._subparsers._group_actions[0].choices["run"]
    examples = [line.strip() for line in run.epilog.splitlines() if line.strip().startswith("biotp run")]
    assert len(examples) == 3
    for example in examples:
        args = parser.parse_args(shlex.split(example)[1:])
        load_protocol(args.protocol, args.overrides)
