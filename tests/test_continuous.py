"""Continuous-time training (`biotp simulate --epochs`): it learns, it is repeatable, a
resumed run ends where an uninterrupted one does, divergence is named; and its batches are
the fast path's, so the settled update of a batch is the fast path's DTP step."""

from pathlib import Path

import numpy as np
import pytest
import torch

from biotp.circuit import load_circuit
from biotp.cli import main
from biotp.continuous import train_continuous
from biotp.errors import DivergenceError
from biotp.runs import open_run

torch.set_num_threads(1)
MLP = Path(__file__).resolve().parents[1] / "circuits" / "mlp.yaml"
FAST = ["dynamics.forward_phase=4 ms", "dynamics.target_phase=4 ms", "dynamics.record={}", "data.batch_size=16",
        "dynamics.plasticity.eta=0.5"]


def circuit(*extra):
    return load_circuit(MLP, FAST + list(extra))


def test_one_epoch_lowers_the_loss_and_the_same_seed_gives_the_same_metrics():
    a = train_continuous(circuit(), epochs=1, progress=False)
    b = train_continuous(circuit(), epochs=1, progress=False)
    before = train_continuous(circuit("dynamics.plasticity.rule=none", "dynamics.feedback_plasticity.rule=fixed"),
                              epochs=1, progress=False)
    assert a["train_loss"][0] < before["train_loss"][0] - 0.2  # the untrained loss is ~2.4
    for k in ("train_loss", "test_error", "val_error", "forward_steps", "target_residual"):
        np.testing.assert_array_equal(a[k], b[k])
    assert {"epoch", "train_error", "seconds", "examples_per_s", "target_steps", "forward_residual"} <= set(a)


@pytest.mark.parametrize("reference", [False, True])
def test_a_resumed_run_equals_an_uninterrupted_one(interrupted, reference):
    """With --reference the fast path's own trajectory resumes from its checkpoint too."""
    c = circuit("dynamics.target={mode: gradient_step, beta: 0.5}", "dynamics.feedback_plasticity.rule=fixed")
    _, resumed = interrupted(train_continuous, c, 1, 2, reference=reference)
    assert ("reference_test_error" in resumed.metrics) == reference
    assert resumed.attrs["kind"] == "continuous" and int(resumed.checkpoint["epoch"]) == 2


def test_the_batches_are_the_fast_paths_augmentation_included(monkeypatch):
    from biotp.engines.torch import TorchEngine
    from biotp.training import Session

    c = circuit("data.augment.noise=0.2", "data.augment.flip=horizontal", "data.limit=64")
    seen, present = [], TorchEngine.present

    def recording(self, x, y, *args, **kwargs):
        seen.append((x.clone(), y.clone()))
        return present(self, x, y, *args, **kwargs)

    monkeypatch.setattr(TorchEngine, "present", recording)
    train_continuous(c, epochs=1, progress=False)
    fast = list(Session(c, device="cpu").batches(1))
    assert len(seen) == len(fast) > 1
    for (x, y), (xf, yf) in zip(seen, fast):
        assert torch.equal(y, yf) and torch.equal(x, xf.flatten(1).to(x.dtype))
    clean = list(Session(load_circuit(MLP, FAST + ["data.limit=64"]), device="cpu").batches(1))
    assert not torch.equal(seen[0][0], clean[0][0].flatten(1))  # augmented, not the plain batch

def test_divergence_names_the_population_or_projection_and_when():
    with pytest.raises(DivergenceError, match=r"diverged at epoch 1, batch \d+ .*: (layer\d\.(h|tgt|b) is|forward\.layer\d "
                                              r"weights) not finite"):
        train_continuous(circuit("dynamics.plasticity.eta=1e6"), epochs=1, progress=False)


def test_the_cli_trains_and_resumes(tmp_path, capsys):
    out = tmp_path / "c.h5"
    args = ["simulate", str(MLP), "--epochs", "1", "--out", str(out), "--quiet"] + sum((["--set", s] for s in FAST), [])
    assert main(args) == 0
    assert main(["simulate", "--resume", str(out), "--epochs", "2", "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "test_error" in text and str(out) in text
    assert list(open_run(out).metrics["epoch"]) == [1.0, 2.0]


def test_settled_training_follows_the_fast_paths_dtp_more_closely_as_it_settles():
    """Digits, two epochs, the same weights, seed and batches: the continuous `dtp` run and
    the fast path's `dtp` (its own SGD trajectory, η̂ = β, fixed feedback shared).  The
    angle between their updates shrinks as the phases approach settling; settled, the two
    runs agree to the update and to the test error."""
    angles, gaps = [], []
    for phase in ("3 ms", "10 ms", "30 ms"):
        c = circuit("dynamics.target={mode: gradient_step, beta: 0.5}", "dynamics.feedback_plasticity.rule=fixed",
                    f"dynamics.forward_phase={phase}", f"dynamics.target_phase={phase}", "dynamics.dtype=float64",
                    "data.batch_size=32")
        m = train_continuous(c, epochs=2, reference=True, progress=False)
        angles.append(max(m[f"angle_layer{l}"].max() for l in (1, 2, 3)))
        gaps.append(np.abs(m["test_error"] - m["reference_test_error"]).max())
    assert angles[0] > angles[1] > angles[2], angles
    assert angles[2] < 0.01 and gaps[2] < 0.003, (angles, gaps)


def test_the_gradient_relaxation_learns_as_the_fast_paths_gtp_to_first_order_in_eta():
    """Seed 000's net shape (relu, sigmoid, sigmoid; no biases; the label as the output's
    target; the quadratic cost) with the gradient relaxation, layer by layer, Euler with
    dt = τ τ_t, against the fast path's gtp (start at the activity, the same τ and T), on one
    batch from the same weights: the output's update is the same; below it the continuous
    targets read W_{l+1} as it learns (online), gtp the weights before its update, so the
    angle between the updates shrinks in proportion to η."""
    from biotp.dynamics.reference import Reference
    from biotp.simulation import build

    angles = {}
    for eta in (0.2, 0.02):
        c = load_circuit(MLP, [
            "network.layers=[{size: 32, activation: relu, bias: false}, {size: 32, activation: sigmoid, bias: false}, "
            "{size: 10, activation: sigmoid, bias: false}]", "loss=mse", "init={scheme: farias}",
            "dynamics={tau_f: 1 ms, tau_t: 1 ms, dt: 0.25 ms, forward_phase: 40 ms, target_phase: 5 ms, "
            f"relaxation: gradient, schedule: layerwise, target: {{mode: clamped}}, plasticity: {{rule: dtp, eta: {eta}}}, "
            "dtype: float64, record: {}}"])
        model, eng, _ = build(c, "torch", 64)
        ref = Reference(c, model, 64, eng.parameters())
        x, y = torch.rand(16, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(0)), torch.arange(16) % 10
        ref.expect(eng.parameters(), x, y)
        eng.present(x, y, record={})
        ref.compare(eng.parameters(), x, y)
        angles[eta] = [ref.pending[f"angle_layer{l}"][0] for l in (1, 2, 3)]
    assert angles[0.2][2] < 1e-4 and angles[0.02][2] < 1e-4, angles  # the output: the same update
    for l in (0, 1):
        assert angles[0.2][l] > 0.1 and 8 < angles[0.2][l] / angles[0.02][l] < 12, angles


def test_the_equivalence_table_reads_the_run_file(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("equivalence_table", MLP.parents[1] / "analysis" / "equivalence_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "equivalence_digits.h5"
    train_continuous(circuit("dynamics.target={mode: gradient_step, beta: 0.5}", "dynamics.feedback_plasticity.rule=fixed"),
                     epochs=1, reference=True, out=out, progress=False)
    m = open_run(out).metrics
    text = module.table(str(out))
    assert f"| 1 | {100 * m['test_error'][0]:.2f} | {100 * m['reference_test_error'][0]:.2f} |" in text
    assert f"{m['angle_layer1'][0]:.3f} / {m['angle_layer2'][0]:.3f} / {m['angle_layer3'][0]:.3f}" in text
