"""The torch engine against exact and independent computations (DESIGN.md catalogue 2-5):
exact decay, convergence orders (uncoupled and coupled), GTP's Euler targets, DTP's settled
targets, Bengio's iterations, and the plasticity rules against the fast path's updates."""

import math

import pytest
import torch
from torch.nn import functional as F

from biotp.algorithms import build
from biotp.circuit import parse_circuit
from biotp.dynamics.model import build_model
from biotp.engines.base import Parameters, Perturbation
from biotp.engines.torch import TorchEngine
from biotp.network import Network

torch.set_num_threads(1)
D = torch.float64


def circuit(layers, dynamics=None, algorithm=None, loss="mse"):
    data = {"network": {"layers": layers}, "loss": loss, "dynamics": {"dtype": "float64", **(dynamics or {})}}
    if algorithm:
        data["algorithm"] = algorithm
    return parse_circuit(data, "<test>")


def engine(c, n_in, net=None, seed=0, params=None):
    net = net or Network(c, n_in, with_feedback=True, seed=seed)
    return TorchEngine(build_model(c, n_in), params or Parameters.from_network(net, D)), net.double()


def from_fixed_point(eng, net, x, y, record=None):
    """A presentation whose forward phase starts at the exact forward pass (the fast path's
    network), so it holds there; returns (presentation, the exact activities)."""
    h = [v.detach() for v in net(x)]
    h0 = {f"layer{l}": h[l] for l in range(1, len(h))}
    return eng.present(x, y, record, Perturbation(h0=h0)), h


# ------------------------------------------------------------ exact decay, order


def decay(solver, dt, tau=2e-3, T=10e-3):
    """h(T) of a linear leaky population τ dh/dt = -h (W = 0, b = 0) from h(0) = 1."""
    c = circuit([{"size": 3, "activation": "linear"}],
                {"tau_f": f"{tau} s", "dt": f"{dt} s", "forward_phase": f"{T} s", "target_phase": f"{dt} s",
                 "solver": solver})
    params = Parameters({1: torch.zeros(3, 2, dtype=D)}, {1: torch.zeros(3, dtype=D)})
    eng, _ = engine(c, 2, params=params)
    p = eng.present(torch.zeros(1, 2, dtype=D), torch.tensor([0]),
                    perturbation=Perturbation(h0={"layer1": torch.ones(1, 3, dtype=D)}))
    return p.h[1][0, 0].item()


def test_linear_population_decays_as_exp():
    tau, T = 2e-3, 10e-3
    exact = math.exp(-T / tau)
    # Euler and RK4 reproduce their stability polynomials exactly ...
    z = -1e-4 / tau
    assert decay("euler", 1e-4) == pytest.approx((1 + z) ** 100, rel=1e-12)
    assert decay("rk4", 1e-4) == pytest.approx((1 + z + z**2 / 2 + z**3 / 6 + z**4 / 24) ** 100, rel=1e-12)
    # ... which converge to exp(-t/τ)
    assert decay("rk4", 1e-5) == pytest.approx(exact, rel=1e-9)


@pytest.mark.parametrize("dt", [1e-4, 1e-3, 5e-3])
def test_exponential_euler_is_exact_for_the_leak_at_any_step(dt):
    assert decay("exponential_euler", dt) == pytest.approx(math.exp(-10e-3 / 2e-3), rel=1e-12)


def test_exponential_euler_follows_a_settling_layer_exactly():
    """τ_f dh/dt = -h + tanh(W x + b) from rest, the input clamped: h(t) = f(1 - e^{-t/τ_f})
    at every step of 2 τ_f (the trace), and exactly f at the end of the phase."""
    c = circuit([{"size": 4, "activation": "tanh"}],
                {"tau_f": "1 ms", "dt": "2 ms", "forward_phase": "20 ms", "target_phase": "2 ms",
                 "solver": "exponential_euler", "record": {"layer1": ["h"]}})
    eng, net = engine(c, 3)
    x = torch.rand(2, 3, dtype=D)
    p = eng.present(x, torch.tensor([0, 1]))
    f = torch.tanh(x @ net.layers[0].weight.T + net.layers[0].bias)
    t = torch.arange(10, dtype=D) * 2e-3
    exact = f[None] * (1 - torch.exp(-t / 1e-3))[:, None, None]
    torch.testing.assert_close(p.traces[("layer1", "h")][:10], exact, atol=1e-15, rtol=1e-12)


@pytest.mark.parametrize("solver, order", [("euler", 1), ("rk4", 4)])
def test_convergence_order(solver, order):
    exact = math.exp(-5.0)
    errors = [abs(decay(solver, dt) - exact) for dt in (4e-4, 2e-4, 1e-4)]
    orders = [math.log2(errors[i] / errors[i + 1]) for i in range(2)]
    assert all(abs(o - order) < 0.15 for o in orders), orders


@pytest.mark.parametrize("solver, order", [("euler", 1), ("exponential_euler", 1), ("rk4", 4)])
def test_convergence_order_of_the_coupled_dynamics(solver, order):
    """The whole network -- forward settling through three coupled layers, then the
    difference relaxation coupling every target to the one above -- converges at the
    solver's order as dt halves (reference: RK4 with a 16x smaller step)."""
    layers = [{"size": 5, "activation": "tanh", "repeat": 2}, {"size": 3, "activation": "sigmoid"}]
    base = {"tau_f": "1 ms", "tau_t": "1 ms", "forward_phase": "2 ms", "target_phase": "2 ms",
            "relaxation": "difference", "target": {"mode": "nudged", "beta": 0.5}}
    x, y = torch.rand(2, 4, dtype=D, generator=torch.Generator().manual_seed(1)), torch.tensor([0, 2])

    def final(dt, s):
        c = circuit(layers, {**base, "dt": f"{dt} ms", "solver": s})
        eng, _ = engine(c, 4, seed=3)
        p = eng.present(x, y)
        return torch.cat([p.h[3], p.t[1], p.t[2]], 1)

    ref = final(0.0125, "rk4")
    errors = [(final(dt, solver) - ref).abs().max().item() for dt in (0.2, 0.1, 0.05)]
    orders = [math.log2(errors[i] / errors[i + 1]) for i in range(2)]
    assert all(abs(o - order) < 0.3 for o in orders), (errors, orders)


def test_forward_phase_settles_to_the_forward_pass_and_stops_early():
    c = circuit([{"size": 6, "activation": "tanh"}, {"size": 4, "activation": "sigmoid"}],
                {"tau_f": "1 ms", "dt": "0.1 ms", "forward_phase": "200 ms", "solver": "rk4", "stop": "steady",
                 "atol": 1e-9, "rtol": 1e-12})
    eng, net = engine(c, 5)
    x = torch.rand(3, 5, dtype=D)
    p = eng.present(x, torch.tensor([0, 1, 2]))
    assert p.forward.steps < 2000
    assert all(r <= 1e-9 for r in p.forward.residual.values())
    exact = net(x)
    for l in (1, 2):  # ‖h - f(h)‖ = τ ‖dh/dt‖ ≤ 1e-12 per layer
        torch.testing.assert_close(p.h[l], exact[l], atol=1e-11, rtol=0)


# --------------------------------------------------------------- target rules


def test_gradient_relaxation_is_gtp_euler():
    """Euler with step dt = τ τ_t, T steps per layer, layer by layer from the top, equals
    seed 000 App. B eq. 32: y_l <- y_l - τ ∂C_{l+1}/∂y_l, C_{l+1} = ½‖ŷ_{l+1} - f_{l+1}(y_l)‖²."""
    tau, T = 0.3, 7
    layers = [{"size": 6, "activation": "tanh"}, {"size": 5, "activation": "sigmoid"}, {"size": 4, "activation": "linear"}]
    c = circuit(layers, {"tau_t": "1 ms", "dt": f"{tau} ms", "forward_phase": f"{3 * tau} ms",
                         "target_phase": f"{2 * T * tau} ms", "relaxation": "gradient", "schedule": "layerwise",
                         "target": {"mode": "clamped"}})
    eng, net = engine(c, 5)
    x, y = torch.rand(3, 5, dtype=D), torch.tensor([0, 3, 1])
    p, h = from_fixed_point(eng, net, x, y)
    target = {3: F.one_hot(y, 4).to(D)}  # independent: autograd on the layer costs
    for l in (2, 1):
        t = h[l].clone()
        for _ in range(T):
            t = t.detach().requires_grad_()
            cost = 0.5 * ((target[l + 1] - net.layers[l](t)) ** 2).sum()
            (grad,) = torch.autograd.grad(cost, t)
            t = t - tau * grad
        target[l] = t.detach()
    for l in (1, 2):
        torch.testing.assert_close(p.t[l], target[l], atol=1e-12, rtol=0)


def test_gradient_relaxation_equals_gtp_module():
    tau, T = 0.3, 4
    layers = [{"size": 6, "activation": "relu"}, {"size": 5, "activation": "sigmoid"}, {"size": 4, "activation": "sigmoid"}]
    c = circuit(layers, {"tau_t": "1 ms", "dt": f"{tau} ms", "forward_phase": f"{3 * tau} ms",
                         "target_phase": f"{2 * T * tau} ms", "relaxation": "gradient", "schedule": "layerwise",
                         "target": {"mode": "clamped"}},
                algorithm={"name": "gtp", "tau": tau, "steps": T, "start": "activity"})
    rule = build(c, 5, 4).double()
    eng, net = engine(c, 5, net=rule.net)
    x, y = torch.rand(3, 5, dtype=D), torch.tensor([0, 3, 1])
    p, _ = from_fixed_point(eng, net, x, y)
    expected = rule.targets(rule.net(x), y)
    for l in (1, 2):
        torch.testing.assert_close(p.t[l], expected[l], atol=1e-12, rtol=0)


def dtp_circuit(rule="none", eta=0.1, **extra):
    layers = [{"size": 7, "activation": "tanh", "repeat": 3}, {"size": 4, "activation": "linear"}]
    dyn = {"tau_t": "1 ms", "dt": "0.2 ms", "forward_phase": "0.4 ms", "target_phase": "100 ms",
           "relaxation": "difference", "solver": "rk4", "stop": "steady", "atol": 1e-11, "rtol": 1e-13,
           "target": {"mode": "gradient_step", "beta": 0.3}, "plasticity": {"rule": rule, "eta": eta}, **extra}
    return circuit(layers, dyn, algorithm={"name": "dtp", "eta_hat": 0.3}, loss="cross_entropy")


def test_settled_difference_relaxation_is_dtp():
    """The fixed point of τ_t dt_l/dt = -t_l + h_l + g(t_{l+1}) - g(h_{l+1}) with the
    penultimate target h_{L-1} - η̂ ∂L/∂h_{L-1} is DTP's target (seed 002 eq. 3.15)."""
    c = dtp_circuit()
    rule = build(c, 5, 4).double()
    eng, net = engine(c, 5, net=rule.net)
    x, y = torch.rand(6, 5, dtype=D), torch.randint(0, 4, (6,))
    p, _ = from_fixed_point(eng, net, x, y)
    assert p.target.steps < 500  # stopped at steady state
    expected = rule.targets(rule.net(x), y)
    for l in (1, 2, 3):
        torch.testing.assert_close(p.t[l], expected[l], atol=1e-10, rtol=0)


def near_inverse_pair(relaxation, record, exact=False, n=6, seed=1, phase="12 ms"):
    """A circuit x -> h_1 -> h_2 whose decoder g_2 nearly (or, with linear layers, exactly)
    inverts f_2; unit Euler steps (dt = τ_t)."""
    act = "linear" if exact else "tanh"
    c = circuit([{"size": n, "activation": "tanh"}, {"size": n, "activation": act}],
                {"tau_t": "1 ms", "dt": "1 ms", "forward_phase": "2 ms", "target_phase": phase,
                 "relaxation": relaxation, "target": {"mode": "nudged", "beta": 0.05}, "record": {record[0]: [record[1]]}},
                )
    if exact:
        c = c.with_updates("feedback.activation=linear")
    eng, net = engine(c, n)
    g = torch.Generator().manual_seed(seed)
    W = 0.8 * torch.eye(n, dtype=D) + 0.15 * torch.randn(n, n, generator=g, dtype=D)
    params = eng.parameters()
    params.W[1], params.W[2] = 0.3 * torch.eye(n, dtype=D), W
    params.V[2] = torch.linalg.inv(W) + (0 if exact else 0.05 * torch.randn(n, n, generator=g, dtype=D))
    params.c[2] = torch.zeros(n, dtype=D) if exact else 0.05 * torch.randn(n, generator=g, dtype=D)
    eng.set_parameters(params)
    with torch.no_grad():
        for layer, l in zip(net.layers, (1, 2)):
            layer.weight.copy_(params.W[l])
    gact = (lambda v: v) if exact else torch.tanh
    fact = (lambda v: v) if exact else torch.tanh
    f = lambda v: fact(v @ params.W[2].T + params.b[2])  # noqa: E731
    gdec = lambda v: gact(v @ params.V[2].T + params.c[2])  # noqa: E731
    return eng, net, f, gdec


def test_inverse_output_unit_euler_step_is_bengio_iteration_and_converges_geometrically():
    eng, net, f, g = near_inverse_pair("inverse_output", ("layer1", "t"))
    x, y = 0.5 * torch.rand(2, 6, dtype=D, generator=torch.Generator().manual_seed(2)), torch.tensor([1, 4])
    p, h = from_fixed_point(eng, net, x, y)
    traj = p.traces[("layer1", "t")][-13:]  # onset + 12 unit steps
    # independent: seed 001 eq. iterative-tau-out-update, u <- u + g(t_2) - g(f(u)), u_0 = h_1
    t2 = h[2] - 0.05 * 2 * (h[2] - F.one_hot(y, 6).to(D))  # nudged, mse gradient
    u = [h[1]]
    for _ in range(12):
        u.append(u[-1] + g(t2) - g(f(u[-1])))
    torch.testing.assert_close(traj, torch.stack(u), atol=1e-13, rtol=0)

    def jac_norm(v):  # geometric convergence, rate ≤ Lipschitz constant of g∘f - I on the path
        J = torch.autograd.functional.jacobian(lambda z: g(f(z)) - z, v)
        return torch.linalg.matrix_norm(J, ord=2).item()

    for b in range(2):
        steps = [(u[k + 1][b] - u[k][b]).norm().item() for k in range(12)]
        alpha = max(jac_norm(u[k][b] + s * (u[k + 1][b] - u[k][b])) for k in range(12) for s in (0.0, 0.5, 1.0))
        assert alpha < 0.5
        ratios = [steps[k + 1] / steps[k] for k in range(11) if steps[k] > 1e-12]
        assert len(ratios) >= 4 and max(ratios) <= alpha * 1.05, (ratios, alpha)


def test_inverse_input_unit_euler_step_is_bengio_iteration_and_reads_out_g_of_u():
    eng, net, f, g = near_inverse_pair("inverse_input", ("layer2", "u"))
    x, y = 0.5 * torch.rand(2, 6, dtype=D), torch.tensor([1, 4])
    p, h = from_fixed_point(eng, net, x, y)
    t2 = h[2] - 0.05 * 2 * (h[2] - F.one_hot(y, 6).to(D))
    u = [h[2]]  # seed 001 eq. u-recurrence: u <- u + τ_y - f(g(u)), u_0 = h_2
    for _ in range(12):
        u.append(u[-1] + t2 - f(g(u[-1])))
    torch.testing.assert_close(p.traces[("layer2", "u")][-13:], torch.stack(u), atol=1e-13, rtol=0)
    torch.testing.assert_close(p.t[1], g(u[-1]), atol=1e-13, rtol=0)  # t_1 = g(u*), as seed 001 states


def test_settled_inverse_input_target_is_mapped_onto_the_target_above():
    """With an exact inverse the settled read-out t_1 = g(u*) satisfies f(t_1) = t_2."""
    eng, net, f, g = near_inverse_pair("inverse_input", ("layer1", "t"), exact=True, phase="60 ms")
    x, y = 0.5 * torch.rand(3, 6, dtype=D), torch.tensor([1, 4, 0])
    p, h = from_fixed_point(eng, net, x, y)
    t2 = h[2] - 0.05 * 2 * (h[2] - F.one_hot(y, 6).to(D))
    assert (p.t[1] - h[1]).abs().max() > 1e-3
    torch.testing.assert_close(f(p.t[1]), t2, atol=1e-9, rtol=0)


# ------------------------------------------------------------------ plasticity


@pytest.mark.parametrize("solver", ["rk4", "exponential_euler"])
def test_integrated_dtp_plasticity_is_the_fast_paths_dtp_update(solver):
    """∫ dW_l/dt over a settled target phase (dtp: (dt_l/dt ⊙ f') ⊗ h_{l-1}) equals the fast
    path's DTP step on the same weights and batch: -(η/2)∇‖h_l - t_l‖² below the output
    (its layer loss is ‖·‖², ours ½‖·‖²), -ηβ ∇L at the output (target h_L - β∂L/∂h_L).
    Exponential Euler with steps of 2 τ_t: the weights integrate the step's mean rate of
    the target (tdot_mean), so they move with it exactly."""
    eta = 0.4
    big = {"solver": "exponential_euler", "dt": "2 ms", "forward_phase": "2 ms"} if solver != "rk4" else {}
    c = dtp_circuit("dtp", eta, **big)
    rule = build(c, 5, 4).double()
    eng, net = engine(c, 5, net=rule.net)
    x, y = torch.rand(6, 5, dtype=D), torch.randint(0, 4, (6,))
    before = eng.parameters()
    from_fixed_point(eng, net, x, y)
    after = eng.parameters()
    for p in rule.net.parameters():
        p.grad = None
    rule.grads(x, y, forward=True, feedback=False)
    for l, layer in enumerate(rule.net.layers, 1):
        scale = -eta * 0.3 if l == 4 else -eta / 2
        torch.testing.assert_close(after.W[l] - before.W[l], scale * layer.weight.grad, atol=1e-13, rtol=1e-9)
        torch.testing.assert_close(after.b[l] - before.b[l], scale * layer.bias.grad, atol=1e-13, rtol=1e-9)


def one_layer_dtp1(act, beta, n_in=5, n=4):
    """A tanh/sigmoid layer below a linear output; its DTP1 change (η = 1) from a settled
    difference relaxation, with the layer's target, activity and the network."""
    layers = [{"size": n, "activation": act}, {"size": 3, "activation": "linear"}]
    dyn = {"tau_t": "1 ms", "dt": "0.2 ms", "forward_phase": "0.4 ms", "target_phase": "60 ms",
           "relaxation": "difference", "solver": "rk4", "target": {"mode": "nudged", "beta": beta},
           "plasticity": {"rule": "dtp1", "eta": 1.0}}
    c = circuit(layers, dyn, loss="cross_entropy")
    eng, net = engine(c, n_in, seed=2)
    x, y = torch.rand(1, n_in, dtype=D, generator=torch.Generator().manual_seed(5)), torch.tensor([2])
    before = eng.parameters()  # one example: DTP1 is a per-example rule (a batch applies the mean)
    p, h = from_fixed_point(eng, net, x, y)
    after = eng.parameters()
    return before, after, p, h, x


@pytest.mark.parametrize("act", ["tanh", "sigmoid"])
def test_integrated_dtp1_moves_the_activity_onto_its_target_to_first_order(act):
    """Seed 001 eq. delta-dtp: applying the DTP1 change of W_1 (alone) moves h_1 onto t_1 up
    to second order: the miss ‖f(W + ΔW) - t‖ shrinks like β² while ‖t - h‖ shrinks like β."""
    misses = []
    for beta in (0.2, 0.1, 0.05):
        before, after, p, h, x = one_layer_dtp1(act, beta)
        f = torch.tanh if act == "tanh" else torch.sigmoid
        moved = f(x @ after.W[1].T + after.b[1])
        misses.append(((moved - p.t[1]).norm() / (p.t[1] - h[1]).norm()).item())
    assert misses[-1] < 0.05, misses
    assert misses[0] / misses[1] > 1.6 and misses[1] / misses[2] > 1.6, misses  # relative miss ∝ β


def test_integrated_dtp1_equals_dtp_gn_update():
    """For linear populations (pre-activation = activity) the continuous DTP1 change equals
    the fast path's dtp_gn DTP1 update (normalised by ‖h_{l-1}‖² + 1 with the bias input)
    on the same weights and targets, exactly."""
    layers = [{"size": 5, "activation": "linear", "repeat": 2}, {"size": 3, "activation": "linear"}]
    dyn = {"tau_t": "1 ms", "dt": "0.2 ms", "forward_phase": "0.4 ms", "target_phase": "2 ms",
           "relaxation": "inverse_output", "solver": "rk4", "target": {"mode": "nudged", "beta": 0.2},
           "plasticity": {"rule": "dtp1", "eta": 1.0}}
    c = circuit(layers, dyn, loss="cross_entropy",
                algorithm={"name": "dtp_gn", "beta": 0.2, "refine": "output", "iterations": 1,
                           "schedule": "layerwise", "layer_scaling": False})
    c = c.with_updates("feedback.activation=linear")
    rule = build(c, 4, 3).double()
    eng, net = engine(c, 4, net=rule.net)
    x, y = torch.rand(3, 4, dtype=D), torch.tensor([0, 2, 1])
    before = eng.parameters()
    p, h = from_fixed_point(eng, net, x, y)
    after = eng.parameters()
    tau = {l: p.t[l] for l in (1, 2, 3)}  # the engine's targets, given to dtp_gn's update
    assert all((tau[l] - h[l]).abs().max() > 1e-3 for l in (1, 2, 3))
    for l, (dW, db) in rule.updates(h, tau).items():
        torch.testing.assert_close(after.W[l] - before.W[l], dW, atol=1e-10, rtol=1e-7)
        torch.testing.assert_close(after.b[l] - before.b[l], db, atol=1e-10, rtol=1e-7)


def test_dtp1_agrees_with_dtp_gn_to_first_order_for_tanh():
    """dtp_gn works on pre-activations: its DTP1 update with τ = atanh(t) differs from the
    continuous one by a relative O(β)."""
    gaps = []
    for beta in (0.2, 0.1, 0.05):
        before, after, p, h, x = one_layer_dtp1("tanh", beta)
        a = x @ before.W[1].T + before.b[1]
        tau = torch.atanh(p.t[1])
        n = x / ((x * x).sum(1, keepdim=True) + 1)
        dW_gn = (tau - a).T @ n / len(x)  # dtp_gn.updates' formula, written out independently
        dW = after.W[1] - before.W[1]
        gaps.append(((dW - dW_gn).norm() / dW_gn.norm()).item())
    assert gaps[-1] < 0.1 and all(1.6 < gaps[i] / gaps[i + 1] < 2.4 for i in range(2)), gaps


def test_layer_factor_rescales_each_examples_change():
    """With `influence` the phase change of a relaxing layer is the DTP1 change rescaled by
    ρ = ‖t_top - h_top‖²/‖t_l - h_l‖² per example (seed 001 §8)."""
    layers = [{"size": 4, "activation": "tanh"}, {"size": 3, "activation": "linear"}]
    dyn = {"tau_t": "1 ms", "dt": "0.2 ms", "forward_phase": "0.4 ms", "target_phase": "10 ms",
           "relaxation": "difference", "target": {"mode": "nudged", "beta": 0.1},
           "plasticity": {"rule": "dtp1", "eta": 1.0}}
    x, y = torch.rand(1, 5, dtype=D), torch.tensor([2])
    changes = []
    for influence in (False, True):
        c = circuit(layers, {**dyn, "plasticity": {"rule": "dtp1", "eta": 1.0, "influence": influence}})
        eng, net = engine(c, 5, seed=1)
        before = eng.parameters()
        p, h = from_fixed_point(eng, net, x, y)
        changes.append(eng.parameters().W[1] - before.W[1])
    rho = ((p.t[2] - h[2]) ** 2).sum() / ((p.t[1] - h[1]) ** 2).sum()
    torch.testing.assert_close(changes[1], rho * changes[0], atol=1e-13, rtol=1e-9)


def test_no_weight_change_during_the_forward_phase():
    layers = [{"size": 6, "activation": "tanh"}, {"size": 4, "activation": "linear"}]
    c = circuit(layers, {"plasticity": {"rule": "dtp1", "eta": 1.0, "gamma": "50 Hz"}})
    eng, _ = engine(c, 5)
    before = eng.parameters()
    eng.settle(torch.rand(3, 5, dtype=D), 100)
    assert all(torch.equal(before.W[l], eng.parameters().W[l]) for l in (1, 2))
    eng.present(torch.rand(3, 5, dtype=D), torch.tensor([0, 1, 2]))
    assert not torch.equal(before.W[1], eng.parameters().W[1])  # ... while the target phase does change them


def test_decoder_rule_is_dtp_gns_decoder_update():
    """Seed 001's decoder rule, one normalisation for both: the feedback event changes V_l,
    c_l by β_fb times dtp_gn's decoder update (e n_lᵀ, n_l = h_l/(‖h_l‖² + 1), the bias
    learning) -- for linear populations, where dtp_gn's pre-activations are the activities."""
    layers = [{"size": 5, "activation": "linear", "repeat": 2}, {"size": 3, "activation": "linear"}]
    dyn = {"forward_phase": "0.4 ms", "target_phase": "0.4 ms", "dt": "0.2 ms",
           "feedback_plasticity": {"rule": "decoder", "beta": 0.05}}
    c = circuit(layers, dyn, loss="cross_entropy", algorithm={"name": "dtp_gn"})
    c = c.with_updates("feedback.activation=linear")
    rule = build(c, 4, 3).double()
    eng, net = engine(c, 4, net=rule.net)
    x, y = torch.rand(3, 4, dtype=D), torch.tensor([0, 2, 1])
    before = eng.parameters()
    from_fixed_point(eng, net, x, y)
    after = eng.parameters()
    updates, _ = rule.decoder_updates(net(x))
    for l, (dV, dc) in updates.items():
        assert dV.abs().max() > 1e-4
        torch.testing.assert_close(after.V[l] - before.V[l], 0.05 * dV, atol=1e-14, rtol=1e-10)
        torch.testing.assert_close(after.c[l] - before.c[l], 0.05 * dc, atol=1e-14, rtol=1e-10)


# ------------------------------------------------------------- the potential form

POTENTIAL_NET = [{"size": 6, "activation": "tanh"}, {"size": 5, "activation": "sigmoid"}, {"size": 4, "activation": "tanh"},
                 {"size": 3, "activation": "linear"}]


def potential_run(dyn, algorithm=None):
    """A tanh/sigmoid/tanh/linear net in the potential form from the exact pre-activations
    (so the forward phase holds), one batch; (presentation, before, after, dtp_gn module, x, y)."""
    base = {"form": "potential", "tau_t": "1 ms", "dt": "0.5 ms", "forward_phase": "1 ms", "target_phase": "60 ms",
            "relaxation": "difference", "solver": "rk4", "stop": "steady", "atol": 1e-11, "rtol": 1e-13,
            "target": {"mode": "nudged", "beta": 0.3}, "plasticity": {"rule": "dtp1", "eta": 1.0}}
    c = circuit(POTENTIAL_NET, {**base, **dyn}, loss="cross_entropy",
                algorithm=algorithm or {"name": "dtp_gn", "beta": 0.3, "refine": "output", "iterations": 1,
                                        "start": "activity", "schedule": "layerwise", "layer_scaling": False})
    rule = build(c, 5, 3).double()
    eng, net = engine(c, 5, net=rule.net)
    x = torch.rand(4, 5, dtype=D, generator=torch.Generator().manual_seed(8))
    y = torch.tensor([0, 2, 1, 2])
    a = [layer.pre(h).detach() for layer, h in zip(net.layers, net(x)[:-1])]  # a_l from h_{l-1}
    before = eng.parameters()
    p = eng.present(x, y, perturbation=Perturbation(h0={f"layer{l}": a[l - 1] for l in range(1, 5)}))
    return p, before, eng.parameters(), rule, x, y, a


def test_potential_form_settles_to_the_pre_activations():
    p, *_, a = potential_run({"plasticity": {"rule": "none"}, "forward_phase": "40 ms", "target_phase": "0.5 ms"})
    for l in range(1, 5):
        torch.testing.assert_close(p.h[l], a[l - 1], atol=1e-12, rtol=0)


def test_potential_form_dtp1_is_dtp_gn():
    """With the populations as pre-activations (seed 001's h) and linear decoders, the settled
    difference targets are dtp_gn's (τ_L = a_L - β ∂L/∂a_L, τ_{l-1} = a + g(τ_l) - g(a_l)) and
    the integrated DTP1 change is dtp_gn's update, for tanh and sigmoid layers alike."""
    p, before, after, rule, x, y, _ = potential_run({})
    hs = [h.detach() for h in rule.net(x)]
    tau = rule.preactivation_targets(hs, y)
    for l in range(1, 5):
        torch.testing.assert_close(p.t[l], tau[l], atol=1e-9, rtol=0)
    for l, (dW, db) in rule.updates(hs, tau).items():
        assert dW.abs().max() > 1e-4
        torch.testing.assert_close(after.W[l] - before.W[l], dW, atol=1e-9, rtol=1e-7)
        torch.testing.assert_close(after.b[l] - before.b[l], db, atol=1e-9, rtol=1e-7)


def test_potential_form_decoder_rule_is_dtp_gns():
    p, before, after, rule, x, y, _ = potential_run(
        {"plasticity": {"rule": "none"}, "feedback_plasticity": {"rule": "decoder", "beta": 0.05}, "target_phase": "0.5 ms"})
    updates, _ = rule.decoder_updates([h.detach() for h in rule.net(x)])
    for l, (dV, dc) in updates.items():
        assert dV.abs().max() > 1e-4
        torch.testing.assert_close(after.V[l] - before.V[l], 0.05 * dV, atol=1e-13, rtol=1e-9)
        torch.testing.assert_close(after.c[l] - before.c[l], 0.05 * dc, atol=1e-13, rtol=1e-9)


@pytest.mark.parametrize("change", [{"relaxation": "gradient"}, {"target": {"mode": "clamped"}},
                                    {"plasticity": {"rule": "dtp1", "influence": True}}])
def test_potential_form_refuses_what_it_does_not_have(change):
    from biotp.errors import ConfigError

    with pytest.raises(ConfigError, match="dynamics.form: potential: "):
        potential_run(change)


# ----------------------------------------------------------- the adaptive solver

ADAPTIVE_NET = [{"size": 6, "activation": "tanh", "repeat": 2}, {"size": 4, "activation": "linear"}]
ADAPTIVE_DYN = {"tau_f": "1 ms", "tau_t": "1 ms", "forward_phase": "6 ms", "target_phase": "6 ms",
                "relaxation": "difference", "target": {"mode": "nudged", "beta": 0.5},
                "plasticity": {"rule": "dtp", "eta": 0.5}}


def adaptive_run(x, y, look=None, **dyn):
    c = circuit(ADAPTIVE_NET, {**ADAPTIVE_DYN, **dyn}, loss="cross_entropy")
    eng, _ = engine(c, 5, seed=3)
    if look:
        eng.look = look
    p = eng.present(x, y, record={})
    return p, eng.parameters()


def test_adaptive_solver_meets_its_tolerance_on_the_coupled_dynamics():
    """Bogacki-Shampine 3(2) with a step per example against RK4 with a 50x smaller step than
    the adaptive solver's first: targets, activities and the learnt weights (integrated as a
    quadrature along each example's steps) within a few times the tolerance, the error
    falling with it."""
    x, y = torch.rand(5, 5, dtype=D, generator=torch.Generator().manual_seed(1)), torch.tensor([0, 2, 1, 3, 0])
    ref, Pref = adaptive_run(x, y, dt="0.01 ms", solver="rk4")
    errors, steps = [], []
    for tol in (1e-3, 1e-5, 1e-7):
        p, P = adaptive_run(x, y, dt="0.5 ms", solver="adaptive", solver_rtol=tol, solver_atol=tol / 100)
        errors.append(max((p.t[1] - ref.t[1]).abs().max().item(), (p.h[3] - ref.h[3]).abs().max().item(),
                          max((P.W[l] - Pref.W[l]).abs().max().item() for l in (1, 2, 3))))
        steps.append(p.target.steps)
        assert errors[-1] < 10 * tol, (tol, errors)
    assert errors[0] > 10 * errors[1] > 100 * errors[2] and steps[0] < steps[1] < steps[2], (errors, steps)


@pytest.mark.parametrize("solver", ["adaptive", "euler", "exponential_euler", "rk4"])
def test_each_example_stops_when_it_has_settled(solver):
    """Without plasticity the examples are independent: in a batch each ends exactly where it
    ends alone, though they settle after different numbers of steps -- an example that has
    settled stops (the adaptive solver drops it from the batch; the fixed-step ones hold it)
    while the others go on (up to the rounding of batched products)."""
    x = torch.rand(3, 5, dtype=D, generator=torch.Generator().manual_seed(4)) * torch.tensor([[0.01], [1.0], [3.0]], dtype=D)
    y = torch.tensor([0, 1, 2])
    kw = dict(dt="0.5 ms", solver=solver, stop="steady", atol=1e-3, rtol=1e-6, forward_phase="40 ms",
              plasticity={"rule": "none"})
    batch, _ = adaptive_run(x, y, **kw)
    alone = [adaptive_run(x[i : i + 1], y[i : i + 1], **kw)[0] for i in range(3)]
    for i, p in enumerate(alone):
        for l in (1, 2, 3):
            torch.testing.assert_close(batch.h[l][i : i + 1], p.h[l], atol=1e-12, rtol=0)  # (batched products round
            torch.testing.assert_close(batch.t[l][i : i + 1], p.t[l], atol=1e-12, rtol=0)  # differently: 1e-14)
    forward = [p.forward.steps for p in alone]
    assert len(set(forward)) > 1 and batch.forward.steps == max(forward), forward


@pytest.mark.parametrize("solver", ["adaptive", "euler"])
def test_how_often_the_host_looks_changes_nothing(solver):
    """A GPU's engine looks whether the batch has settled every 16 steps, not every step
    (and the adaptive solver then masks finished examples instead of dropping them): the
    same presentation and the same learnt weights, on the CPU here."""
    x, y = torch.rand(4, 5, dtype=D, generator=torch.Generator().manual_seed(6)), torch.tensor([0, 1, 2, 3])
    kw = dict(dt="0.5 ms", solver=solver, stop="steady", atol=1e-3, rtol=1e-6)
    p1, P1 = adaptive_run(x, y, **kw)
    p16, P16 = adaptive_run(x, y, look=16, **kw)
    assert (p1.forward.steps, p1.target.steps) == (p16.forward.steps, p16.target.steps)
    for l in (1, 2, 3):
        torch.testing.assert_close(p16.h[l], p1.h[l], atol=1e-13, rtol=0)
        torch.testing.assert_close(p16.t[l], p1.t[l], atol=1e-13, rtol=0)
        torch.testing.assert_close(P16.W[l], P1.W[l], atol=1e-13, rtol=0)
    assert max(float((P1.W[l] - adaptive_run(x, y, plasticity={"rule": "none"}, **kw)[1].W[l]).abs().max())
               for l in (1, 2, 3)) > 1e-4  # (the weights did learn)


@pytest.mark.parametrize("change, message", [
    ({"relaxation": "gradient"}, "read the plastic weights"),
    ({"plasticity": {"rule": "dtp", "gamma": "5 Hz"}}, "weight decay"),
])
def test_adaptive_solver_refuses_what_it_cannot_honour(change, message):
    from biotp.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        adaptive_run(torch.rand(1, 5, dtype=D), torch.tensor([0]), solver="adaptive", **change)
    c = circuit(ADAPTIVE_NET, {**ADAPTIVE_DYN, "solver": "adaptive", "record": {"layer1": ["h"]}}, loss="cross_entropy")
    eng, _ = engine(c, 5)
    with pytest.raises(ConfigError, match="recording traces"):
        eng.present(torch.rand(1, 5, dtype=D), torch.tensor([0]))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_presentation_equals_cpu():
    """The same presentation on CUDA and on the CPU (float64): traces and learnt weights."""
    c = circuit(ADAPTIVE_NET, {**ADAPTIVE_DYN, "record": {"layer1": ["h", "t"]}}, loss="cross_entropy")
    x, y = torch.rand(4, 5, dtype=D), torch.tensor([0, 1, 2, 3])
    out = []
    for device in ("cpu", "cuda"):
        net = Network(c, 5, with_feedback=True, seed=0)
        eng = TorchEngine(build_model(c, 5), Parameters.from_network(net, D, device), device=device)
        p = eng.present(x.to(device), y.to(device))
        out.append((p.traces[("layer1", "t")].cpu(), eng.parameters().W[1].cpu()))
    torch.testing.assert_close(out[0][0], out[1][0], atol=1e-12, rtol=0)
    torch.testing.assert_close(out[0][1], out[1][1], atol=1e-12, rtol=0)
