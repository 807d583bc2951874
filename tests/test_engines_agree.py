"""The brian2 and torch engines run the same model: float64 trajectories, targets and
parameters agree to 1e-9, for every relaxation, rule, target mode and intervention; and
the model rejects what it cannot run with a ConfigError that names what exists.

brian2 presents a batch one example after another, torch side by side (plasticity by the
batch mean), so the torch engine is given the same examples one at a time, in order, and
its per-example results are stacked to compare with brian2's batch.  The networks are
tiny (8-5-5-4) and the phases short: brian2's numpy target costs ~2 s per example, most
of it in preparing each `Network.run`.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

pytest.importorskip("brian2")

from biotp.circuit import load_circuit, parse_circuit  # noqa: E402
from biotp.dynamics.model import build_model  # noqa: E402
from biotp.engines.base import Parameters, Perturbation, Presentation  # noqa: E402
from biotp.engines.brian2 import Brian2Engine  # noqa: E402
from biotp.engines.torch import TorchEngine  # noqa: E402
from biotp.errors import ConfigError  # noqa: E402
from biotp.network import Network  # noqa: E402

torch.set_num_threads(1)
D = torch.float64
TOL = 1e-9  # brian2 vs torch, float64
N_IN = 8
LABELS = torch.tensor([1, 3])
LAYERS = [{"size": 5, "activation": "tanh"}, {"size": 5, "activation": "sigmoid"}, {"size": 4, "activation": "linear"}]
RECORD = {"layer1": ["h", "t", "r"], "layer2": ["h", "t", "r"], "layer3": ["h", "t", "r"]}
DYNAMICS = {
    "dtype": "float64", "tau_f": "2 ms", "tau_t": "2 ms", "dt": "0.2 ms", "forward_phase": "4 ms",
    "target_phase": "4 ms", "relaxation": "difference", "target": {"mode": "nudged", "beta": 0.5},
    "plasticity": {"rule": "dtp1", "eta": 0.3, "gamma": "0 Hz"},
    "feedback_plasticity": {"rule": "decoder", "beta": 0.05},
    "record": RECORD,
}
ADAPTATION = ('dynamics.populations={layer1: {equations: "dA/dt = (h - A) / tau_a : 1\\nI_h = -g_a * A : 1", '
              "parameters: {tau_a: 5 ms, g_a: 0.5}}}")


# ------------------------------------------------------------------------ helpers


def circuit(*updates: str, loss: str = "cross_entropy"):
    """The test circuit (8-5-5-4, tanh/sigmoid/linear) with `key.path=value` updates."""
    data = {"network": {"layers": LAYERS}, "loss": loss, "dynamics": DYNAMICS}
    return parse_circuit(data, "<test>").with_updates(*updates)


def setup(c):
    """(model, initial parameters) of circuit c on N_IN inputs."""
    return build_model(c, N_IN), Parameters.from_network(Network(c, N_IN, with_feedback=True, seed=0))


def stimuli(n: int):
    return torch.rand(n, N_IN, dtype=D, generator=torch.Generator().manual_seed(1)), LABELS[:n]


def example(p: Perturbation | None, k: int) -> Perturbation | None:
    """Example k's share of a batch perturbation: its rows of the draws, clamps and h0."""
    if p is None:
        return None
    row = lambda v: v[k:k + 1] if torch.is_tensor(v) and v.dim() == 2 and v.shape[0] > 1 else v  # noqa: E731
    return dataclasses.replace(p, xi={key: v[k:k + 1] for key, v in p.xi.items()},
                               clamp={key: row(v) for key, v in p.clamp.items()},
                               h0=None if p.h0 is None else {pop: row(v) for pop, v in p.h0.items()})


def stack(runs: list[Presentation]) -> Presentation:
    """Presentations of one example each, as one batch (the Phase: the worst example)."""
    cat = lambda xs: torch.cat(xs, dim=0)  # noqa: E731

    def phase(phases):
        residual = {l: max(ph.residual[l] for ph in phases) for l in phases[0].residual}
        return dataclasses.replace(phases[0], steps=max(ph.steps for ph in phases), residual=residual)

    return Presentation([cat([r.h[l] for r in runs]) for l in range(len(runs[0].h))],
                        [cat([r.t[l] for r in runs]) for l in range(len(runs[0].t))],
                        phase([r.forward for r in runs]), phase([r.target for r in runs]),
                        {key: torch.cat([r.traces[key] for r in runs], dim=1) for key in runs[0].traces})


@dataclasses.dataclass
class Both:
    model: object
    initial: Parameters
    torch: Presentation  # the per-example torch presentations, stacked
    brian2: Presentation
    p_torch: Parameters  # parameters after the presentations
    p_brian2: Parameters


def run_both(c, n: int = 2, perturbation: Perturbation | None = None, record=None) -> Both:
    """n examples through both engines from the same initial parameters; noise drawn once."""
    model, params = setup(c)
    x, y = stimuli(n)
    if perturbation is not None and perturbation.noise:
        perturbation = perturbation.draw(model, n, torch.Generator().manual_seed(2))
    te = TorchEngine(model, params)
    pt = stack([te.present(x[k:k + 1], y[k:k + 1], record, example(perturbation, k)) for k in range(n)])
    be = Brian2Engine(model, params, codegen="numpy")
    pb = be.present(x, y, record, perturbation)
    return Both(model, params, pt, pb, te.parameters(), be.parameters())


def run_torch(c, n: int = 2, perturbation: Perturbation | None = None, batched: bool = False):
    """(presentation, parameters after) of the torch engine only (one at a time unless batched)."""
    model, params = setup(c)
    x, y = stimuli(n)
    te = TorchEngine(model, params)
    if batched:
        return te.present(x, y, None, perturbation), te.parameters()
    runs = [te.present(x[k:k + 1], y[k:k + 1], None, example(perturbation, k)) for k in range(n)]
    return stack(runs), te.parameters()


def worst(a: dict, b: dict, what: str) -> float:
    """max |a - b| over matching tensors (same keys and shapes asserted)."""
    assert a.keys() == b.keys(), what
    err = 0.0
    for key in a:
        assert a[key].shape == b[key].shape, (what, key, a[key].shape, b[key].shape)
        err = max(err, float((a[key] - b[key]).abs().max()) if a[key].numel() else 0.0)
    return err


def assert_agree(both: Both, tol: float = TOL) -> dict:
    """Traces, final activities and targets, phases and parameters agree; the errors."""
    pt, pb = both.torch, both.brian2
    errors = {"traces": worst(pt.traces, pb.traces, "traces"),
              "h, t": max(worst(dict(enumerate(pt.h)), dict(enumerate(pb.h)), "h"),
                          worst(dict(enumerate(pt.t)), dict(enumerate(pb.t)), "t"))}
    for part in "WbVc":
        errors[part] = worst(getattr(both.p_torch, part), getattr(both.p_brian2, part), part)
    for name in ("forward", "target"):
        a, b = getattr(pt, name), getattr(pb, name)
        assert a.steps == b.steps, (name, a.steps, b.steps)
        assert a.residual.keys() == b.residual.keys()
        errors[f"{name} residual (rel)"] = max((abs(a.residual[l] - b.residual[l]) / max(1.0, abs(b.residual[l]))
                                                for l in a.residual), default=0.0)
    assert pt.traces, "nothing recorded"
    for key, err in errors.items():
        assert err <= tol, f"{key}: |torch - brian2| = {err:.3g} > {tol:g}"
    print("\n  |torch - brian2| max: " + ", ".join(f"{k} {v:.1e}" for k, v in errors.items()))
    return errors


def changed(before: dict, after: dict) -> dict:
    """Layer -> max |after - before|."""
    return {l: float((after[l] - before[l]).abs().max()) for l in before}


def phase_rows(c, phase: str) -> slice:
    """The rows of a trace (sampled every step, final state last) that belong to a phase."""
    spec = c.dynamics
    n_f = spec.steps(spec.forward_phase)
    return slice(0, n_f) if phase == "forward" else slice(n_f, None)


# ------------------------------------------------- 1. relaxations, rules, targets

CASES = {
    # relaxation, rule, top target, loss, feedback rule, schedule, activations
    "gradient-dtp-gradient_step-ce-decoder": (
        ["dynamics.relaxation=gradient", "dynamics.plasticity.rule=dtp", "dynamics.target.mode=gradient_step"],
        "cross_entropy"),
    "difference-dtp1-nudged-mse-decoder-layerwise": (
        ["dynamics.relaxation=difference", "dynamics.schedule=layerwise"], "mse"),
    "inverse_output-dtp-clamped-mse-fixed-relu": (
        ["dynamics.relaxation=inverse_output", "dynamics.plasticity.rule=dtp", "dynamics.target.mode=clamped",
         "dynamics.feedback_plasticity.rule=fixed",
         "network.layers=[{size: 5, activation: relu}, {size: 5, activation: tanh}, {size: 4, activation: sigmoid}]"],
        "mse"),
    "potential-difference-dtp1-nudged-ce-decoder": (
        ["dynamics.form=potential", "dynamics.record={layer1: [h, t, r, rate], layer2: [h, t, r], layer3: [h, t, r]}"],
        "cross_entropy"),
    "potential-difference-dtp-nudged-mse-decoder-tanh-feedback": (
        ["dynamics.form=potential", "dynamics.plasticity.rule=dtp", "feedback.activation=tanh"], "mse"),
    "inverse_input-dtp1-nudged-ce-decoder": (
        ["dynamics.relaxation=inverse_input",
         "dynamics.record={layer1: [h, t, r], layer2: [h, t, u, r], layer3: [h, t, u, r]}"], "cross_entropy"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_relaxations_and_rules_agree(case):
    updates, loss = CASES[case]
    c = circuit(*updates, loss=loss)
    both = run_both(c)
    assert_agree(both)
    model, pt = both.model, both.torch
    # the case is not trivial: targets relax, the forward weights learn, the decoders too
    target = phase_rows(c, "target")
    for l in model.relaxing:
        var = "u" if model.moving(l) == "u" else "t"
        pop = f"layer{l + 1}" if var == "u" else f"layer{l}"
        trace = pt.traces[(pop, var)][target]
        assert float((trace[-1] - trace[0]).abs().max()) > 1e-4, (l, var)
    assert min(changed(both.initial.W, both.p_brian2.W).values()) > 1e-5
    assert min(changed(both.initial.b, both.p_brian2.b).values()) > 1e-5
    fb = changed(both.initial.V, both.p_brian2.V)
    if c.dynamics.feedback_plasticity.rule == "decoder":
        assert min(fb.values()) > 1e-6
    else:
        assert max(fb.values()) == 0.0


@pytest.mark.parametrize("case", ["difference-dtp1-nudged-mse-decoder-layerwise", "gradient-dtp-gradient_step-ce-decoder",
                                  "inverse_input-dtp1-nudged-ce-decoder", "potential-difference-dtp1-nudged-ce-decoder",
                                  "adaptation"])
def test_exponential_euler_agrees_with_large_steps(case):
    """Exponential Euler at dt = τ/2 (torch: sympy's derivative of each rate; brian2: its own
    conditionally linear split, run through exprel), plasticity and the decoders included."""
    updates, loss = CASES.get(case, ([ADAPTATION], "cross_entropy"))
    c = circuit(*updates, "dynamics.solver=exponential_euler", "dynamics.dt=1 ms", loss=loss)
    both = run_both(c)
    assert_agree(both)
    assert min(changed(both.initial.W, both.p_brian2.W).values()) > 1e-5


# ------------------------------------------------------------ 2. a user's equation


def test_user_adaptation_equation_agrees_and_changes_the_trajectory():
    record = "dynamics.record={layer1: [h, t, r, A], layer2: [h, t, r], layer3: [h, t, r]}"
    c = circuit(ADAPTATION, record)
    assert "dA/dt = (h - A) / tau_a : 1" in build_model(c, N_IN).populations["layer1"].equations
    both = run_both(c)
    assert_agree(both)
    A = both.torch.traces[("layer1", "A")]
    assert float(A.abs().max()) > 1e-2  # the adaptation variable follows h
    plain, _ = run_torch(circuit())
    h_with, h_without = both.brian2.traces[("layer1", "h")], plain.traces[("layer1", "h")]
    assert float((h_with - h_without).abs().max()) > 1e-3


# ------------------------------------------------------- 3. steady stop, weight decay


def test_steady_stop_with_weight_decay_agrees():
    c = circuit("dynamics.stop=steady", "dynamics.plasticity.gamma=5 Hz", "dynamics.forward_phase=20 ms",
                "dynamics.target_phase=20 ms", "dynamics.atol=1.0", "dynamics.rtol=0.01")
    spec = c.dynamics
    assert spec.plasticity.gamma == 5.0
    both = run_both(c)
    assert_agree(both)
    for engine in (both.torch, both.brian2):  # the stop triggered before the phases' ends
        assert 0 < engine.forward.steps < spec.steps(spec.forward_phase)
        assert 0 < engine.target.steps < spec.steps(spec.target_phase)
    # and the traces still cover the whole phases (the last sample held)
    n = spec.steps(spec.forward_phase) + spec.steps(spec.target_phase) + 1
    assert both.brian2.traces[("layer1", "h")].shape[0] == n
    # the decay did act: without it the weights end elsewhere
    _, no_decay = run_torch(c.with_updates("dynamics.plasticity.gamma=0 Hz"))
    assert min(changed(no_decay.W, both.p_brian2.W).values()) > 1e-3


# ------------------------------------------------------------- 4. interventions

HALF = torch.rand(5, 5, generator=torch.Generator().manual_seed(3)) < 0.5


def _clamp_h(c, both):
    h = both.brian2.traces[("layer1", "h")][phase_rows(c, "forward")]
    assert torch.all(h == 0.3)


def _clamp_t(c, both):
    t = both.brian2.traces[("layer1", "t")][phase_rows(c, "target")]
    assert torch.all(t == 0.2)
    assert float((both.torch.traces[("layer2", "t")][-1] - both.torch.traces[("layer2", "h")][-1]).abs().max()) > 1e-4


def _silence(c, both):
    assert torch.all(both.brian2.traces[("layer1", "h")] == 0)
    assert torch.all(both.brian2.traces[("layer1", "t")][phase_rows(c, "target")] == 0)


def _lesion(c, both):
    for p in (both.p_torch, both.p_brian2):
        moved = (p.W[2] - both.initial.W[2]).abs()
        assert float(moved[HALF].max()) == 0.0  # cut synapses do not learn
        assert float(moved[~HALF].max()) > 1e-5


def _blocked(c, both):
    for p in (both.p_torch, both.p_brian2):
        assert torch.equal(p.W[1], both.initial.W[1]) and torch.equal(p.b[1], both.initial.b[1])
        for l in (2, 3):
            assert float((p.W[l] - both.initial.W[l]).abs().max()) > 1e-5
            assert float((p.b[l] - both.initial.b[l]).abs().max()) > 1e-5


def _beta(c, both):
    default, _ = run_torch(c)  # the circuit's β = 0.1
    assert float((both.brian2.traces[("layer3", "t")][-1] - default.traces[("layer3", "t")][-1]).abs().max()) > 1e-3


def _noise(c, both):
    quiet, _ = run_torch(c)
    for var in ("h", "t"):
        assert float((both.brian2.traces[("layer1", var)] - quiet.traces[("layer1", var)]).abs().max()) > 1e-3
    # the two examples saw different draws
    kick = both.brian2.traces[("layer1", "h")] - quiet.traces[("layer1", "h")]
    assert not torch.allclose(kick[:, 0], kick[:, 1])


ZERO, LEVEL = torch.tensor(0.0, dtype=D), torch.tensor(0.3, dtype=D)
INTERVENTIONS = {
    # name: (perturbation, circuit updates, examples, check)
    "clamp_h_forward": (Perturbation(clamp={("forward", "h", "layer1"): LEVEL}), [], 1, _clamp_h),
    "clamp_t_relaxing": (Perturbation(clamp={("target", "t", "layer1"): torch.tensor(0.2, dtype=D)}), [], 1, _clamp_t),
    "silence": (Perturbation(clamp={("forward", "h", "layer1"): ZERO, ("target", "h", "layer1"): ZERO,
                                    ("target", "t", "layer1"): ZERO}), [], 1, _silence),
    "lesion_gradient": (Perturbation(lesion={"forward.layer2": HALF}), ["dynamics.relaxation=gradient"], 1, _lesion),
    "blocked_forward_layer1": (Perturbation(blocked=frozenset({"forward.layer1"})), [], 1, _blocked),
    "beta": (Perturbation(beta=0.5), ["dynamics.target.beta=0.1"], 1, _beta),
    "noise_h_and_t": (Perturbation(noise={("forward", "h", "layer1"): 0.05, ("target", "t", "layer1"): 0.05}), [], 2,
                      _noise),
}


@pytest.mark.parametrize("name", list(INTERVENTIONS))
def test_interventions_agree(name):
    perturbation, updates, n, check = INTERVENTIONS[name]
    c = circuit(*updates)
    both = run_both(c, n, perturbation)
    assert_agree(both)
    check(c, both)


# ----------------------------------------------- 5. blocked = no plasticity at all


def test_all_projections_blocked_is_a_plasticity_off_trial():
    c = circuit()  # dtp1 and the decoder rule
    model, initial = setup(c)
    everything = frozenset(name for name, p in model.projections.items() if p.kind != "pool")
    assert {"forward.layer1", "feedback.layer2"} <= everything
    blocked, p_blocked = run_torch(c, perturbation=Perturbation(blocked=everything), batched=True)
    off, p_off = run_torch(circuit("dynamics.plasticity.rule=none", "dynamics.feedback_plasticity.rule=fixed"),
                           batched=True)
    assert worst(blocked.traces, off.traces, "traces") <= 1e-12
    assert worst(dict(enumerate(blocked.t)), dict(enumerate(off.t)), "t") <= 1e-12
    for part in "WbVc":
        for p in (p_blocked, p_off):
            before, after = getattr(initial, part), getattr(p, part)
            assert all(torch.equal(after[l], before[l]) for l in before), part
    # and unblocked, the same trial does learn
    _, p_free = run_torch(c, batched=True)
    assert max(changed(initial.W, p_free.W).values()) > 1e-5


# ------------------------------------------------- 6. brian2's unit check


def test_unit_check_rejects_a_dimensionally_wrong_equation():
    c = circuit('dynamics.populations={layer1: {equations: "dA/dt = h - A : 1"}}')
    with pytest.raises(ConfigError) as err:
        build_model(c, N_IN)
    message = str(err.value)
    assert "layer1" in message and "dA/dt = h - A" in message, message


# ------------------------------------------------- 7. misnamed things


@pytest.mark.parametrize("update, words", [
    ("dynamics.record={layer9: [h]}", ["layer9", "input, layer1, layer2, layer3"]),
    ("dynamics.record={layer1: [zz]}", ["'zz'", "layer1", "h", "tgt"]),
    ('dynamics.populations={layer7: {equations: "dA/dt = (h - A) / tau_a : 1", parameters: {tau_a: 5 ms}}}',
     ["layer7", "input, layer1, layer2, layer3"]),
])
def test_misnamed_circuit_entries_are_config_errors(update, words):
    with pytest.raises(ConfigError) as err:
        build_model(circuit(update), N_IN)
    for word in words:
        assert word in str(err.value), (word, str(err.value))


@pytest.mark.parametrize("engine", [TorchEngine, Brian2Engine])
@pytest.mark.parametrize("perturbation, words", [
    (Perturbation(clamp={("forward", "h", "layer9"): ZERO}), ["layer9", "input, layer1, layer2, layer3"]),
    (Perturbation(noise={("target", "t", "layer9"): 0.1}), ["layer9", "layer3"]),
    (Perturbation(lesion={"forward.layer9": HALF}), ["forward.layer9", "forward.layer1", "feedback.layer3"]),
    (Perturbation(blocked=frozenset({"forward.layer9"})), ["forward.layer9", "forward.layer1", "feedback.layer2"]),
], ids=["clamp", "noise", "lesion", "blocked"])
def test_misnamed_perturbation_is_a_config_error(engine, perturbation, words):
    model, params = setup(circuit())
    x, y = stimuli(1)
    with pytest.raises(ConfigError) as err:
        engine(model, params).present(x, y, perturbation=perturbation)
    for word in words:
        assert word in str(err.value), (word, str(err.value))


def test_non_dense_circuit_is_a_config_error():
    with pytest.raises(ConfigError) as err:
        build_model(load_circuit("circuits/tjml_lenet_mnist.yaml"), 784)
    message = str(err.value)
    assert "layer 1" in message and "conv" in message and "dense" in message, message


def test_a_fifth_relaxation_is_one_registry_entry(monkeypatch):
    """Registering a relaxation in `equations.RELAXATIONS` is all it takes: here a damped
    difference rule, τ_t dt_l/dt = -t_l + h_l + κ (g(t_{l+1}) - g(h_{l+1})), κ = 0.5, runs on
    both engines alike and settles to its own fixed point, computed independently."""
    from biotp.dynamics import equations as E

    def damped(F_up, G):
        r = E.difference(F_up, G)
        rhs = f"-tgt + h + 0.5 * ({E.act(G, 'vt + c')} - {E.act(G, 'vh + c')})"
        return E.Relaxation(E.relaxing_target(rhs) + ("c : 1",), r.up_lines, r.couplings)

    monkeypatch.setitem(E.RELAXATIONS, "damped", damped)
    c = parse_circuit({"network": {"layers": [{"size": 5, "activation": "tanh"}, {"size": 3, "activation": "linear"}]},
                       "loss": "mse", "dynamics": {"relaxation": "damped", "tau_t": "1 ms", "dt": "0.1 ms",
                                                   "forward_phase": "3 ms", "target_phase": "15 ms",
                                                   "record": {"layer1": ["t"]}}}, "<test>")
    net = Network(c, 4, with_feedback=True, seed=1)
    model = build_model(c, 4)
    params = Parameters.from_network(net)
    x, y = torch.rand(1, 4, dtype=torch.float64), torch.tensor([1])
    pt = TorchEngine(model, params).present(x, y)
    pb = Brian2Engine(model, params).present(x, y)
    torch.testing.assert_close(pt.traces[("layer1", "t")], pb.traces[("layer1", "t")], atol=1e-9, rtol=0)
    g = lambda v: torch.tanh(v @ params.V[2].T + params.c[2])  # noqa: E731
    t2 = pt.h[2] - 0.1 * 2 * (pt.h[2] - torch.nn.functional.one_hot(y, 3).double())
    fixed = pt.h[1] + 0.5 * (g(t2) - g(pt.h[2]))
    torch.testing.assert_close(pt.t[1], fixed, atol=1e-5, rtol=0)  # 15 time constants: e^-15
