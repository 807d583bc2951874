"""Seed 002's discrete-transmission net (§3.3.2, eqs. 3.24-3.27) and stochastic binary net
(§3.3.3, eqs. 3.28-3.31) against hand computations: forward values, the straight-through
estimator, DTP targets and updates, M-sample prediction, and learning on `digits`."""

from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

from biotp.algorithms import build
from biotp.circuit import load_circuit, parse_circuit
from biotp.errors import ConfigError
from biotp.layers.discrete import Bernoulli, Quantise, same_samples
from biotp.training import Session, train

CIRCUITS = Path(__file__).resolve().parents[1] / "circuits"
N_IN, N1, N2, N_OUT, BATCH = 9, 7, 6, 4, 5


def sign_circuit(algorithm="dtp", straight_through=False, transmit="sign", **extra):
    layers = [{"size": N1, "activation": "tanh"},
              {"size": N2, "activation": "tanh", "transmit": transmit, "straight_through": straight_through},
              {"size": N_OUT, "activation": "linear"}]
    return parse_circuit({"network": {"layers": layers}, "algorithm": {"name": algorithm, **extra}, "seed": 4})


def stochastic_circuit(algorithm="dtp", samples=1, **extra):
    layers = [{"size": N1, "activation": "sigmoid"},
              {"size": N2, "activation": "sigmoid", "transmit": "bernoulli", "straight_through": True},
              {"size": N_OUT, "activation": "linear", "transmit": "bernoulli", "straight_through": True}]
    return parse_circuit({"network": {"layers": layers, "test_samples": samples}, "feedback": {"activation": "tanh"},
                          "algorithm": {"name": algorithm, **extra}, "seed": 4})


def make(circuit):
    torch.manual_seed(0)
    rule = build(circuit, N_IN, N_OUT).double()
    # biases away from zero, so the hand computations below exercise them
    with torch.no_grad():
        for p in rule.parameters():
            if p.ndim == 1:
                p.normal_(0, 0.3)
    x = torch.randn(BATCH, N_IN, dtype=torch.float64)
    y = torch.randint(0, N_OUT, (BATCH,))
    return rule, x, y


def params(module):
    return module.weight, module.bias


def sgn(h):
    return torch.where(h > 0, 1.0, -1.0).to(h.dtype)


# ------------------------------------------------------------------------ forward semantics


def test_sign_transmission_is_exactly_plus_minus_one_and_step_zero_one():
    h = torch.tensor([[-2.0, -1e-7, 0.0, 1e-7, 0.3, 5.0]], dtype=torch.float64, requires_grad=True)
    for straight_through in (False, True):
        s = Quantise("sign", straight_through)(h)
        assert s.tolist() == [[-1.0, -1.0, -1.0, 1.0, 1.0, 1.0]]  # exact: sign(0) = -1 as in Lee's code
        assert Quantise("step", straight_through)(h).tolist() == [[0.0, 0.0, 0.0, 1.0, 1.0, 1.0]]  # eq. 3.24 as printed


def test_sign_net_forward_is_eq_3_24_3_25():
    rule, x, y = make(sign_circuit())
    (W1, b1), (W2, b2), (W3, b3) = (params(layer) for layer in rule.net.layers)
    h1 = torch.tanh(x @ W1.T + b1)
    h2 = torch.tanh(sgn(h1) @ W2.T + b2)
    hs = rule.net(x)
    torch.testing.assert_close(hs[1], h1, rtol=0, atol=1e-15)
    torch.testing.assert_close(hs[2], h2, rtol=0, atol=1e-15)
    torch.testing.assert_close(hs[3], h2 @ W3.T + b3, rtol=0, atol=1e-15)
    # the feedback crosses the same quantised connection: g2(h2) = tanh(V2 sign(h2) + c2), eq. 3.26
    V2, c2 = params(rule.net.feedback["2"])
    torch.testing.assert_close(rule.net.feedback["2"](h2), torch.tanh(sgn(h2) @ V2.T + c2), rtol=0, atol=1e-15)


def test_bernoulli_fires_with_probability_h():
    """Each of 40000 draws per probability is 1 with probability clip(h, 0, 1) (eq. 3.28):
    the empirical rate lies within 5 standard errors."""
    torch.manual_seed(1)
    p = torch.tensor([-0.3, 0.0, 0.05, 0.3, 0.5, 0.8, 0.97, 1.0, 1.4], dtype=torch.float64)
    n = 40_000
    s = Bernoulli()(p.expand(n, -1))
    assert set(s.unique().tolist()) <= {0.0, 1.0}
    q = p.clamp(0, 1)
    tolerance = 5 * (q * (1 - q) / n).sqrt()
    assert ((s.mean(0) - q).abs() <= tolerance).all(), (s.mean(0), q)


def test_stochastic_net_forward_is_eq_3_28():
    rule, x, y = make(stochastic_circuit())
    (W1, b1), (W2, b2), (W3, b3) = (params(layer) for layer in rule.net.layers)
    torch.manual_seed(7)
    hs = rule.net(x)
    torch.manual_seed(7)  # the same uniforms, drawn in the forward pass's order
    u2, u3 = torch.rand(BATCH, N1, dtype=torch.float64), torch.rand(BATCH, N2, dtype=torch.float64)
    h1p = torch.sigmoid(x @ W1.T + b1)
    h2p = torch.sigmoid((u2 < h1p).double() @ W2.T + b2)
    torch.testing.assert_close(hs[1], h1p, rtol=0, atol=1e-15)
    torch.testing.assert_close(hs[2], h2p, rtol=0, atol=1e-15)
    torch.testing.assert_close(hs[3], (u3 < h2p).double() @ W3.T + b3, rtol=0, atol=1e-15)
    # the feedback reads the probability, not a sample: g2(h^p) = tanh(V2 h^p + c2), eq. 3.30
    V2, c2 = params(rule.net.feedback["2"])
    torch.testing.assert_close(rule.net.feedback["2"](h2p), torch.tanh(h2p @ V2.T + c2), rtol=0, atol=1e-15)


def test_same_samples_replays_the_last_draw():
    layer = Bernoulli()
    h = torch.full((3, 50), 0.5)
    first = layer(h)
    with same_samples(layer):
        assert torch.equal(layer(h), first)
    assert not torch.equal(layer(h), first)  # outside, fresh draws (equal with probability 2^-150)


def test_m_sample_prediction_is_the_mean_of_m_passes():
    M = 7
    rule, x, y = make(stochastic_circuit(samples=M))
    torch.manual_seed(11)
    out = rule.predict(x)
    torch.manual_seed(11)
    mean = sum(rule.net(x)[-1].softmax(1) for _ in range(M)) / M
    torch.testing.assert_close(out.softmax(1), mean, rtol=0, atol=1e-14)
    torch.testing.assert_close(out, mean.log(), rtol=0, atol=1e-14)
    torch.testing.assert_close(rule.loss(out, y), -mean[torch.arange(BATCH), y].log().mean(), rtol=0, atol=1e-14)


def test_deterministic_nets_predict_in_one_pass_whatever_test_samples_says():
    circuit = sign_circuit().with_updates("network.test_samples=50")
    rule, x, y = make(circuit)
    calls = []
    rule.net.layers[0].register_forward_hook(lambda *args: calls.append(1))
    with torch.no_grad():  # (without a graph, activations are computed in place, as predict does)
        reference = rule.net(x)[-1]
    torch.testing.assert_close(rule.predict(x), reference, rtol=0, atol=0)
    assert len(calls) == 2  # predict once, the reference once


# ------------------------------------------------------------ gradients and estimators


def test_bp_straight_through_on_the_sign_net_is_the_hand_gradient():
    rule, x, y = make(sign_circuit("bp", straight_through=True))
    (W1, b1), (W2, b2), (W3, b3) = (params(layer) for layer in rule.net.layers)
    with torch.no_grad():
        h1 = torch.tanh(x @ W1.T + b1)
        s1 = sgn(h1)
        h2 = torch.tanh(s1 @ W2.T + b2)
        e3 = ((h2 @ W3.T + b3).softmax(1) - F.one_hot(y, N_OUT)) / BATCH  # ∂(mean CE)/∂logits
        d2 = (e3 @ W3) * (1 - h2**2)
        d1 = (d2 @ W2) * (1 - h1**2)  # straight-through: ∂sign(h1)/∂h1 read as 1
    rule.grads(x, y)
    for param, ref in ((W3, e3.T @ h2), (b3, e3.sum(0)), (W2, d2.T @ s1), (b2, d2.sum(0)),
                       (W1, d1.T @ x), (b1, d1.sum(0))):
        torch.testing.assert_close(param.grad, ref, rtol=1e-12, atol=1e-15)


def test_bp_without_straight_through_leaves_the_lower_layer_fixed():
    """The exact derivative of sign is 0: the paper's second baseline (W1 does not learn)."""
    rule, x, y = make(sign_circuit("bp"))
    rule.grads(x, y)
    W1, b1 = params(rule.net.layers[0])
    assert W1.grad is None and b1.grad is None
    assert rule.net.layers[1].weight.grad.abs().sum() > 0


def test_bp_straight_through_on_the_stochastic_net_is_eq_3_29():
    rule, x, y = make(stochastic_circuit("bp"))
    (W1, b1), (W2, b2), (W3, b3) = (params(layer) for layer in rule.net.layers)
    torch.manual_seed(5)
    rule.grads(x, y)
    torch.manual_seed(5)
    u2, u3 = torch.rand(BATCH, N1, dtype=torch.float64), torch.rand(BATCH, N2, dtype=torch.float64)
    with torch.no_grad():
        h1p = torch.sigmoid(x @ W1.T + b1)
        s1 = (u2 < h1p).double()
        h2p = torch.sigmoid(s1 @ W2.T + b2)
        s2 = (u3 < h2p).double()
        e3 = ((s2 @ W3.T + b3).softmax(1) - F.one_hot(y, N_OUT)) / BATCH
        d2 = (e3 @ W3) * h2p * (1 - h2p)  # δh^p_1 = σ'(W2 h1) W2ᵀ δh^p_2 (eq. 3.29)
        d1 = (d2 @ W2) * h1p * (1 - h1p)
    for param, ref in ((W3, e3.T @ s2), (W2, d2.T @ s1), (b2, d2.sum(0)), (W1, d1.T @ x), (b1, d1.sum(0))):
        torch.testing.assert_close(param.grad, ref, rtol=1e-12, atol=1e-15)


# ------------------------------------------------------------------------- DTP targets


def test_dtp_on_the_sign_net_is_eqs_3_24_to_3_27():
    """Targets ĥ2 = h2 - η̂ ∂L/∂h2, ĥ1 = h1 + g2(ĥ2) - g2(h2) with g2 = tanh(V2 sign(·) + c2);
    the layer-local updates (eq. 3.5) and the inverse loss's update (eq. 3.27)."""
    eta, sigma = 0.8, 0.4  # a step large enough that some of ĥ2 cross zero (else g2(ĥ2) - g2(h2) = 0)
    rule, x, y = make(sign_circuit(eta_hat=eta).with_updates(f"feedback.noise={sigma}"))
    (W1, b1), (W2, b2), (W3, b3) = (params(layer) for layer in rule.net.layers)
    V2, c2 = params(rule.net.feedback["2"])
    with torch.no_grad():
        g2 = lambda h: torch.tanh(sgn(h) @ V2.T + c2)  # noqa: E731
        h1 = torch.tanh(x @ W1.T + b1)
        h2 = torch.tanh(sgn(h1) @ W2.T + b2)
        p = (h2 @ W3.T + b3).softmax(1)
        t2 = h2 - eta * (p - F.one_hot(y, N_OUT)) @ W3  # per-example ∂L/∂h2 (eq. 3.7 at layer M-1)
        t1 = h1 + g2(t2) - g2(h2)  # eq. 3.15
    flipped = (sgn(t2) != sgn(h2)).any(1)
    assert flipped.any() and not flipped.all(), "the test needs examples with and without a sign change"
    targets = rule.targets(rule.net(x, local=True), y)
    torch.testing.assert_close(targets[2], t2, rtol=0, atol=1e-14)
    torch.testing.assert_close(targets[1], t1, rtol=0, atol=1e-14)
    torch.testing.assert_close(targets[1][~flipped], h1[~flipped], rtol=0, atol=1e-15)  # no crossing, no signal
    assert (targets[1][flipped] - h1[flipped]).abs().amax(1).min() > 1e-3

    torch.manual_seed(9)
    rule.grads(x, y)
    torch.manual_seed(9)
    eps = sigma * torch.randn(BATCH, N1, dtype=torch.float64)
    with torch.no_grad():
        d1 = 2 * (h1 - t1) * (1 - h1**2) / BATCH  # ∂/∂a1 of (1/B) Σ ||h1 - ĥ1||²
        d2 = 2 * (h2 - t2) * (1 - h2**2) / BATCH
        e3 = (p - F.one_hot(y, N_OUT)) / BATCH
        noisy = h1 + eps
        code = torch.tanh(sgn(noisy) @ W2.T + b2)
        rec = g2(code)
        dv = 2 * (rec - noisy) * (1 - rec**2) / BATCH  # eq. 3.27, noise-preserving
    for param, ref in ((W1, d1.T @ x), (b1, d1.sum(0)), (W2, d2.T @ sgn(h1)), (b2, d2.sum(0)),
                       (W3, e3.T @ h2), (b3, e3.sum(0)), (V2, dv.T @ sgn(code)), (c2, dv.sum(0))):
        torch.testing.assert_close(param.grad, ref, rtol=1e-12, atol=1e-15)


def test_dtp_on_the_stochastic_net_is_eqs_3_28_to_3_31():
    """ĥ2^p = h2^p - η ∂L/∂h2 at the forward pass's sample h2, ĥ1^p = h1^p + g2(ĥ2^p) - g2(h2^p),
    L_i = ||ĥ_i^p - h_i^p||², and L2^inv on f2(h1^p + ε), which samples afresh (eqs. 3.30-3.31)."""
    eta, sigma = 0.7, 0.3
    rule, x, y = make(stochastic_circuit(eta_hat=eta).with_updates(f"feedback.noise={sigma}"))
    (W1, b1), (W2, b2), (W3, b3) = (params(layer) for layer in rule.net.layers)
    V2, c2 = params(rule.net.feedback["2"])
    g2 = lambda h: torch.tanh(h @ V2.T + c2)  # noqa: E731

    torch.manual_seed(3)
    rule.grads(x, y)
    torch.manual_seed(3)  # the forward pass's uniforms, then ε and the inverse loss's uniforms
    u2, u3 = torch.rand(BATCH, N1, dtype=torch.float64), torch.rand(BATCH, N2, dtype=torch.float64)
    eps = sigma * torch.randn(BATCH, N1, dtype=torch.float64)
    u2_inv = torch.rand(BATCH, N1, dtype=torch.float64)
    with torch.no_grad():
        h1p = torch.sigmoid(x @ W1.T + b1)
        s1 = (u2 < h1p).double()
        h2p = torch.sigmoid(s1 @ W2.T + b2)
        s2 = (u3 < h2p).double()
        p = (s2 @ W3.T + b3).softmax(1)
        t2 = h2p - eta * (p - F.one_hot(y, N_OUT)) @ W3
        t1 = h1p + g2(t2) - g2(h2p)
        d1 = 2 * (h1p - t1) * h1p * (1 - h1p) / BATCH
        d2 = 2 * (h2p - t2) * h2p * (1 - h2p) / BATCH
        e3 = (p - F.one_hot(y, N_OUT)) / BATCH
        noisy = h1p + eps
        code = torch.sigmoid((u2_inv < noisy).double() @ W2.T + b2)
        rec = g2(code)
        dv = 2 * (rec - noisy) * (1 - rec**2) / BATCH
    for param, ref in ((W1, d1.T @ x), (b1, d1.sum(0)), (W2, d2.T @ s1), (b2, d2.sum(0)),
                       (W3, e3.T @ s2), (b3, e3.sum(0)), (V2, dv.T @ code), (c2, dv.sum(0))):
        torch.testing.assert_close(param.grad, ref, rtol=1e-12, atol=1e-15)

    torch.manual_seed(3)
    targets = rule.targets(rule.net(x, local=True), y)
    torch.testing.assert_close(targets[2], t2, rtol=0, atol=1e-14)
    torch.testing.assert_close(targets[1], t1, rtol=0, atol=1e-14)


def test_noise_decays_as_sigma0_over_1_plus_e_over_e0():
    rule, x, y = make(stochastic_circuit().with_updates("feedback.noise=0.5", "feedback.noise_decay=100"))
    for epoch in (0, 1, 50, 300):
        rule.set_epoch(epoch)
        assert rule.noise == pytest.approx(0.5 / (1 + epoch / 100), rel=1e-12)


# ------------------------------------------------------------------------------ errors


def test_rules_that_read_weights_directly_refuse_a_transmission():
    for name in ("fa", "dfa", "gtp", "dtp_gn", "tjml"):
        with pytest.raises(ConfigError, match=r"network.layers: .*layer 2's transmit: sign"):
            build(sign_circuit().with_algorithm(name), N_IN, N_OUT)


def test_straight_through_without_a_transmission_is_an_error():
    with pytest.raises(ConfigError, match=r"network.layers.0: .*straight_through applies to a discrete transmit"):
        parse_circuit({"network": {"layers": [{"size": 4, "straight_through": True}]}})
    with pytest.raises(ConfigError, match=r"network.layers.0.transmit: .*'spike'"):
        parse_circuit({"network": {"layers": [{"size": 4, "transmit": "spike"}]}})


def test_the_paper_circuits_build_as_described():
    sign = load_circuit(CIRCUITS / "dtp_mnist_sign.yaml")
    rule = build(sign, 784, 10)
    assert [(m.n_in, m.n_out, m.act_name) for m in rule.net.layers] == [
        (784, 500, "tanh"), (500, 500, "tanh"), (500, 10, "linear")]
    assert [type(m.transmit).__name__ for m in rule.net.layers] == ["NoneType", "Quantise", "NoneType"]
    assert rule.net.feedback["2"].transmit.kind == "sign" and rule.net.feedback["2"].act_name == "tanh"
    sto = load_circuit(CIRCUITS / "dtp_mnist_stochastic.yaml")
    rule = build(sto, 784, 10)
    assert [m.n_out for m in rule.net.layers] == [200, 200, 10] and sto.network.test_samples == 100
    assert [type(m.transmit).__name__ for m in rule.net.layers] == ["NoneType", "Bernoulli", "Bernoulli"]
    assert rule.net.feedback["2"].transmit is None and rule.net.feedback["2"].act_name == "tanh"


# ---------------------------------------------------------------------------- learning


@pytest.mark.parametrize("circuit_file, algorithm, lr, bound", [
    ("dtp_mnist_sign.yaml", "dtp", 1e-3, 0.3), ("dtp_mnist_sign.yaml", "bp", 1e-3, 0.3),  # bp: straight-through
    ("dtp_mnist_stochastic.yaml", "dtp", 3e-3, 0.35), ("dtp_mnist_stochastic.yaml", "bp", 3e-3, 0.5),
])
def test_the_nets_learn_on_digits(circuit_file, algorithm, lr, bound):
    """The paper's circuits, narrowed (64 hidden units, M = 10) and sped up for scikit-learn's
    digits: after 6 epochs the test error (360 examples) is far below chance (90%) and below
    the untrained network's.  Seeds 0-2 give at most 0.18, 0.13, 0.21 and 0.34 in the order above."""
    circuit = load_circuit(CIRCUITS / circuit_file, [
        "data.dataset=digits", "data.val_split=0.1", "data.batch_size=20",
        "network.layers.0.size=64", "network.layers.1.size=64", "network.test_samples=10",
        f"optimizer.lr={lr}", "feedback.optimizer.lr=0.001", "feedback.noise_decay=5",
    ]).with_algorithm(algorithm)
    session = Session(circuit)
    before = session.evaluate()["test_error"]
    for epoch in range(1, 7):
        session.run_epoch(epoch)
    after = session.evaluate()["test_error"]
    assert after < bound and after < before - 0.4, (before, after)


def test_a_resumed_stochastic_run_equals_an_uninterrupted_one(interrupted):
    """Samples come from torch's global generator, whose state the checkpoint carries."""
    circuit = load_circuit(CIRCUITS / "dtp_mnist_stochastic.yaml", [
        "data.dataset=digits", "data.val_split=0.1", "data.limit=300", "data.batch_size=50", "network.layers.0.size=16",
        "network.layers.1.size=16", "network.test_samples=3", "feedback.noise_decay=2", "schedule.eval_every=1",
        "schedule.eval_train=true"])
    interrupted(train, circuit, 2, 3)
