"""tjml (seed 003 Algorithm 2): with analytical TJMC feedback and small β the weight updates
point along BP's, on an MLP, a small LeNet and an MLP-Mixer."""

from __future__ import annotations

import math

import pytest
import torch

from biotp.algorithms import build
from biotp.circuit import parse_circuit
from biotp.metrics import angle_deg

MLP = [{"type": "dense", "size": 12, "activation": "tanh", "repeat": 2}, {"type": "dense", "size": 4, "activation": "linear"}]
LENET = [{"type": "conv", "channels": 3, "kernel": 3, "pool": 2, "activation": "leaky_relu"},
         {"type": "conv", "channels": 4, "kernel": 3, "pool": 2, "activation": "tanh"},
         {"type": "dense", "size": 10, "activation": "tanh"}, {"type": "dense", "size": 4, "activation": "linear"}]
MIXER = [{"type": "patch_embed", "patch": 2, "channels": 6}, {"type": "mixer", "channel_hidden": 8, "token_hidden": 5},
         {"type": "gap"}, {"type": "dense", "size": 4, "activation": "linear"}]
NETS = {"mlp": (MLP, (8,)), "lenet": (LENET, (1, 8, 8)), "mixer": (MIXER, (2, 4, 4))}


def rule_for(layers, shape, **algorithm):
    c = parse_circuit({"seed": 3, "network": {"layers": layers}, "init": {"scheme": "glorot"},
                       "algorithm": {"name": "tjml", **algorithm}})
    return build(c, shape, 4).double()


def angles(rule, x, y):
    """Per population, the angle between the rule's update and BP's (all its parameters)."""
    rule.zero_grad(set_to_none=True)
    rule.grads(x, y)
    layers = [layer for layer in rule.net.layers if list(layer.parameters())]  # GAP has none
    ours = [torch.cat([p.grad.flatten() for p in layer.parameters()]) for layer in layers]
    rule.zero_grad(set_to_none=True)
    rule.loss(rule.net(x)[-1], y).backward()
    bp = [torch.cat([p.grad.flatten() for p in layer.parameters()]) for layer in layers]
    rule.zero_grad(set_to_none=True)
    return [angle_deg(a, b) for a, b in zip(ours, bp)], ours, bp


def data(shape, n=16):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, *shape, generator=g, dtype=torch.float64), torch.randint(0, 4, (n,), generator=g)


@pytest.mark.parametrize("net", NETS)
@pytest.mark.parametrize("act", ["varsigma", "hadamard"])
def test_small_beta_updates_align_with_bp(net, act):
    layers, shape = NETS[net]
    rule = rule_for(layers, shape, beta=1e-4, activation_feedback=act, layernorm_feedback="exact")
    got, ours, bp = angles(rule, *data(shape))
    assert max(got) < 1.0, got
    # the 1/(2β) of seed 003 eq. 5 makes the update BP's gradient itself, not only its direction
    for a, b in zip(ours, bp):
        assert (a - b).norm() < 1e-2 * b.norm()


def test_larger_beta_stays_within_ten_degrees_and_hadamard_is_exact_for_an_mlp():
    rule = rule_for(MLP, (8,), beta=0.05)
    assert max(angles(rule, *data((8,)))[0]) < 10
    rule = rule_for(MLP, (8,), beta=0.5, activation_feedback="hadamard")
    assert max(angles(rule, *data((8,)))[0]) < 1e-4  # linear G*: the targets are BP's at any β


def test_mixer_with_frozen_s_layernorm_feedback_is_close_to_bp():
    """Seed 003 eqs. 30-35 drop ∂s/∂x, so only the populations below a LayerNorm deviate."""
    rule = rule_for(MIXER, (2, 4, 4), beta=1e-4, layernorm_feedback="frozen_s")
    got = angles(rule, *data((2, 4, 4)))[0]
    assert got[-1] < 1e-3 and got[-2] < 1e-3 and max(got) < 30, got


def test_pseudo_inverse_and_inverse_conditions():
    square = [{"type": "dense", "size": 4, "activation": "tanh", "repeat": 2}, {"type": "dense", "size": 4, "activation": "linear"}]
    x, y = data((8,))
    for condition in ("pseudo_inverse", "inverse"):
        rule = rule_for(square, (8,), beta=1e-3, condition=condition)
        hs = rule.net(x)
        t = rule.targets(hs, y)
        # t_{l-1} = h_{l-1} + J⁻¹(t_l - h_l): one linearised step through f_l lands on t_l
        J = torch.func.vmap(torch.func.jacrev(lambda h: rule.net.layers[1](h[None])[0]))(hs[1])
        step = torch.einsum("noi,ni->no", J, t[1] - hs[1].detach())
        assert torch.allclose(step, t[2] - hs[2].detach(), atol=1e-10)
        rule.grads(x, y)
        assert all(torch.isfinite(p.grad).all() for p in rule.forward_params())
    with pytest.raises(Exception, match="square"):
        rule_for(MLP, (8,), condition="inverse").grads(x, y)


def test_tjml_lowers_the_loss():
    layers, shape = NETS["lenet"]
    rule = rule_for(layers, shape, beta=0.01).float()
    x, y = data(shape, 32)
    x = x.float()
    opt = torch.optim.SGD(rule.forward_params(), lr=0.3)
    first = None
    for _ in range(30):
        opt.zero_grad()
        loss = float(rule.grads(x, y).loss)
        first = loss if first is None else first
        opt.step()
    assert loss < 0.7 * first and math.isfinite(loss)
