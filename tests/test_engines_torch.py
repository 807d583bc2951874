"""The torch engine against exact and independent computations (DESIGN.md catalogue 2-5)."""

import math

import pytest
import torch

from biotp.algorithms import build
from biotp.algorithms.base import Loss
from biotp.circuit import parse_circuit
from biotp.dynamics import model as M
from biotp.engines.integrators import RK4, Euler
from biotp.engines.torch import TorchEngine, forward_field
from biotp.network import Network

torch.set_num_threads(1)
D = torch.float64


def circuit(layers, dynamics=None, algorithm=None, loss="mse"):
    data = {"network": {"layers": layers}, "loss": loss, "dynamics": dynamics or {}}
    if algorithm:
        data["algorithm"] = algorithm
    return parse_circuit(data, "<test>")


def engine(c, n_in, net=None, seed=0):
    net = net or Network(c, n_in, with_feedback=True, seed=seed)
    model = M.build_model(c.dynamics, net)
    n_out = c.network.expanded()[-1].size
    return TorchEngine(model, M.Weights.of(net, D), Loss(c.loss, n_out)), net


# ------------------------------------------------------------ exact decay, order


def decay(solver, dt, tau=2e-3, T=10e-3):
    """h(T) of a linear leaky population τ dh/dt = -h (W = 0, b = 0) from h(0) = 1."""
    c = circuit([{"size": 3, "activation": "linear"}], {"tau_f": f"{tau} s"})
    eng, _ = engine(c, 2)
    eng.w.W[1].zero_()
    eng.w.b[1].zero_()
    y = {"h": {1: torch.ones(1, 3, dtype=D)}}
    x = torch.zeros(1, 2, dtype=D)
    for _ in range(round(T / dt)):
        y, _ = solver.step(forward_field, y, dt, M.drive(eng.w, 1, x), eng.model, eng.w, tau)
    return y["h"][1][0, 0].item()


def test_linear_population_decays_as_exp():
    tau, T = 2e-3, 10e-3
    exact = math.exp(-T / tau)
    # Euler and RK4 reproduce their stability polynomials exactly ...
    z = -1e-4 / tau
    assert decay(Euler(), 1e-4) == pytest.approx((1 + z) ** 100, rel=1e-12)
    assert decay(RK4(), 1e-4) == pytest.approx((1 + z + z**2 / 2 + z**3 / 6 + z**4 / 24) ** 100, rel=1e-12)
    # ... which converge to exp(-t/τ)
    assert decay(RK4(), 1e-5) == pytest.approx(exact, rel=1e-9)


@pytest.mark.parametrize("solver", [Euler(), RK4()])
def test_convergence_order(solver):
    exact = math.exp(-5.0)
    errors = [abs(decay(solver, dt) - exact) for dt in (4e-4, 2e-4, 1e-4)]
    orders = [math.log2(errors[i] / errors[i + 1]) for i in range(2)]
    assert all(abs(o - solver.order) < 0.15 for o in orders), orders


def test_forward_phase_settles_to_the_forward_pass_and_stops_early():
    c = circuit([{"size": 6, "activation": "tanh"}, {"size": 4, "activation": "sigmoid"}],
                {"tau_f": "1 ms", "dt": "0.1 ms", "forward_phase": "200 ms", "solver": "rk4", "stop": "steady",
                 "atol": 1e-9, "rtol": 1e-12})
    eng, net = engine(c, 5)
    x = torch.rand(3, 5, dtype=D)
    h, phase = eng.forward_phase(x)
    assert phase.steps < 2000
    assert all(r <= 1e-9 for r in phase.residual.values())
    exact = net.double()(x)
    for l in (1, 2):  # ‖h - f(h)‖ = τ ‖dh/dt‖ ≤ 1e-12 per layer
        torch.testing.assert_close(h[l], exact[l], atol=1e-11, rtol=0)


# --------------------------------------------------------------- target rules


def _settled(eng, x):
    """Exact forward activities, as the forward phase would settle to."""
    h = [x]
    for l in range(1, eng.model.L + 1):
        h.append(eng.w.f(eng.model, l, h[-1]))
    return h


def run_target_phase(eng, h, y):
    """Drive the engine's target phase from exact activities h (skipping settling)."""
    eng.forward_phase = lambda x, sample=lambda h_: None: (h, None)
    return eng.present(h[0], y)


def test_gradient_relaxation_is_gtp_euler():
    """Euler with step dt = τ τ_t, T steps per layer, layer by layer from the top, equals
    seed 000 App. B eq. 32: y_l <- y_l - τ ∂C_{l+1}/∂y_l, C_{l+1} = ½‖ŷ_{l+1} - f_{l+1}(y_l)‖²."""
    tau, T = 0.3, 7
    layers = [{"size": 6, "activation": "tanh"}, {"size": 5, "activation": "sigmoid"}, {"size": 4, "activation": "linear"}]
    c = circuit(layers, {"tau_t": "1 ms", "dt": f"{tau} ms", "forward_phase": f"{10 * tau} ms", "target_phase": f"{2 * T * tau} ms",
                         "relaxation": "gradient", "schedule": "layerwise", "target": {"mode": "clamped"}})
    eng, net = engine(c, 5)
    x, y = torch.rand(3, 5, dtype=D), torch.tensor([0, 3, 1])
    h = _settled(eng, x)
    p = run_target_phase(eng, h, y)
    # independent: autograd on the layer costs
    net = net.double()
    target = {3: torch.nn.functional.one_hot(y, 4).to(D)}
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
    gtp = pytest.importorskip("biotp.algorithms.gtp")  # noqa: F841 (only when seed 000's rule exists)
    tau, T = 0.3, 4
    layers = [{"size": 6, "activation": "relu"}, {"size": 5, "activation": "sigmoid"}, {"size": 4, "activation": "sigmoid"}]
    c = circuit(layers, {"tau_t": "1 ms", "dt": f"{tau} ms", "forward_phase": f"{10 * tau} ms", "target_phase": f"{2 * T * tau} ms",
                         "relaxation": "gradient", "schedule": "layerwise", "target": {"mode": "clamped"}},
                algorithm={"name": "gtp", "tau": tau, "steps": T, "start": "activity"})
    rule = build(c, 5, 4).double()
    eng, _ = engine(c, 5, net=rule.net)
    x, y = torch.rand(3, 5, dtype=D), torch.tensor([0, 3, 1])
    p = run_target_phase(eng, _settled(eng, x), y)
    expected = rule.targets(rule.net(x), y)
    for l in (1, 2):
        torch.testing.assert_close(p.t[l], expected[l], atol=1e-12, rtol=0)


def test_settled_difference_relaxation_is_dtp():
    """The fixed point of τ_t dt_l/dt = -t_l + h_l + g(t_{l+1}) - g(h_{l+1}) with the
    penultimate target h_{L-1} - η̂ ∂L/∂h_{L-1} is DTP's target (seed 002 eq. 3.15)."""
    layers = [{"size": 7, "activation": "tanh", "repeat": 3}, {"size": 4, "activation": "linear"}]
    dyn = {"tau_t": "1 ms", "dt": "0.2 ms", "target_phase": "100 ms", "relaxation": "difference", "solver": "rk4",
           "stop": "steady", "atol": 1e-11, "rtol": 1e-13, "target": {"mode": "gradient_step", "beta": 0.3}}
    c = circuit(layers, dyn, algorithm={"name": "dtp", "eta_hat": 0.3}, loss="cross_entropy")
    rule = build(c, 5, 4).double()
    eng, _ = engine(c, 5, net=rule.net)
    x, y = torch.rand(6, 5, dtype=D), torch.randint(0, 4, (6,))
    p = run_target_phase(eng, _settled(eng, x), y)
    assert p.target.steps < 500  # stopped at steady state
    expected = rule.targets(rule.net(x), y)
    for l in (1, 2, 3):
        torch.testing.assert_close(p.t[l], expected[l], atol=1e-10, rtol=0)


def near_inverse_pair(relaxation, record, n=6, seed=1):
    """A circuit x -> h_1 -> h_2 whose decoder g_2 nearly inverts f_2 on small activities;
    unit Euler steps (dt = τ_t)."""
    c = circuit([{"size": n, "activation": "tanh"}, {"size": n, "activation": "tanh"}],
                {"tau_t": "1 ms", "dt": "1 ms", "target_phase": "12 ms", "relaxation": relaxation,
                 "target": {"mode": "nudged", "beta": 0.05}, "record": {"layer1": [record]}})
    eng, net = engine(c, n)
    g = torch.Generator().manual_seed(seed)
    W = 0.8 * torch.eye(n, dtype=D) + 0.15 * torch.randn(n, n, generator=g, dtype=D)
    eng.w.W[1] = 0.3 * torch.eye(n, dtype=D)
    eng.w.W[2], eng.w.V[2] = W, torch.linalg.inv(W) + 0.05 * torch.randn(n, n, generator=g, dtype=D)
    return eng


def test_inverse_output_unit_euler_step_is_bengio_iteration_and_converges_geometrically():
    eng = near_inverse_pair("inverse_output", "t")
    m, w = eng.model, eng.w
    x, y = 0.5 * torch.rand(2, 6, dtype=D, generator=torch.Generator().manual_seed(2)), torch.tensor([1, 4])
    h = _settled(eng, x)
    p = run_target_phase(eng, h, y)
    traj = p.traces[("layer1", "t")][-13:]  # onset + 12 unit steps
    # independent: seed 001 eq. iterative-tau-out-update, u <- u + g(t_2) - g(f(u)), u_0 = h_1
    t2 = h[2] - 0.05 * 2 * (h[2] - torch.nn.functional.one_hot(y, 6).to(D))  # nudged, mse gradient
    u = [h[1]]
    for _ in range(12):
        u.append(u[-1] + w.g(m, 2, t2) - w.g(m, 2, w.f(m, 2, u[-1])))
    torch.testing.assert_close(traj, torch.stack(u), atol=1e-13, rtol=0)
    # geometric convergence with rate ≤ Lipschitz constant of g∘f - I, measured on the path
    def jac_norm(v):
        J = torch.autograd.functional.jacobian(lambda z: w.g(m, 2, w.f(m, 2, z)) - z, v)
        return torch.linalg.matrix_norm(J, ord=2).item()
    for b in range(2):
        steps = [(u[k + 1][b] - u[k][b]).norm().item() for k in range(12)]
        alpha = max(jac_norm(u[k][b] + s * (u[k + 1][b] - u[k][b])) for k in range(12) for s in (0.0, 0.5, 1.0))
        assert alpha < 0.5
        ratios = [steps[k + 1] / steps[k] for k in range(11) if steps[k] > 1e-12]
        assert len(ratios) >= 4 and max(ratios) <= alpha * 1.05, (ratios, alpha)


def test_inverse_input_unit_euler_step_is_bengio_iteration():
    eng = near_inverse_pair("inverse_input", "u")
    m, w = eng.model, eng.w
    x, y = 0.5 * torch.rand(2, 6, dtype=D), torch.tensor([1, 4])
    h = _settled(eng, x)
    p = run_target_phase(eng, h, y)
    t2 = h[2] - 0.05 * 2 * (h[2] - torch.nn.functional.one_hot(y, 6).to(D))
    u = [h[2]]  # seed 001 eq. u-recurrence: u <- u + τ_y - f(g(u)), u_0 = τ_y's start h_2
    for _ in range(12):
        u.append(u[-1] + t2 - w.f(m, 2, w.g(m, 2, u[-1])))
    torch.testing.assert_close(p.traces[("layer1", "u")][-13:], torch.stack(u), atol=1e-13, rtol=0)
    torch.testing.assert_close(p.t[1], h[1] + w.g(m, 2, u[-1]) - w.g(m, 2, h[2]), atol=1e-13, rtol=0)


# ------------------------------------------------------------------ plasticity


@pytest.mark.parametrize("influence", [False, True])
@pytest.mark.parametrize("relaxation", ["difference", "gradient"])
def test_integrated_weight_change_is_dtp1_update(relaxation, influence):
    """∫ dW_l/dt over the target phase = η (t_l - h_l) n_{l-1}ᵀ (DTP1, seed 001 eq.
    delta-dtp-regular), times ‖t_L-h_L‖²/‖t_l-h_l‖² with the layer factor (DTP, §8)."""
    layers = [{"size": 6, "activation": "tanh", "repeat": 2}, {"size": 4, "activation": "linear"}]
    dyn = {"tau_t": "1 ms", "dt": "0.25 ms", "target_phase": "5 ms", "relaxation": relaxation, "solver": "rk4",
           "plasticity": {"rule": "dtp1", "eta": 0.7, "gamma": "0 Hz", "influence": influence}}
    c = circuit(layers, dyn, loss="cross_entropy")
    eng, _ = engine(c, 5)
    W0 = [None] + [W.clone() for W in eng.w.W[1:]]
    x, y = torch.rand(3, 5, dtype=D), torch.tensor([0, 2, 3])
    h = _settled(eng, x)
    p = run_target_phase(eng, h, y)
    n = [v / (v * v).sum(1, keepdim=True) for v in h]
    s = ((p.t[3] - h[3]) ** 2).sum(1, keepdim=True)
    for l in (1, 2, 3):
        e = p.t[l] - h[l]
        rho = s / (e * e).sum(1, keepdim=True) if influence else 1.0
        expected = 0.7 * (rho * e).T @ n[l - 1] / 3
        assert e.abs().max() > 1e-4  # the targets did move
        torch.testing.assert_close(eng.w.W[l] - W0[l], expected, atol=1e-14, rtol=1e-10)


def test_no_weight_change_during_forward_phase():
    layers = [{"size": 6, "activation": "tanh"}, {"size": 4, "activation": "linear"}]
    c = circuit(layers, {"plasticity": {"rule": "dtp1", "eta": 1.0, "gamma": "50 Hz"}})
    eng, _ = engine(c, 5)
    W0 = [W.clone() for W in eng.w.W[1:]]
    h, _ = eng.forward_phase(torch.rand(3, 5, dtype=D))
    assert all(torch.equal(a, b) for a, b in zip(W0, eng.w.W[1:]))
    eng.forward_phase = lambda x, sample=lambda h_: None: (h, None)
    eng.present(h[0], torch.tensor([0, 1, 2]))
    assert not torch.equal(W0[0], eng.w.W[1])  # ... while the target phase does change them
