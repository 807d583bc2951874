"""`biotp compare`: same initial weights across rules, the file layout and table against
separately trained runs, resuming an interrupted comparison, clear errors."""

import h5py
import numpy as np
import pytest
import torch

import biotp
from biotp.cli import main
from biotp.compare import compare, open_comparison
from biotp.errors import BiotpError, ConfigError
from biotp.network import Network
from biotp.training import Session, train

QUICK = ["data.limit=200", "data.batch_size=32"]


@pytest.fixture(scope="module")
def circuit():
    return biotp.load_circuit("circuits/mlp.yaml", QUICK)


def _same_metrics(a, b):
    assert set(a) == set(b)
    for key in a:
        if key != "seconds":
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)


@pytest.mark.parametrize("rules", [("bp", "fa", "dfa", "tp", "dtp", "sdtp", "ao_sdtp", "fwdtp", "ldrl", "tjml")])
def test_every_rule_starts_from_the_same_forward_weights(circuit, rules):
    # the reference: the forward network alone, built from the seed without any rule
    reference = [p.detach() for p in Network(circuit, 64, with_feedback=False).forward_params()]
    for name in rules:
        session = Session(circuit.with_algorithm(name))
        ours = [p.detach().cpu() for p in session.rule.forward_params()]
        assert len(ours) == len(reference), name
        for a, b in zip(ours, reference):
            torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    other = [p.detach() for p in Network(circuit.with_updates("seed=1"), 64, with_feedback=False).forward_params()]
    assert not torch.equal(other[0], reference[0])  # the seed matters, so the check above can fail


def test_comparison_file_and_table_match_separate_runs(tmp_path, circuit):
    out = tmp_path / "cmp.h5"
    result = compare(circuit, "bp,dtp", epochs=2, out=out, progress=False, command="test")
    alone = {a: train(circuit.with_algorithm(a), epochs=2, progress=False, track_angles=True) for a in ("bp", "dtp")}
    with h5py.File(out) as f:
        assert f.attrs["kind"] == "compare" and f.attrs["algorithms"] == "bp,dtp"
        assert f.attrs["seed"] == circuit.seed and f.attrs["command"] == "test"
        assert "name: dtp" in f.attrs["circuit_yaml"] and f.attrs["biotp_version"] and f.attrs["created"]
        assert set(f["runs"]) == {"bp", "dtp"} and "model" in f["runs/dtp/checkpoint"]
        assert [a.decode() for a in f["table/algorithm"][()]] == ["bp", "dtp"]
    assert not list(tmp_path.glob("*.partial.h5"))  # partial run files are removed once merged
    for a in ("bp", "dtp"):
        _same_metrics(result.runs[a], alone[a])
    t = result.table
    for i, a in enumerate(("bp", "dtp")):
        m = result.runs[a]
        assert t["epochs"][i] == 2
        assert t["final_test_error"][i] == m["test_error"][-1]
        assert t["best_val_test_error"][i] == m["test_error"][int(np.argmin(m["val_error"]))]
        assert t["seconds_per_epoch"][i] == pytest.approx(np.median(m["seconds"]))
        assert t["ratio_to_bp"][i] == pytest.approx(np.median(m["seconds"]) / np.median(result.runs["bp"]["seconds"]))
        for l in (1, 2, 3):
            assert t[f"angle_layer{l}"][i] == m[f"angle_layer{l}"][-1]
    assert t["angle_layer1"][0] == pytest.approx(0, abs=1e-3)  # BP against itself
    assert list(result.table)[:6] == ["algorithm", "epochs", "final_test_error", "best_val_test_error",
                                      "seconds_per_epoch", "ratio_to_bp"]
    text = result.markdown()
    assert text.splitlines()[0].startswith("| rule | epochs |") and len(text.splitlines()) == 4
    assert f"| dtp | 2 | {100 * t['final_test_error'][1]:.2f} |" in text


def test_ratio_to_bp_is_nan_without_bp(circuit):
    result = compare(circuit, ["dtp"], epochs=1, progress=False, track_angles=False)
    assert np.isnan(result.table["ratio_to_bp"][0]) and "—" in result.markdown()
    assert not any(k.startswith("angle_") for k in result.table)


def test_interrupted_comparison_resumes(tmp_path, circuit, monkeypatch):
    whole = compare(circuit, "bp,dtp", epochs=3, out=tmp_path / "whole.h5", progress=False)
    # an interruption while dtp trains: bp is in the file, dtp's partial run has 1 epoch
    out = tmp_path / "cmp.h5"
    compare(circuit, "bp", epochs=3, out=out, progress=False)
    train(circuit.with_algorithm("dtp").with_updates("schedule.epochs=3"), epochs=1,
          out=tmp_path / "cmp.dtp.partial.h5", progress=False, track_angles=True)
    trained = []
    real_train = biotp.compare.train

    def spy(rule, **kwargs):
        trained.append((rule.algorithm.name, kwargs.get("resume") is not None))
        return real_train(rule, **kwargs)

    monkeypatch.setattr(biotp.compare, "train", spy)
    resumed = compare(circuit, "bp,dtp", epochs=3, out=out, progress=False)
    assert trained == [("dtp", True)]  # bp skipped, dtp continued from its checkpoint
    for a in ("bp", "dtp"):
        _same_metrics(resumed.runs[a], whole.runs[a])
    # more epochs later: finished rules continue from their checkpoints
    trained.clear()
    longer = compare(circuit, "bp,dtp", epochs=4, out=out, progress=False)
    assert trained == [("bp", True), ("dtp", True)]
    reference = train(circuit.with_algorithm("dtp"), epochs=4, progress=False, track_angles=True)
    _same_metrics(longer.runs["dtp"], reference)
    assert list(open_comparison(out).table["epochs"]) == [4, 4]


def test_errors(tmp_path, circuit):
    with pytest.raises(ConfigError, match="unknown name 'nope'"):
        compare(circuit, "bp,nope", out=tmp_path / "x.h5", progress=False)
    assert not (tmp_path / "x.h5").exists()  # refused before anything is trained or written
    with pytest.raises(BiotpError, match="distinct"):
        compare(circuit, "bp,bp", progress=False)
    out = tmp_path / "c.h5"
    compare(circuit, "bp", epochs=1, out=out, progress=False, track_angles=False)
    with pytest.raises(BiotpError, match=r"keeps the configuration it was made with .*seed: 0 -> 3"):
        compare(circuit.with_updates("seed=3"), "bp", epochs=1, out=out, progress=False)
    run = tmp_path / "run.h5"
    train(circuit, epochs=1, out=run, progress=False)
    with pytest.raises(BiotpError, match="not a comparison file"):
        compare(circuit, "bp", epochs=1, out=run, progress=False)
    with pytest.raises(BiotpError, match="expected 'compare'"):
        open_comparison(run)


def test_cli(tmp_path, capsys):
    out = tmp_path / "cmp.h5"
    code = main(["compare", "circuits/mlp.yaml", "--algorithms", "bp,fa", "--epochs", "1", "--quiet",
                 "--set", "data.limit=150", "--seed", "2", "--out", str(out)])
    assert code == 0
    shown = capsys.readouterr().out
    assert "| bp | 1 |" in shown and "| fa | 1 |" in shown and "angle layer1" in shown
    with h5py.File(out) as f:
        assert f.attrs["seed"] == 2 and "--algorithms bp,fa" in f.attrs["command"]
    assert main(["compare", "circuits/mlp.yaml", "--algorithms", "bp,xx", "--quiet", "--out", str(tmp_path / "y.h5")]) == 2
    assert "unknown name 'xx'" in capsys.readouterr().err
