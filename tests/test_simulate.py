"""`biotp.simulate` and `biotp simulate`: streams, run files, summary, CLI."""

from pathlib import Path

import numpy as np
import pytest
import torch

import biotp
from biotp.circuit import load_circuit
from biotp.cli import main
from biotp.runs import open_run

torch.set_num_threads(1)
MLP = Path(__file__).resolve().parents[1] / "circuits" / "mlp.yaml"
SHORT = ["dynamics.forward_phase=4 ms", "dynamics.target_phase=4 ms", "dynamics.record_dt=0.4 ms"]


def test_python_api_returns_traces_and_writes_the_layout(tmp_path):
    out = tmp_path / "run.h5"
    run = biotp.simulate(MLP, examples=6, overrides=SHORT, out=out)
    n_times = 8 / 0.4 + 1
    assert run.times.shape == (n_times,) and run.times[-1] == pytest.approx(8e-3)
    h, t = run.traces["layer1"]["h"], run.traces["layer1"]["t"]
    assert h.shape == (n_times, 6, 64) and t.shape == h.shape
    assert np.array_equal(t[:10], h[:10])  # forward phase: t = h
    assert np.abs(t[-1] - h[-1]).max() > 1e-4  # target phase: t moved
    f = open_run(out)
    trace = f.traces["layer1"]["h"]
    np.testing.assert_array_equal(trace.data, h)
    np.testing.assert_allclose(trace.attrs["times"], run.times)
    assert trace.attrs["time_unit"] == "s" and trace.attrs["unit"] == "1"
    assert f.attrs["kind"] == "simulate" and f.attrs["backend"] == "torch" and "dynamics:" in f.attrs["circuit_yaml"]
    assert f.groups["settling"]["target_steps"].shape == (6,)
    assert f.circuit.dynamics.forward_phase == pytest.approx(4e-3)


def test_online_plasticity_lowers_the_error_on_the_stream():
    c = load_circuit(MLP)
    x = torch.rand(40, 64, generator=torch.Generator().manual_seed(0))
    y = torch.randint(0, 10, (40,), generator=torch.Generator().manual_seed(1))
    run = biotp.simulate(c, x=x, y=y, overrides=["dynamics.record={}"])
    assert run.summary["examples"] == 40
    assert run.summary["loss_after"] < run.summary["loss_before"] - 0.05
    static = biotp.simulate(c, x=x, y=y, overrides=["dynamics.record={}", "dynamics.plasticity.rule=none"])
    assert static.summary["loss_after"] == static.summary["loss_before"]


def test_duration_limits_the_stream_and_backends_write_the_same_file(tmp_path):
    kw = dict(overrides=SHORT + ["dynamics.dtype=float64"], duration="24 ms", examples=10)
    a = biotp.simulate(MLP, "torch", out=tmp_path / "a.h5", **kw)
    b = biotp.simulate(MLP, "brian2", out=tmp_path / "b.h5", **kw)
    assert a.summary["examples"] == b.summary["examples"] == 3
    fa, fb = open_run(tmp_path / "a.h5"), open_run(tmp_path / "b.h5")
    assert fa.groups.keys() == fb.groups.keys()
    for pop in fa.traces:
        for var in fa.traces[pop]:
            np.testing.assert_allclose(fa.traces[pop][var].data, fb.traces[pop][var].data, atol=1e-9)


def test_cli_prints_the_summary(tmp_path, capsys):
    out = tmp_path / "cli.h5"
    code = main(["simulate", str(MLP), "--examples", "4", "--out", str(out), "--quiet", "--seed", "3",
                 *[a for s in SHORT for a in ("--set", s)]])
    assert code == 0
    text = capsys.readouterr().out
    assert "4 examples" in text and "test error  before" in text and "examples/s" in text and "residual" in text
    f = open_run(out)
    assert f.attrs["seed"] == 3 and f.attrs["command"].startswith("biotp simulate")


def test_cli_reports_a_wrong_unit(capsys):
    assert main(["simulate", str(MLP), "--set", "dynamics.tau_f=2 mV", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "mlp.yaml: dynamics.tau_f" in err and "'2 mV'" in err and "expected a time" in err
