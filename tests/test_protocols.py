"""Protocols: every shipped protocol runs; interventions do what they say (against
independent computations); sweeps, resume and errors."""

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from biotp import protocols as P
from biotp.errors import ConfigError

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted((ROOT / "protocols").glob("*.yaml"))
MLP = str(ROOT / "circuits" / "mlp.yaml")


def tiny(path: Path) -> list[str]:
    """Overrides that shrink a shipped protocol to seconds."""
    p = P.load_protocol(path)
    if p.engine == "discrete":
        return ["epochs=1", "circuit.data.limit=200"]
    out = [f"phases.{i}.trials=2" for i in range(len(p.phases))] or ["stimuli.count=3"]
    return out + ["evaluate.count=50", "evaluate.every=1"]


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_each_shipped_protocol_runs_on_a_tiny_setting(path, tmp_path):
    protocol = P.load_protocol(path, tiny(path))
    if protocol.engine == "discrete":  # two rules are enough to exercise the sweep
        protocol = protocol.model_copy(update={"sweep": P.SweepSpec(grid={"circuit.algorithm.name": ["fa", "dtp"]})})
    run = P.run_protocol(protocol, out=tmp_path / "run.h5", progress=False)
    n_points = len(P.points(protocol))
    with h5py.File(tmp_path / "run.h5") as f:
        assert f.attrs["kind"] == "protocol"
        assert sorted(f["points"]) == [f"p{i:03d}" for i in range(n_points)]
        for key in f["points"]:
            m = f["points"][key]["metrics"]
            assert np.isfinite(m["test_error"][()]).all() and len(m["test_error"]) >= 1
    assert run.summary_text().count("error") >= n_points


# ------------------------------------------------------------------ helpers


def protocol(tmp_path, **fields) -> P.Protocol:
    data = {"name": "t", "circuit": MLP, "overrides": ["dynamics.dtype=float64"] + fields.pop("overrides", []),
            "stimuli": {"split": "train", "count": 2, "batch": 3, "order": "sequential"},
            "evaluate": {"count": 30}, **fields}
    return P.parse_protocol(data, str(tmp_path / "t.yaml"))


def point_run(p: P.Protocol) -> tuple[P.ContinuousRun, dict]:
    run = P.ContinuousRun(P.points(p)[0], None)
    return run, run.run(progress=False)


# ------------------------------------------------------------ interventions


def test_a_clamped_activity_stays_at_its_clamp_and_drives_the_layer_above(tmp_path):
    p = protocol(tmp_path, interventions=[{"kind": "clamp", "population": "layer2", "variable": "h", "value": 0.3}],
                 record={"populations": {"layer2": ["h", "t"], "layer3": ["h"]}, "trials": 2},
                 overrides=["dynamics.plasticity.rule=none"])
    run, tree = point_run(p)
    h2 = tree["traces"]["layer2"]["h"].data
    assert np.array_equal(h2, np.full_like(h2, 0.3))
    # layer 3 settles towards f_3(W_3 0.3 + b_3) (τ_f dh/dt = -h + f(a), 5 time constants)
    w = run.engine.parameters()
    exact = torch.full((1, 64), 0.3, dtype=torch.float64) @ w.W[3].T + w.b[3]  # layer 3 is linear
    end_forward = run.spec.steps(run.spec.forward_phase) // run.spec.record_every
    h3 = tree["traces"]["layer3"]["h"].data[end_forward]
    assert np.abs(h3 - exact.numpy()).max() < np.abs(exact.numpy()).max() * np.exp(-4)


def test_recorded_traces_carry_their_equations_units(tmp_path):
    """A rate h is dimensionless ('1'); the residual r = ‖dy/dt‖ is a rate (1/s)."""
    p = protocol(tmp_path, record={"populations": {"layer2": ["h", "r"]}, "trials": 1},
                 stimuli={"count": 1, "batch": 2, "order": "sequential"})
    _, tree = point_run(p)
    units = {var: leaf.attrs["unit"] for var, leaf in tree["traces"]["layer2"].items()}
    assert units == {"h": "1", "r": "1/s"}


def test_a_clamped_target_holds_and_its_step_gives_the_dtp1_change(tmp_path):
    """A relaxing target clamped to v stays at v; its weights change by the step's
    integral, the DTP1 change η ((v - h_1)/f'(h_1)) ⊗ x/(‖x‖² + 1) exactly (nothing else
    moves t_1)."""
    p = protocol(tmp_path, interventions=[{"kind": "clamp", "population": "layer1", "value": 0.2}],
                 record={"populations": {"layer1": ["h", "t"]}, "trials": 1},
                 stimuli={"count": 1, "batch": 4, "order": "sequential"},
                 overrides=["dynamics.plasticity={rule: dtp1, eta: 0.3}"])
    pt = P.points(p)[0]
    run = P.ContinuousRun(pt, None)
    before = run.engine.parameters()
    tree = run.run(progress=False)
    n_f = run.spec.steps(run.spec.forward_phase) // run.spec.record_every
    t1 = tree["traces"]["layer1"]["t"].data
    assert np.array_equal(t1[n_f:], np.full_like(t1[n_f:], 0.2))
    h1 = torch.from_numpy(tree["traces"]["layer1"]["h"].data[-1])
    x = run.x[:4]
    n0 = x / ((x * x).sum(1, keepdim=True) + 1)
    eta = run.spec.plasticity.eta
    delta = eta * (0.2 - h1) / (1 - h1**2)  # tanh: f' = 1 - h²
    after = run.engine.parameters()
    torch.testing.assert_close(after.W[1] - before.W[1], delta.T @ n0 / 4, atol=1e-12, rtol=1e-9)
    torch.testing.assert_close(after.b[1] - before.b[1], (delta / ((x * x).sum(1, keepdim=True) + 1)).mean(0),
                               atol=1e-12, rtol=1e-9)


def test_a_silenced_population_is_zero(tmp_path):
    p = protocol(tmp_path, interventions=[{"kind": "silence", "population": "layer1"}],
                 record={"populations": {"layer1": ["h", "t"]}, "trials": 2})
    _, tree = point_run(p)
    for var in ("h", "t"):
        assert not tree["traces"]["layer1"][var].data.any()


def test_a_lesioned_projection_carries_zero_and_is_restored_after(tmp_path):
    p = protocol(tmp_path, stimuli={"count": 4, "batch": 2, "order": "sequential"},
                 phases=[{"name": "lesion", "trials": 2}, {"name": "after", "trials": 2}],
                 interventions=[{"kind": "lesion", "projection": "forward.layer2", "phases": ["lesion"]}],
                 record={"populations": {"layer2": ["h"]}, "trials": [0, 1, 2, 3]})
    run = P.ContinuousRun(P.points(p)[0], None)
    before = run.engine.parameters()
    tree = run.run(progress=False)
    h2 = tree["traces"]["layer2"]["h"].data  # [time, trial*batch, neuron]
    # in the first lesioned trial h_2 settles towards f(b_2) whatever the input: the projection carries zero
    b2 = torch.tanh(before.b[2]).numpy()
    n_f = run.spec.steps(run.spec.forward_phase) // run.spec.record_every
    assert np.abs(h2[n_f - 1, :2] - b2).max() < np.abs(b2).max() * np.exp(-4) + 1e-12
    assert np.abs(h2[n_f - 1, 4:] - b2).max() > 0.05  # afterwards the input gets through again
    # the cut synapses kept their weights for when the lesion ended; layer 2 learnt again after
    assert not torch.equal(run.engine.parameters().W[2], before.W[2])


def test_a_partial_lesion_cuts_the_requested_fraction(tmp_path):
    p = protocol(tmp_path, interventions=[{"kind": "lesion", "projection": "feedback.layer3", "fraction": 0.3}])
    run = P.ContinuousRun(P.points(p)[0], None)
    (_, mask), = run.masks.values()
    assert abs(mask.double().mean().item() - 0.3) < 0.05
    before = run.engine.parameters()
    run.run(progress=False)  # the cut synapses do not learn; the others do (decoder rule)
    after = run.engine.parameters()
    assert torch.equal(after.V[3][mask], before.V[3][mask])
    assert not torch.equal(after.V[3][~mask], before.V[3][~mask])


def test_a_feedback_lesion_stops_learning_below_it(tmp_path):
    p = protocol(tmp_path, stimuli={"count": 6, "batch": 2, "order": "sequential"},
                 phases=[{"name": "before", "trials": 3}, {"name": "lesion", "trials": 3}],
                 interventions=[{"kind": "lesion", "projection": "feedback.layer3", "phases": ["lesion"]}],
                 evaluate={"every": 3, "count": 20})
    _, tree = point_run(p)
    m = tree["metrics"]  # rows: start, after 'before', after 'lesion'
    assert m["dW_layer1"][1] > 1e-3 and m["dW_layer2"][1] > 1e-3
    assert m["dW_layer1"][2] == 0 and m["dW_layer2"][2] == 0 and m["dW_layer3"][2] > 1e-3


def test_blocked_plasticity_changes_no_weight(tmp_path):
    p = protocol(tmp_path, interventions=[{"kind": "block_plasticity", "projections": ["forward.layer1", "feedback.layer3"]}])
    run = P.ContinuousRun(P.points(p)[0], None)
    before = run.engine.parameters()
    run.run(progress=False)
    after = run.engine.parameters()
    for part, l in (("W", 1), ("b", 1), ("V", 3), ("c", 3)):
        assert torch.equal(getattr(after, part)[l], getattr(before, part)[l]), (part, l)
    for part, l in (("W", 2), ("b", 2), ("V", 2), ("c", 2)):
        assert not torch.equal(getattr(after, part)[l], getattr(before, part)[l]), (part, l)


def test_blocked_plasticity_holds_the_weights_during_every_trial(tmp_path):
    """What restoring the weights after each trial would not give: while W_1 is blocked,
    layer 1's activity moves, at every recorded instant of every trial, exactly as in a circuit
    without plasticity (its input and W_1 never change), while layer 2, whose W_2 learns,
    departs from it."""
    record = {"populations": {"layer1": ["h"], "layer2": ["h"]}, "every": "0.2 ms", "trials": 2}
    blocked = protocol(tmp_path, interventions=[{"kind": "block_plasticity", "projections": ["forward.layer1"]}],
                       record=record)
    frozen = protocol(tmp_path, overrides=["dynamics.plasticity.rule=none"], record=record)
    (_, a), (_, b) = point_run(blocked), point_run(frozen)
    h1, h1_frozen = a["traces"]["layer1"]["h"].data, b["traces"]["layer1"]["h"].data
    assert h1.shape == h1_frozen.shape and h1.shape[0] > 2 * 50  # two trials of forward + target phase
    np.testing.assert_array_equal(h1, h1_frozen)
    h2, h2_frozen = a["traces"]["layer2"]["h"].data, b["traces"]["layer2"]["h"].data
    assert np.abs(h2 - h2_frozen).max() > 1e-6


def test_noise_has_the_requested_sigma(tmp_path):
    """Noise into layer 1's activity: with the input clamped, h_1 - f(a_1) is an Euler-
    Maruyama Ornstein-Uhlenbeck process whose stationary variance is σ²/(1 - dt/(2τ_f))."""
    sigma = 0.05
    p = protocol(tmp_path, overrides=["dynamics.forward_phase=200 ms", "dynamics.target_phase=0.2 ms",
                                      "dynamics.plasticity.rule=none"],
                 stimuli={"count": 1, "batch": 20, "order": "sequential"},
                 interventions=[{"kind": "noise", "population": "layer1", "variable": "h", "sigma": sigma,
                                 "during": "forward"}],
                 record={"populations": {"layer1": ["h"]}, "every": "0.2 ms", "trials": 1})
    run = P.ContinuousRun(P.points(p)[0], None)
    tree = run.run(progress=False)
    h = tree["traces"]["layer1"]["h"].data[:1000]  # the forward phase
    w = run.engine.parameters()
    fixed = torch.tanh(run.x[:20] @ w.W[1].T + w.b[1]).numpy()
    fluct = h[100:] - fixed  # after 10 τ_f of burn-in
    dt, tau = run.spec.dt, run.spec.tau_f
    expected = sigma / np.sqrt(1 - dt / (2 * tau))
    assert abs(fluct.std() / expected - 1) < 0.03
    assert abs(fluct.mean()) < 0.1 * sigma


def test_beta_change_scales_the_output_target_step(tmp_path):
    base = dict(record={"populations": {"layer3": ["h", "t"]}, "trials": 1},
                overrides=["dynamics.plasticity.rule=none", "dynamics.feedback_plasticity.rule=fixed"])
    steps = []
    for interventions in ([], [{"kind": "beta", "value": 1.5}]):
        _, tree = point_run(protocol(tmp_path, interventions=interventions, **base))
        tr = tree["traces"]["layer3"]
        steps.append(tr["t"].data[-1] - tr["h"].data[-1])  # t_L - h_L = -β ∂L/∂h_L
    assert np.abs(steps[0]).max() > 1e-3
    np.testing.assert_allclose(steps[1], steps[0] * 1.5 / 0.5, rtol=1e-10, atol=1e-14)


def test_inter_trial_blank_relaxes_from_the_last_state(tmp_path):
    p = protocol(tmp_path, stimuli={"count": 2, "batch": 2, "order": "sequential", "inter_trial": "4 ms"},
                 overrides=["dynamics.solver=euler", "dynamics.plasticity.rule=none"],
                 record={"populations": {"layer1": ["h"]}, "trials": 2})
    run = P.ContinuousRun(P.points(p)[0], None)
    tree = run.run(progress=False)
    h1 = tree["traces"]["layer1"]["h"].data
    end_first, start_second = torch.from_numpy(h1[-1, :2]), torch.from_numpy(h1[0, 2:])
    # independent: Euler steps of τ_f dh/dt = -h + f(b_1) (input off) from the first trial's state
    spec, w = run.spec, run.engine.parameters()
    v = end_first.clone()
    for _ in range(spec.steps(4e-3)):
        v = v + spec.dt / spec.tau_f * (-v + torch.tanh(w.b[1]))
    torch.testing.assert_close(start_second, v, atol=1e-12, rtol=0)
    assert (start_second - end_first).abs().max() > 1e-2


# -------------------------------------------------- reference, sweeps, resume


def test_settled_updates_match_the_discrete_rule(tmp_path):
    """With targets settled (long target phase) the continuous update is the fast path's
    DTP update from the same weights; a phase cut short gives a partial, still aligned update."""
    rows = {}
    for phase in ("40 ms", "1 ms"):
        p = protocol(tmp_path, reference="discrete", stimuli={"count": 4, "batch": 1},
                     overrides=[f"dynamics.target_phase={phase}", "dynamics.forward_phase=40 ms", "dynamics.solver=rk4",
                                "dynamics.record_dt=null", "dynamics.plasticity={rule: dtp, eta: 0.3}",
                                "dynamics.target={mode: gradient_step, beta: 0.5}",
                                "dynamics.feedback_plasticity={rule: fixed}"])
        _, tree = point_run(p)
        rows[phase] = tree["metrics"]
    for l in (1, 2, 3):
        assert rows["40 ms"][f"angle_layer{l}"][-1] < 0.01
        assert rows["40 ms"][f"distance_layer{l}"][-1] < 1e-3
    assert rows["1 ms"]["distance_layer1"][-1] > 0.1 and rows["1 ms"]["angle_layer1"][-1] < 60
    assert np.isnan(rows["40 ms"]["angle_layer1"][0])  # nothing compared before the first trial


def test_a_sweep_writes_one_group_per_point_and_resumes(tmp_path, monkeypatch):
    p = protocol(tmp_path, sweep={"grid": {"stimuli.target_phase": ["2 ms", "4 ms"], "circuit.dynamics.plasticity.eta": [0.1, 0.2]}})
    out = tmp_path / "sweep.h5"
    P.run_protocol(p, out=out, progress=False)
    with h5py.File(out) as f:
        groups = sorted(f["points"])
        params = [json.loads(f["points"][g].attrs["params"]) for g in groups]
        first = f["points/p001/metrics/test_error"][()]
    assert groups == ["p000", "p001", "p002", "p003"]
    assert params[1] == {"stimuli.target_phase": "2 ms", "circuit.dynamics.plasticity.eta": 0.2}
    # an interrupted run: drop the last two points, run again -- only they are computed, identically
    with h5py.File(out, "a") as f:
        del f["points/p002"], f["points/p003"]
    calls = []
    original = P.runner._run_point
    monkeypatch.setattr(P.runner, "_run_point", lambda pt, *a: calls.append(pt.key) or original(pt, *a))
    P.run_protocol(p, out=out, progress=False)
    assert calls == ["p002", "p003"]
    with h5py.File(out) as f:
        assert sorted(f["points"]) == groups
        np.testing.assert_array_equal(f["points/p001/metrics/test_error"][()], first)
    # another protocol into the same file is refused
    with pytest.raises(Exception, match="holds another protocol"):
        P.run_protocol(protocol(tmp_path, stimuli={"count": 1}), out=out, progress=False)


def test_brian2_engine_runs_lesions_and_blocks_like_torch(tmp_path):
    """The same protocol (a feedback lesion and a plasticity block) on both engines:
    float64 weights agree to rounding."""
    common = dict(stimuli={"count": 3, "batch": 1, "order": "sequential"},
                  overrides=["dynamics.solver=euler", "dynamics.forward_phase=4 ms", "dynamics.target_phase=4 ms",
                             "dynamics.record={}"],
                  phases=[{"name": "a", "trials": 1}, {"name": "b", "trials": 2}],
                  interventions=[{"kind": "lesion", "projection": "feedback.layer3", "fraction": 0.5, "phases": ["b"]},
                                 {"kind": "block_plasticity", "projections": ["forward.layer1"], "phases": ["a"]}])
    runs = {}
    for engine in ("torch", "brian2"):
        run = P.ContinuousRun(P.points(protocol(tmp_path, engine=engine, **common))[0], None)
        run.run(progress=False)
        runs[engine] = run.engine.parameters()
    for l in (1, 2, 3):
        torch.testing.assert_close(runs["brian2"].W[l], runs["torch"].W[l], atol=1e-9, rtol=0)
        torch.testing.assert_close(runs["brian2"].b[l], runs["torch"].b[l], atol=1e-9, rtol=0)
    torch.testing.assert_close(runs["brian2"].V[3], runs["torch"].V[3], atol=1e-9, rtol=0)


# ------------------------------------------------------------------- errors


@pytest.mark.parametrize("change, message", [
    ({"stimuli": {"count": 2, "colour": 1}}, r"stimuli\.colour: unknown key; expected one of: split, count"),
    ({"interventions": [{"kind": "zap", "population": "layer1"}]}, r"interventions\.0.*'zap'.*clamp"),
    ({"interventions": [{"kind": "noise", "population": "layer1", "sigma": -1}]}, r"interventions\.0\.sigma"),
    ({"interventions": [{"kind": "lesion", "projection": "feedback.layer2", "window": [1, 2]}]},
     r"interventions\.0\.window\.0.*time with its unit"),
    ({"phases": [{"name": "a", "trials": 2}], "interventions": [{"kind": "beta", "value": 1, "phases": ["b"]}]},
     r"interventions\.0\.phases: unknown phase 'b'"),
    ({"stimuli": {"count": 5}, "phases": [{"name": "a", "trials": 2}]}, r"stimuli\.count = 5 but the phases add up to 2"),
    ({"engine": "discrete", "reference": "discrete"}, r"engine discrete"),
    ({"engine": "discrete", "interventions": [{"kind": "beta", "value": 1}]}, r"engine discrete"),
])
def test_malformed_protocols_give_the_promised_errors(tmp_path, change, message):
    data = {"circuit": MLP, **change}
    with pytest.raises(ConfigError, match=message) as err:
        P.parse_protocol(data, "bad.yaml")
    assert str(err.value).startswith("bad.yaml: ")


def test_names_that_do_not_exist_in_the_circuit_are_errors(tmp_path):
    bad = protocol(tmp_path, interventions=[{"kind": "clamp", "population": "layer9", "value": 0}])
    with pytest.raises(ConfigError, match=r"t\.yaml: interventions\.0\.population: unknown population 'layer9'; "
                                          r"expected one of input, layer1, layer2, layer3"):
        P.ContinuousRun(P.points(bad)[0], None)
    bad = protocol(tmp_path, interventions=[{"kind": "lesion", "projection": "lateral.layer1"}])
    with pytest.raises(ConfigError, match=r"interventions\.0\.projection: unknown projection 'lateral\.layer1'"):
        P.ContinuousRun(P.points(bad)[0], None)


def test_a_missing_protocol_file_and_bad_sweep_key(tmp_path):
    with pytest.raises(ConfigError, match=r"nope\.yaml: cannot read protocol file"):
        P.load_protocol(tmp_path / "nope.yaml")
    p = protocol(tmp_path, sweep={"grid": {"stimuli.colour": [1, 2]}})
    with pytest.raises(ConfigError, match=r"stimuli\.colour: unknown key"):
        P.points(p)


def test_cli_run_writes_the_file_and_prints_the_summary(tmp_path, capsys):
    from biotp.cli import main

    out = tmp_path / "settle.h5"
    assert main(["run", str(ROOT / "protocols" / "settle.yaml"), "--out", str(out), "--quiet",
                 "--set", "circuit.dynamics.target_phase=2 ms"]) == 0
    text = capsys.readouterr().out
    assert "protocol settle (torch): 1 point(s)" in text and str(out) in text
    with h5py.File(out) as f:
        assert f["points/p000/residual/target"].shape[2] == 3
