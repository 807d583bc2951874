"""The learning rules of seeds 000 (gtp), 001 (dtp_gn) and 003 Algorithm 1 (ldrl), each
checked against an independent computation written here."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from biotp.algorithms import build
from biotp.circuit import parse_circuit
from biotp.errors import ConfigError
from biotp.network import Network


def circuit(alg: dict, layers: list[dict], **extra):
    return parse_circuit({"network": {"layers": layers}, "algorithm": alg, **extra})


@pytest.fixture
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# =========================================================================== gtp (seed 000)

GTP_LAYERS = [{"size": 6, "activation": "relu"}, {"size": 5, "activation": "sigmoid"},
              {"size": 4, "activation": "sigmoid"}, {"size": 3, "activation": "sigmoid"}]


def gtp_rule(start, steps=3, tau=0.7):
    c = circuit({"name": "gtp", "tau": tau, "steps": steps, "start": start}, GTP_LAYERS,
                loss="mse", init={"scheme": "farias"})
    rule = build(c, 7, 3).double()
    torch.manual_seed(1)
    with torch.no_grad():
        for layer in rule.net.layers:
            layer.bias.normal_(0, 0.3)
    return rule


@pytest.mark.parametrize("start", ["zero", "activity"])
def test_gtp_targets_are_euler_solution_of_eq3(start):
    rule = gtp_rule(start)
    torch.manual_seed(2)
    x, y = torch.rand(4, 7, dtype=torch.float64), torch.tensor([0, 2, 1, 2])
    hs = [h.detach() for h in rule.net(x)]
    got = rule.targets(hs, y)
    tau, T, L = rule.spec.tau, rule.spec.steps, rule.net.depth
    for n in range(len(x)):  # one example at a time, gradients by autograd
        above = torch.nn.functional.one_hot(y[n], 3).double()
        for l in range(L - 1, 0, -1):
            layer = rule.net.layers[l]
            yl = hs[l][n].clone()
            for _ in range(T):
                v = yl.clone().requires_grad_()
                cost = 0.5 * ((above - layer(v[None])[0]) ** 2).sum()  # eq. 4
                (grad,) = torch.autograd.grad(cost, v)
                yl = yl - tau * grad  # App. B eq. 32
            above = yl - hs[l][n] if start == "zero" else yl
            torch.testing.assert_close(got[l][n], above, atol=1e-10, rtol=0)


def test_gtp_one_step_zero_start_is_eq14():
    """T = 1, zero start: ŷ_l = -τ ∂C_{l+1}/∂y_l at the activity (eq. 14, App. D eq. 39)."""
    rule = gtp_rule("zero", steps=1)
    x, y = torch.rand(3, 7, dtype=torch.float64), torch.tensor([1, 0, 2])
    hs = [h.detach() for h in rule.net(x)]
    t = rule.targets(hs, y)
    W, h2, h3 = rule.net.layers[3].weight, hs[3], hs[4]
    onehot = torch.nn.functional.one_hot(y, 3).double()
    expected = -rule.spec.tau * ((h3 - onehot) * h3 * (1 - h3)) @ W
    torch.testing.assert_close(t[3], expected, atol=1e-12, rtol=0)
    assert h2.shape == expected.shape


@pytest.mark.parametrize("start", ["zero", "activity"])
def test_gtp_weight_update_is_eq5(start):
    rule = gtp_rule(start)
    x, y = torch.rand(5, 7, dtype=torch.float64), torch.tensor([0, 1, 2, 2, 1])
    rule.zero_grad()
    rule.grads(x, y)
    hs = [h.detach().numpy() for h in rule.net(x)]
    t = {l: v.numpy() for l, v in rule.targets([torch.tensor(h) for h in hs], y).items()}
    t[rule.net.depth] = np.eye(3)[y.numpy()]
    for l, layer in enumerate(rule.net.layers, start=1):
        dW = np.zeros(tuple(layer.weight.shape))
        db = np.zeros(layer.weight.shape[0])
        for n in range(len(x)):  # Δw_l = η (ŷ_l - y_l) f'(z_l) y_{l-1}ᵀ (eq. 12), η = 1
            out = hs[l][n]
            fprime = (out > 0).astype(float) if layer.act_name == "relu" else out * (1 - out)
            for i in range(dW.shape[0]):
                db[i] += (t[l][n][i] - out[i]) * fprime[i] / len(x)
                for j in range(dW.shape[1]):
                    dW[i, j] += (t[l][n][i] - out[i]) * fprime[i] * hs[l - 1][n][j] / len(x)
        np.testing.assert_allclose(-layer.weight.grad.numpy(), dW, atol=1e-10, rtol=0)
        np.testing.assert_allclose(-layer.bias.grad.numpy(), db, atol=1e-10, rtol=0)


def test_farias_init_variances():
    """Seed 000 eqs. 9-10: Var(w_1) = 48/(35 N), Var(w_l) = 16/(11 N), N = fan-in."""
    c = circuit({"name": "gtp"}, [{"size": 400, "activation": "relu"}, {"size": 300, "activation": "sigmoid"},
                                 {"size": 10, "activation": "sigmoid"}], init={"scheme": "farias"})
    net = Network(c, 500, with_feedback=False)
    w1, w2 = net.layers[0].weight.detach().double(), net.layers[1].weight.detach().double()
    assert abs(w1.mean()) < 3 * math.sqrt(48 / 35 / 500 / w1.numel())
    assert w1.var().item() == pytest.approx(48 / (35 * 500), rel=0.03)
    assert w2.var().item() == pytest.approx(16 / (11 * 400), rel=0.03)


# ====================================================================== dtp_gn (seed 001)


def dtp_gn_rule(layers, n_in, **alg):
    c = circuit({"name": "dtp_gn", **alg}, layers, loss="mse")
    return build(c, n_in, layers[-1]["size"]).double()


def make_exact_inverses(rule):
    """Linear layers: g_l(a_l) = W_l^{-1}(a_l - b_l), the exact inverse of f_l."""
    with torch.no_grad():
        for l in range(2, rule.net.depth + 1):
            layer, g = rule.net.layers[l - 1], rule.net.feedback[str(l)]
            inv = torch.linalg.inv(layer.weight)
            g.weight.copy_(inv)
            g.bias.copy_(-inv @ layer.bias)


@pytest.mark.parametrize("refine,schedule,start", [
    ("output", "parallel", "activity"), ("output", "parallel", "decoder"), ("output", "layerwise", "activity"),
    ("input", "parallel", "activity"), ("input", "layerwise", "activity"),
])
def test_dtp_gn_exact_inverses_give_exact_targets(refine, schedule, start):
    layers = [{"size": 5, "activation": "linear"}] * 4
    rule = dtp_gn_rule(layers, 5, refine=refine, schedule=schedule, start=start, iterations=3, beta=0.3)
    torch.manual_seed(3)
    with torch.no_grad():
        for layer in rule.net.layers:
            layer.weight.copy_(torch.eye(5, dtype=torch.float64) + 0.3 * torch.randn(5, 5, dtype=torch.float64))
            layer.bias.normal_(0, 0.2)
    make_exact_inverses(rule)
    x, y = torch.randn(4, 5, dtype=torch.float64), torch.tensor([0, 1, 4, 2])
    hs = rule.net(x)
    tau = rule.preactivation_targets(hs, y)
    # independent: τ_L = h_L - β ∂L/∂h_L (mse: L = ||h - e_y||²), then exact inverses downwards
    expected = hs[-1] - 0.3 * 2 * (hs[-1] - torch.nn.functional.one_hot(y, 5).double())
    torch.testing.assert_close(tau[4], expected.detach(), atol=1e-12, rtol=0)
    for l in range(4, 1, -1):
        W, b = rule.net.layers[l - 1].weight, rule.net.layers[l - 1].bias
        expected = torch.linalg.solve(W, (expected - b).T).T.detach()
        torch.testing.assert_close(tau[l - 1], expected, atol=1e-10, rtol=0)


def test_dtp_gn_refinement_converges_at_the_lipschitz_rate():
    """Output refinement u <- u + g(τ) - g(f(u)): ||u_{t+1} - u_t|| ≤ α ||u_t - u_{t-1}||,
    α the Lipschitz constant of g∘f - I (seed 001 §6), measured here on the iterates."""
    layers = [{"size": 6, "activation": "tanh"}] * 3
    rule = dtp_gn_rule(layers, 6, refine="output", schedule="layerwise", start="decoder", iterations=1)
    torch.manual_seed(4)
    with torch.no_grad():
        q, _ = torch.linalg.qr(torch.randn(6, 6, dtype=torch.float64))
        f3, g3 = rule.net.layers[2], rule.net.feedback["3"]
        f3.weight.copy_(0.4 * q)
        f3.bias.zero_()
        E = torch.randn(6, 6, dtype=torch.float64)
        g3.weight.copy_(torch.linalg.inv(f3.weight) @ (torch.eye(6, dtype=torch.float64) + 0.2 * E / torch.linalg.matrix_norm(E, 2)))
        g3.bias.zero_()

    def residual_map(u):  # g∘f - I in pre-activation space
        return rule.g(3, rule.f(3, u[None]))[0] - u

    torch.manual_seed(5)
    for _ in range(3):
        a2 = 0.4 * torch.randn(6, dtype=torch.float64)
        tau3 = rule.f(3, a2[None]) + 0.05 * torch.randn(1, 6, dtype=torch.float64)
        us = [rule.g(3, tau3)]
        for _ in range(40):
            us.append(rule.refine(3, tau3, us[-1], 1))
        pts = us + [(us[k] + us[k + 1]) / 2 for k in range(len(us) - 1)]
        alpha = max(torch.linalg.matrix_norm(torch.autograd.functional.jacobian(residual_map, p[0]), 2).item()
                    for p in pts)
        assert alpha < 0.8
        steps = [torch.linalg.vector_norm(us[k + 1] - us[k]).item() for k in range(len(us) - 1)]
        ratios = [steps[k + 1] / steps[k] for k in range(len(steps) - 1) if steps[k + 1] > 1e-9]
        assert len(ratios) >= 5
        assert max(ratios) <= alpha * 1.02 + 1e-12
        assert steps[len(ratios)] <= steps[0] * (alpha * 1.02) ** len(ratios)
        # the fixed point inverts f: f(u*) = τ
        torch.testing.assert_close(rule.f(3, us[-1]), tau3, atol=1e-7, rtol=0)


@pytest.mark.parametrize("layer_scaling", [True, False])
def test_dtp_gn_update_is_dtp1_formula(layer_scaling):
    layers = [{"size": 5, "activation": "tanh"}, {"size": 4, "activation": "tanh"}, {"size": 3, "activation": "linear"}]
    c = circuit({"name": "dtp_gn", "layer_scaling": layer_scaling, "iterations": 2, "beta": 0.2}, layers,
                init={"scheme": "glorot"}, feedback={"init": {"scheme": "glorot"}})
    rule = build(c, 6, 3).double()
    x, y = torch.randn(4, 6, dtype=torch.float64), torch.tensor([0, 2, 1, 1])
    rule.zero_grad()
    rule.grads(x, y, feedback=False)
    hs = rule.net(x)
    tau = {l: v.numpy() for l, v in rule.preactivation_targets(hs, y).items()}
    h = [v.detach().numpy() for v in hs]
    a = [None] + [rule.net.layers[l - 1].pre(hs[l - 1]).detach().numpy() for l in range(1, 4)]
    for l in range(1, 4):
        dW = np.zeros_like(rule.net.layers[l - 1].weight.detach().numpy())
        db = np.zeros(dW.shape[0])
        for n in range(len(x)):
            d = tau[l][n] - a[l][n]
            s = np.sum((tau[3][n] - a[3][n]) ** 2) / np.sum(d**2) if layer_scaling else 1.0
            norm2 = np.sum(h[l - 1][n] ** 2) + 1.0  # input [σ(h_{l-1}); 1] with the bias
            dW += s * np.outer(d, h[l - 1][n]) / norm2 / len(x)
            db += s * d / norm2 / len(x)
        np.testing.assert_allclose(-rule.net.layers[l - 1].weight.grad.numpy(), dW, atol=1e-12, rtol=0)
        np.testing.assert_allclose(-rule.net.layers[l - 1].bias.grad.numpy(), db, atol=1e-12, rtol=0)


def test_dtp_gn_decoder_rule():
    layers = [{"size": 5, "activation": "tanh"}, {"size": 4, "activation": "tanh"}, {"size": 3, "activation": "linear"}]
    rule = dtp_gn_rule(layers, 6, iterations=2)
    x, y = torch.randn(3, 6, dtype=torch.float64), torch.tensor([0, 2, 1])
    rule.zero_grad()
    rule.grads(x, y, forward=False)
    hs = [v.detach().numpy() for v in rule.net(x)]
    for l in (2, 3):
        g = rule.net.feedback[str(l)]
        O, c = g.weight.detach().numpy(), g.bias.detach().numpy()
        W, b = rule.net.layers[l - 2].weight.detach().numpy(), rule.net.layers[l - 2].bias.detach().numpy()
        dO = np.zeros_like(O)
        for n in range(len(x)):
            a_prev = W @ hs[l - 2][n] + b
            err = a_prev - (O @ hs[l][n] + c)  # Ω_l σ(h_l) + c_l predicts a_{l-1}
            dO += np.outer(err, hs[l][n]) / (np.sum(hs[l][n] ** 2) + 1) / len(x)
        np.testing.assert_allclose(-g.weight.grad.numpy(), dO, atol=1e-12, rtol=0)


# ========================================================================= ldrl (seed 003)


def ldrl_rule(**alg):
    layers = [{"size": 4, "activation": "tanh"}, {"size": 3, "activation": "tanh"}, {"size": 2, "activation": "linear"}]
    c = circuit({"name": "ldrl", **alg}, layers, feedback={"noise": 0.05})
    return build(c, 3, 2).double()


def test_ldrl_feedback_loss_is_ip_plus_rr():
    rule = ldrl_rule()
    torch.manual_seed(6)
    x = torch.randn(3, 3, dtype=torch.float64)
    hs = [v.detach() for v in rule.net(x)]
    for l in (2, 3):
        h = hs[l - 1]
        eps = 0.05 * torch.randn_like(h)
        eta = 0.05 * torch.randn(len(h), rule.net.layers[l - 1].n_out, dtype=torch.float64)
        got = rule.ldrl_loss(l, h, eps, eta).item()
        Wf, bf = (p.detach().numpy() for p in (rule.net.layers[l - 1].weight, rule.net.layers[l - 1].bias))
        Wg, bg = (p.detach().numpy() for p in (rule.net.feedback[str(l)].weight, rule.net.feedback[str(l)].bias))
        F = lambda v: np.tanh(Wf @ v + bf) if l < 3 else Wf @ v + bf  # noqa: E731
        G = lambda v: np.tanh(Wg @ v + bg)  # noqa: E731  (population l-1 is tanh)
        total = 0.0
        for n in range(len(h)):
            hn, e, q = h[n].numpy(), eps[n].numpy(), eta[n].numpy()
            r_hat = G(F(hn + e)) - G(F(hn)) + hn
            r_tilde = G(F(hn) + q) - G(F(hn)) + hn
            total += (-e @ (r_hat - hn) + 0.5 * np.sum((r_tilde - hn) ** 2)) / len(h)
        assert got == pytest.approx(total, abs=1e-12)


def test_ldrl_feedback_training_reduces_difference_reconstruction_error():
    """K feedback iterations drive ∂g_l towards (∂f_l)ᵀ (seed 003 Prop. 3): the transposed
    Jacobian mismatch and the expected LDRL both fall."""
    rule = ldrl_rule(feedback_iterations=200)
    opt = torch.optim.SGD(rule.feedback_params(), lr=0.05 / 0.05**2)  # the loss scales as σ²
    rule.feedback_optimizer = opt
    torch.manual_seed(7)
    x = torch.randn(16, 3, dtype=torch.float64)
    hs = [v.detach() for v in rule.net(x)]

    def mismatch():
        total = 0.0
        for l in (2, 3):
            f, g = rule.net.layers[l - 1], rule.net.feedback[str(l)]
            for h in hs[l - 1]:
                Jf = torch.autograd.functional.jacobian(lambda v: f(v[None])[0], h)
                Jg = torch.autograd.functional.jacobian(lambda v: g(v[None])[0], f(h[None])[0].detach())
                total += torch.linalg.matrix_norm(Jg - Jf.T).item() ** 2
        return total

    def expected_ldrl():
        torch.manual_seed(8)
        with torch.no_grad():
            return sum(rule.inverse_loss(hs).item() for _ in range(200)) / 200

    before, loss_before = mismatch(), expected_ldrl()
    rule.zero_grad()
    rule.grads(x, torch.zeros(16, dtype=torch.long), forward=False)
    opt.step()
    after, loss_after = mismatch(), expected_ldrl()
    assert after < 0.5 * before
    assert loss_after < loss_before - 0.2 * abs(loss_before)


# ================================================================ every rule learns digits


def digits():
    from sklearn.datasets import load_digits

    X, Y = load_digits(return_X_y=True)
    return torch.tensor(X / 16.0, dtype=torch.float32), torch.tensor(Y)


SIGMOID = [{"size": 32, "activation": "relu"}, {"size": 32, "activation": "sigmoid"}, {"size": 10, "activation": "sigmoid"}]
TANH = [{"size": 32, "activation": "tanh", "repeat": 2}, {"size": 10, "activation": "linear"}]


@pytest.mark.parametrize("alg,layers,loss,lr,fb_lr,bs,steps", [
    ({"name": "gtp", "tau": 50.0}, SIGMOID, "mse", 0.001, None, 1, 1500),  # seed 000's τ, η, batch 1
    ({"name": "gtp", "tau": 0.5, "steps": 3, "start": "activity"}, SIGMOID, "mse", 0.5, None, 1, 1500),
    ({"name": "dtp_gn", "beta": 0.5}, TANH, "cross_entropy", 1.0, 0.1, 32, 300),
    ({"name": "ldrl", "feedback_iterations": 3}, TANH, "cross_entropy", 0.1, 0.01, 32, 300),
])
def test_rule_lowers_training_loss_on_digits(one_thread, alg, layers, loss, lr, fb_lr, bs, steps):
    from biotp.training import make_optimizer

    X, Y = digits()
    extra = {"feedback": {"optimizer": {"name": "sgd", "lr": fb_lr}}} if fb_lr else {}
    c = circuit(alg, layers, loss=loss, optimizer={"name": "sgd", "lr": lr},
                init={"scheme": "farias" if alg["name"] == "gtp" else "orthogonal"}, **extra)
    torch.manual_seed(0)
    rule = build(c, 64, 10)
    opt = make_optimizer(c.optimizer, rule.forward_params())
    fb_opt = make_optimizer(c.feedback.optimizer, rule.feedback_params())
    if fb_opt is not None:
        rule.feedback_optimizer = fb_opt
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        before = rule.loss(rule.predict(X), Y).item()
    for _ in range(steps):
        idx = torch.randint(0, len(X), (bs,), generator=g)
        rule.zero_grad(set_to_none=True)
        rule.grads(X[idx], Y[idx])
        opt.step()
        if fb_opt is not None:
            fb_opt.step()
    with torch.no_grad():
        after = rule.loss(rule.predict(X), Y).item()
        error = (rule.predict(X).argmax(1) != Y).double().mean().item()
    assert after < 0.8 * before
    assert error < 0.6


@pytest.mark.parametrize("rule", ["gtp", "dtp_gn"])
def test_dense_only_rules_refuse_a_conv_net_naming_the_layer(rule):
    layers = [{"type": "dense", "size": 8, "activation": "tanh"},
              {"type": "conv", "channels": 2, "kernel": 3, "padding": 1, "activation": "tanh"},
              {"type": "flatten"}, {"type": "dense", "size": 4, "activation": "linear"}]
    c = parse_circuit({"network": {"layers": layers}, "algorithm": {"name": rule}}, "c.yaml")
    with pytest.raises(ConfigError, match=rf"c\.yaml: network\.layers\.1: {rule} is defined for dense layers only.*'conv'"):
        build(c, (1, 8, 8), 4)
