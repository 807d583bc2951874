"""Layers: forward maps against independent implementations, and the analytical feedback G*
of seed 003 against autograd Jacobians (TJMC: J_G = J_fᵀ, float64)."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from biotp.circuit import parse_circuit
from biotp.layers import (Conv, Dense, FeedbackOptions, Flatten, GlobalAvgPool, LayerNorm, LocalFeedback,
                          LocallyConnected, MaxPool, MixerBlock, MixerMLP, analytical_feedback, unpool)
from biotp.metrics import flat_jacobian, jacobian_matching_loss, layer_jmls
from biotp.network import Network

TOL = 1e-10


def randomised(layer, seed=0):
    g = torch.Generator().manual_seed(seed)
    layer = layer.double()
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64) * 0.5)
    return layer


def dense_on(shape, act):
    layer = Dense(int(torch.tensor(shape).prod()), 5, act)
    layer.in_shape = shape
    return layer


CASES = {
    "dense_tanh": (lambda: Dense(6, 4, "tanh"), (6,), "varsigma"),
    "dense_sigmoid": (lambda: Dense(6, 4, "sigmoid"), (6,), "varsigma"),
    "dense_leaky": (lambda: Dense(6, 4, "leaky_relu"), (6,), "varsigma"),
    "dense_tanh_hadamard": (lambda: Dense(6, 4, "tanh"), (6,), "hadamard"),
    "dense_after_spatial": (lambda: dense_on((2, 3, 3), "tanh"), (2, 3, 3), "varsigma"),
    "conv_same": (lambda: Conv((2, 5, 5), 3, 3, 1, 1, "tanh"), (2, 5, 5), "varsigma"),
    "conv_stride2_odd": (lambda: Conv((2, 6, 6), 3, 3, 2, 1, "tanh"), (2, 6, 6), "varsigma"),
    "conv_pool": (lambda: Conv((1, 6, 6), 2, 3, 1, 0, "leaky_relu", pool=2), (1, 6, 6), "varsigma"),
    "conv_pool_hadamard": (lambda: Conv((1, 6, 6), 2, 3, 1, 1, "tanh", pool=2), (1, 6, 6), "hadamard"),
    "patch_embed": (lambda: Conv((2, 4, 4), 3, 2, 2, 0, "linear", tokens=True), (2, 4, 4), "varsigma"),
    "maxpool": (lambda: MaxPool((2, 4, 4), 2), (2, 4, 4), "varsigma"),
    "maxpool_overlapping": (lambda: MaxPool((1, 5, 5), 3, 2), (1, 5, 5), "varsigma"),
    "local_same": (lambda: LocallyConnected((2, 4, 4), 3, 3, 1, 1, "tanh"), (2, 4, 4), "varsigma"),
    "local_stride2": (lambda: LocallyConnected((2, 5, 5), 2, 3, 2, 1, "relu"), (2, 5, 5), "varsigma"),
    "layernorm_exact": (lambda: LayerNorm((3, 5), affine=True), (3, 5), "varsigma"),
    "gap_spatial": (lambda: GlobalAvgPool((3, 2, 4)), (3, 2, 4), "varsigma"),
    "gap_tokens": (lambda: GlobalAvgPool((4, 3)), (4, 3), "varsigma"),
    "flatten": (lambda: Flatten((2, 3, 2)), (2, 3, 2), "varsigma"),
    "mixer_token": (lambda: MixerMLP((4, 3), "token", None, "leaky_relu"), (4, 3), "varsigma"),
    "mixer_token_hidden": (lambda: MixerMLP((4, 3), "token", 5, "tanh"), (4, 3), "varsigma"),
    "mixer_channel": (lambda: MixerMLP((4, 3), "channel", 6, "leaky_relu"), (4, 3), "varsigma"),
    "mixer_block": (lambda: MixerBlock((4, 3), 5, 6, "tanh"), (4, 3), "varsigma"),
}


@pytest.mark.parametrize("name", CASES)
def test_analytical_feedback_jacobian_is_forward_jacobian_transposed(name):
    make, shape, act_fb = CASES[name]
    layer = randomised(make())
    h_prev = torch.randn(3, *shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    G = analytical_feedback(layer, FeedbackOptions(activation=act_fb, layernorm="exact"))
    assert layer_jmls(layer, G, h_prev, kinds=("T",), examples=3)["T"] < TOL


def frozen_s_layernorm(layer, x):
    """LayerNorm with s held constant (seed 003 eq. 34: s 'needs to be frozen')."""
    y, root_s = layer.normalise(x)
    root_s = root_s.detach()
    out = (x - x.mean(-1, keepdim=True)) / root_s
    return out * layer.gamma + layer.beta


def test_layernorm_frozen_s_is_transpose_of_the_frozen_map_only():
    layer = randomised(LayerNorm((3, 5), affine=True))
    x = torch.randn(1, 3, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    G = analytical_feedback(layer, FeedbackOptions(layernorm="frozen_s"))
    ctx = G.context(x, layer(x))
    J_g = flat_jacobian(lambda t: G(t, ctx), layer(x))
    assert jacobian_matching_loss(J_g, flat_jacobian(lambda z: frozen_s_layernorm(layer, z), x)) < TOL
    assert jacobian_matching_loss(J_g, flat_jacobian(layer, x)) > 1e-2  # eqs. 30-35 drop the ∂s/∂x term


def test_conv_feedback_is_convolution_with_rotated_kernel():
    """Seed 003 eq. 20: G*(t) = ROT(W) * t with in/out channels swapped (stride 1)."""
    layer = randomised(Conv((2, 6, 6), 3, 3, 1, 1, "linear"))
    t = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    G = analytical_feedback(layer)
    rotated = layer.weight.flip(2, 3).transpose(0, 1)
    expected = F.conv2d(t, rotated, padding=3 - 1 - 1)
    assert torch.allclose(G(t, G.context(torch.zeros(2, 2, 6, 6, dtype=torch.float64), t)), expected, atol=TOL)


def test_max_unpool_places_values_at_max_positions():
    x = torch.tensor([[[[1.0, 5.0, 0.0, 2.0],
                        [3.0, 4.0, 7.0, 1.0],
                        [0.0, 0.5, 9.0, 8.0],
                        [6.0, 0.1, 3.0, 2.0]]]])
    pool = MaxPool((1, 4, 4), 2)
    t = torch.tensor([[[[10.0, 20.0], [30.0, 40.0]]]])
    G = analytical_feedback(pool)
    out = G(t, G.context(x, pool(x)))
    expected = torch.zeros(1, 1, 4, 4)
    expected[0, 0, 0, 1], expected[0, 0, 1, 2], expected[0, 0, 3, 0], expected[0, 0, 2, 2] = 10, 20, 30, 40
    assert torch.equal(out, expected)
    idx = F.max_pool2d(x, 2, return_indices=True)[1]
    assert torch.equal(unpool(t, idx, (4, 4)), F.max_unpool2d(t, idx, 2))  # = MaxUnpool without overlaps


def local_loop(x, weight, bias, kernel, stride, padding, channels):
    """Locally connected layer by explicit loops over positions, channels and taps."""
    n, c, hh, ww = x.shape
    xp = F.pad(x, (padding,) * 4)
    ho, wo = (hh + 2 * padding - kernel) // stride + 1, (ww + 2 * padding - kernel) // stride + 1
    out = torch.zeros(n, channels, ho, wo, dtype=x.dtype)
    for i in range(ho):
        for j in range(wo):
            w = weight[i * wo + j].reshape(channels, c, kernel, kernel)
            for o in range(channels):
                for ci in range(c):
                    for a in range(kernel):
                        for b in range(kernel):
                            out[:, o, i, j] += w[o, ci, a, b] * xp[:, ci, i * stride + a, j * stride + b]
            out[:, :, i, j] += bias[:, i, j]
    return out


@pytest.mark.parametrize("stride,padding", [(1, 1), (2, 1), (2, 0)])
def test_locally_connected_forward_matches_explicit_loop(stride, padding):
    layer = randomised(LocallyConnected((2, 5, 5), 3, 3, stride, padding, "linear"))
    x = torch.randn(2, 2, 5, 5, dtype=torch.float64)
    expected = local_loop(x, layer.weight, layer.bias, 3, stride, padding, 3)
    assert torch.allclose(layer(x), expected, atol=TOL)


def test_locally_connected_learned_inverse_with_tied_weights_is_the_transpose():
    """Seed 004 §5.4: V = Wᵀ computed as the gradient of a dummy forward z = W x."""
    layer = randomised(LocallyConnected((2, 5, 5), 3, 3, 2, 1, "linear"))
    g = LocalFeedback(layer, "linear").double()
    with torch.no_grad():
        g.weight.copy_(layer.weight)
        g.bias.zero_()
    y = torch.randn(2, *layer.out_shape, dtype=torch.float64)
    x = torch.zeros(2, *layer.in_shape, dtype=torch.float64, requires_grad=True)
    z = layer.pre(x) - layer.bias
    (vjp,) = torch.autograd.grad(z, x, y)
    assert torch.allclose(g(y), vjp, atol=TOL)
    J = flat_jacobian(lambda v: layer.pre(v), torch.zeros(1, *layer.in_shape, dtype=torch.float64))
    assert torch.allclose(g(y[:1]).flatten(), J.T @ y[0].flatten(), atol=TOL)


def test_pjml_and_ijml_of_exact_inverse_are_zero():
    layer = randomised(Dense(4, 4, "linear"))
    W = layer.weight.detach()
    inverse = lambda t: (t - layer.bias) @ torch.linalg.inv(W).T  # noqa: E731
    h = torch.randn(2, 4, dtype=torch.float64)
    jml = layer_jmls(layer, inverse, h, examples=2)
    assert jml["I"] < TOL and jml["P"] < TOL and jml["T"] > 0.1


def test_network_builds_spatial_layers_and_learned_feedback_shapes():
    c = parse_circuit({"network": {"layers": [
        {"type": "conv", "channels": 4, "kernel": 5, "pool": 2}, {"type": "local", "channels": 3, "stride": 2},
        {"type": "maxpool"}, {"type": "dense", "size": 8}, {"type": "dense", "size": 10, "activation": "linear"}]}})
    net = Network(c, (1, 12, 12), with_feedback=True)
    assert net.shapes == [(1, 12, 12), (4, 6, 6), (3, 3, 3), (3, 1, 1), (8,), (10,)]  # padding "same"
    hs = net(torch.rand(3, 144))  # flat input is reshaped to the input shape
    assert [tuple(h.shape[1:]) for h in hs] == net.shapes
    for l, g in net.feedback.items():
        assert g(hs[int(l)]).shape == hs[int(l) - 1].shape
    mixer = parse_circuit({"network": {"layers": [
        {"type": "patch_embed", "patch": 4, "channels": 8}, {"type": "mixer", "channel_hidden": 16},
        {"type": "gap"}, {"type": "dense", "size": 10, "activation": "linear"}]}})
    net = Network(mixer, (3, 8, 8), with_feedback=True)
    assert net.shapes == [(3, 8, 8), (4, 8), (4, 8), (4, 8), (8,), (10,)]
    hs = net(torch.rand(2, 3, 8, 8))
    for l, g in net.feedback.items():
        assert g(hs[int(l)]).shape == hs[int(l) - 1].shape


@pytest.mark.parametrize("name", ["tjml_lenet_mnist", "tjml_vgg_cifar10", "tjml_mixer_cifar10",
                                  "bartunov_mnist_lc", "bartunov_cifar10_lc"])
def test_architecture_circuits_parse(name):
    from pathlib import Path

    from biotp.circuit import load_circuit

    c = load_circuit(Path(__file__).parent.parent / "circuits" / f"{name}.yaml")
    assert c.network.layers[-1].size == 10 and isinstance(c.network.input, list)
