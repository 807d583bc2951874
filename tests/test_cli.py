"""The command line: help, train/inspect round trip, and clean errors (exit status 2)."""

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


def test_data_list(capsys, tmp_path):
    assert main(["data", "list", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "digits" in out and "mnist" in out
