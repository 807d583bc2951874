"""FA and DFA on convolutional, pooling and locally connected networks (seed 004 §2.1.1, Table 3):
FA with B = W is BP; FA with random B and DFA against backward passes written out by hand."""

import pytest
import torch
from torch.nn import functional as F
from torch.nn.grad import conv2d_weight

from biotp.algorithms import build
from biotp.circuit import parse_circuit
from biotp.errors import ConfigError
from biotp.layers.local import local_apply
from biotp.metrics import angle_deg
from biotp.training import Session

LENET = [  # conv + internal pool, conv, separate max-pool, flatten, dense
    {"type": "conv", "channels": 3, "kernel": 3, "padding": 1, "pool": 2, "activation": "tanh"},
    {"type": "conv", "channels": 4, "kernel": 3, "padding": 0, "activation": "leaky_relu"},
    {"type": "maxpool", "kernel": 2},
    {"type": "flatten"},
    {"type": "dense", "size": 7, "activation": "tanh"},
    {"type": "dense", "size": 5, "activation": "linear"},
]
LOCAL = [  # Bartunov's LC net in miniature: strided locally connected layers, then dense
    {"type": "local", "channels": 3, "kernel": 3, "stride": 2, "activation": "tanh"},
    {"type": "local", "channels": 4, "kernel": 3, "stride": 1, "padding": 0, "activation": "tanh"},
    {"type": "dense", "size": 6, "activation": "tanh"},
    {"type": "dense", "size": 5, "activation": "linear"},
]
SHAPE = (2, 10, 10)


def make(algorithm, layers):
    circuit = parse_circuit({"network": {"layers": layers}, "algorithm": {"name": algorithm}, "seed": 5}, "net.yaml")
    torch.manual_seed(0)
    rule = build(circuit, SHAPE, 5).double()
    with torch.no_grad():  # nonzero biases, so a bias mistake shows
        for layer in rule.net.layers:
            if getattr(layer, "bias", None) is not None:
                layer.bias.uniform_(-0.3, 0.3)
    x = torch.randn(6, *SHAPE, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 1, 2, 3, 4, 0])
    return rule, x.flatten(1), y


def grads_of(rule):
    return [p.grad.clone() for p in rule.net.forward_params()]


def bp_grads(rule, x, y):
    return torch.autograd.grad(rule.loss(rule.net(x)[-1], y), rule.net.forward_params())


def output_error(rule, x, y):
    """e = ∂(mean cross-entropy)/∂a_L for a linear output layer."""
    out = rule.net(x)[-1].detach()
    return (out.softmax(1) - F.one_hot(y, 5)) / len(y)


@pytest.mark.parametrize("layers", [LENET, LOCAL], ids=["lenet", "local"])
def test_fa_with_feedback_equal_to_the_weights_is_bp(layers):
    rule, x, y = make("fa", layers)
    for l, layer in enumerate(rule.net.layers, start=1):
        if rule.feedback_matrix(l) is not None:
            rule.feedback_matrix(l).copy_(layer.weight.detach())
    rule.grads(x, y)
    for ours, ref in zip(grads_of(rule), bp_grads(rule, x, y), strict=True):
        torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("layers", [LENET, LOCAL], ids=["lenet", "local"])
def test_fa_random_feedback_has_the_weights_shapes_and_differs_from_bp_below_the_top(layers):
    rule, x, y = make("fa", layers)
    for l, layer in enumerate(rule.net.layers, start=1):
        B = rule.feedback_matrix(l)
        assert (B is None) == (l == 1 or not list(layer.parameters()))
        assert B is None or B.shape == layer.weight.shape
    rule.grads(x, y)
    ours, ref = grads_of(rule), bp_grads(rule, x, y)
    torch.testing.assert_close(ours[-2], ref[-2])  # the output layer sees the true error
    assert angle_deg(ours[0], ref[0]) > 1.0


def test_fa_conv_net_matches_a_backward_pass_written_by_hand():
    """Transposed convolution with the fixed random kernel, max-unpooling at the forward
    indices, Bᵀ for the dense layers, with torch's own primitives."""
    rule, x, y = make("fa", LENET)
    rule.grads(x, y)
    c1, c2, pool, _, d1, d2 = rule.net.layers
    B2, B5, B6 = rule.B2, rule.B5, rule.B6
    h0 = x.reshape(-1, *SHAPE)
    with torch.no_grad():
        a1 = F.conv2d(h0, c1.weight, c1.bias, padding=1)
        h1, i1 = F.max_pool2d(torch.tanh(a1), 2, return_indices=True)
        a2 = F.conv2d(h1, c2.weight, c2.bias)
        s2 = F.leaky_relu(a2, 0.01)
        h3, i3 = F.max_pool2d(s2, 2, return_indices=True)
        a5 = h3.flatten(1) @ d1.weight.T + d1.bias
        h5 = torch.tanh(a5)
        e = output_error(rule, x, y)
        d5 = (e @ B6) * (1 - h5**2)
        g3 = (d5 @ B5).reshape(h3.shape)
        d2_ = F.max_unpool2d(g3, i3, 2, output_size=s2.shape[-2:]) * torch.where(a2 > 0, 1.0, torch.full_like(a2, 0.01))
        g1 = F.conv_transpose2d(d2_, B2)
        d1_ = F.max_unpool2d(g1, i1, 2, output_size=a1.shape[-2:]) * (1 - torch.tanh(a1) ** 2)
    expected = {
        c1.weight: conv2d_weight(h0, c1.weight.shape, d1_, padding=1), c1.bias: d1_.sum((0, 2, 3)),
        c2.weight: conv2d_weight(h1, c2.weight.shape, d2_), c2.bias: d2_.sum((0, 2, 3)),
        d1.weight: d5.T @ h3.flatten(1), d1.bias: d5.sum(0),
        d2.weight: e.T @ h5, d2.bias: e.sum(0),
    }
    for p, ref in expected.items():
        torch.testing.assert_close(p.grad, ref, rtol=1e-10, atol=1e-12)


def test_fa_local_net_sends_the_error_through_the_transposed_random_untied_map():
    """The error reaching h_1 is (∂/∂h) <local_apply(h, B_2), δ_2>, by autograd on the forward
    map with B_2 in place of W_2 (not the fold-based transpose the rule uses)."""
    rule, x, y = make("fa", LOCAL)
    rule.grads(x, y)
    l1, l2 = rule.net.layers[:2]
    h0 = x.reshape(-1, *SHAPE)
    hs = [h.detach() for h in rule.net(x)]
    e = output_error(rule, x, y)
    d3 = (e @ rule.B4) * (1 - hs[3] ** 2)
    d2 = (d3 @ rule.B3).reshape(hs[2].shape) * (1 - hs[2] ** 2)
    h1 = hs[1].clone().requires_grad_()
    (g1,) = torch.autograd.grad(local_apply(h1, rule.B2, 3, 1, 0), h1, d2.flatten(2))
    d1 = g1 * (1 - hs[1] ** 2)
    patches = F.unfold(h0, 3, padding=1, stride=2)  # [N, C k k, L]
    expected_w1 = torch.einsum("nol,nil->loi", d1.flatten(2), patches)
    torch.testing.assert_close(l1.weight.grad, expected_w1, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(l1.bias.grad, d1.sum(0), rtol=1e-10, atol=1e-12)
    expected_w2 = torch.einsum("nol,nil->loi", d2.flatten(2), F.unfold(hs[1], 3))
    torch.testing.assert_close(l2.weight.grad, expected_w2, rtol=1e-10, atol=1e-12)


def test_dfa_deltas_on_conv_pool_and_local_layers_match_a_hand_computation():
    layers = [LENET[0], {"type": "local", "channels": 2, "kernel": 3, "stride": 1, "activation": "tanh"},
              LENET[2], {"type": "dense", "size": 7, "activation": "tanh"}, LENET[-1]]
    rule, x, y = make("dfa", layers)
    rule.grads(x, y)
    c1, lc2, pool, d4, d5 = rule.net.layers
    assert not hasattr(rule, "B3") and rule.B1.shape == (5, 3 * 5 * 5) and rule.B2.shape == (5, 2 * 5 * 5)
    h0 = x.reshape(-1, *SHAPE)
    hs = [h.detach() for h in rule.net(x)]
    e = output_error(rule, x, y)
    with torch.no_grad():
        a1 = F.conv2d(h0, c1.weight, c1.bias, padding=1)
        _, i1 = F.max_pool2d(a1.tanh(), 2, return_indices=True)
        delta1 = (e @ rule.B1).reshape(hs[1].shape)
        g1 = F.max_unpool2d(delta1, i1, 2, output_size=a1.shape[-2:]) * (1 - a1.tanh() ** 2)
        g2 = (e @ rule.B2).reshape(hs[2].shape) * (1 - hs[2] ** 2)
        g4 = (e @ rule.B4) * (1 - hs[4] ** 2)
    torch.testing.assert_close(c1.weight.grad, conv2d_weight(h0, c1.weight.shape, g1, padding=1), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(c1.bias.grad, g1.sum((0, 2, 3)), rtol=1e-10, atol=1e-12)
    expected_w2 = torch.einsum("nol,nil->loi", g2.flatten(2), F.unfold(hs[1], 3, padding=1))
    torch.testing.assert_close(lc2.weight.grad, expected_w2, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(lc2.bias.grad, g2.sum(0), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(d4.weight.grad, g4.T @ hs[3].flatten(1), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(d5.weight.grad, e.T @ hs[4], rtol=1e-10, atol=1e-12)


def test_fa_refuses_layers_without_a_transposed_map_clearly():
    layers = [{"type": "patch_embed", "patch": 5, "channels": 4}, {"type": "mixer", "channel_hidden": 6},
              {"type": "gap"}, {"type": "dense", "size": 5, "activation": "linear"}]
    circuit = parse_circuit({"network": {"layers": layers}, "algorithm": {"name": "fa"}}, "mix.yaml")
    with pytest.raises(ConfigError, match=r"mix.yaml: network.layers: fa supports .* layer 2 is MixerMLP"):
        build(circuit, SHAPE, 5)


@pytest.mark.parametrize("algorithm", ["fa", "dfa"])
def test_fa_and_dfa_lower_the_training_loss_of_a_small_conv_net_on_digits(algorithm):
    circuit = parse_circuit({
        "network": {"layers": [
            {"type": "conv", "channels": 6, "kernel": 3, "pool": 2, "activation": "tanh"},
            {"type": "dense", "size": 32, "activation": "tanh"},
            {"type": "dense", "size": 10, "activation": "linear"}]},
        "algorithm": {"name": algorithm}, "optimizer": {"name": "adam", "lr": 0.01},
        "init": {"scheme": "glorot"}, "data": {"dataset": "digits", "batch_size": 32, "limit": 600}, "seed": 2,
    })
    session = Session(circuit, device="cpu")
    before = session.evaluate()
    for epoch in (1, 2, 3, 4):
        session.run_epoch(epoch)
    after = session.evaluate()
    assert after["train_loss"] < 0.4 * before["train_loss"]  # measured: 2.37 -> 0.36 (fa), 0.56 (dfa)
    assert after["train_error"] < 0.3
