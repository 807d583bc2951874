"""The MLP learning rules against independent computations: BP gradients, exact inverses,
hand-written formulas and seed 002's Theorem 1."""

import math

import pytest
import torch
from torch import nn

from biotp.algorithms import ALGORITHMS, Algorithm, build, layer_loss
from biotp.circuit import parse_circuit
from biotp.metrics import angle_deg


def make(algorithm, sizes=(12, 12, 12, 4), act="tanh", out="linear", loss="cross_entropy", **extra):
    layers = [{"size": s, "activation": act} for s in sizes[1:-1]] + [{"size": sizes[-1], "activation": out}]
    spec = {"name": algorithm, **extra}
    circuit = parse_circuit({"network": {"layers": layers}, "algorithm": spec, "loss": loss, "seed": 3})
    torch.manual_seed(0)
    rule = build(circuit, sizes[0], sizes[-1]).double()
    x = torch.randn(8, sizes[0], dtype=torch.float64)
    y = torch.randint(0, sizes[-1], (8,))
    return rule, x, y


def weight_grads(rule):
    return [layer.weight.grad.clone() for layer in rule.net.layers]


def bp_grads(rule, x, y):
    loss = rule.loss(rule.net(x)[-1], y)
    return torch.autograd.grad(loss, [layer.weight for layer in rule.net.layers])


def test_registry_keys_are_module_names():
    for name, cls in ALGORITHMS.items():
        assert cls.__module__.rsplit(".", 1)[1] == name


def test_bp_is_autograd_gradient():
    rule, x, y = make("bp")
    rule.grads(x, y)
    for ours, ref in zip(weight_grads(rule), bp_grads(rule, x, y)):
        torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-14)


def test_fa_with_transposed_weights_is_bp():
    rule, x, y = make("fa")
    for l, layer in enumerate(rule.net.layers[1:], start=2):
        getattr(rule, f"B{l}").copy_(layer.weight.detach())
    rule.grads(x, y)
    for ours, ref in zip(weight_grads(rule), bp_grads(rule, x, y)):
        torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-14)


def test_fa_with_random_feedback_differs_from_bp_below_the_top():
    rule, x, y = make("fa")
    rule.grads(x, y)
    ours, ref = weight_grads(rule), bp_grads(rule, x, y)
    torch.testing.assert_close(ours[-1], ref[-1])  # the output layer sees the true error
    assert angle_deg(ours[0], ref[0]) > 1.0


def test_dfa_matches_hand_written_deltas():
    rule, x, y = make("dfa")
    rule.grads(x, y)
    hs = [h.detach() for h in rule.net(x)]
    e = (hs[-1].softmax(1) - nn.functional.one_hot(y, 4)) / len(x)  # ∂(mean CE)/∂a_L
    for l in (1, 2):
        delta = (e @ getattr(rule, f"B{l}")) * (1 - hs[l] ** 2)
        torch.testing.assert_close(rule.net.layers[l - 1].weight.grad, delta.T @ hs[l - 1], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(rule.net.layers[2].weight.grad, e.T @ hs[2], rtol=1e-10, atol=1e-12)


class ExactInverse(nn.Module):
    """g = f⁻¹ for f(h) = act(W h + b) with square invertible W."""

    def __init__(self, layer, inverse_act):
        super().__init__()
        self.layer, self.inverse_act = layer, inverse_act

    def forward(self, h):
        w, b = self.layer.weight, self.layer.bias
        return torch.linalg.solve(w, (self.inverse_act(h) - b).T).T


def with_exact_inverses(rule, inverse_act):
    for l in range(2, rule.net.depth):
        rule.net.feedback[str(l)] = ExactInverse(rule.net.layers[l - 1], inverse_act)
    return rule


def test_dtp_with_exact_inverse_gives_tp_targets():
    dtp, x, y = make("dtp", sizes=(10, 10, 10, 10, 3), act="tanh", eta_hat=0.05)
    tp, _, _ = make("tp", sizes=(10, 10, 10, 10, 3), act="tanh", eta_hat=0.05)
    tp.load_state_dict(dtp.state_dict())
    for rule in (dtp, tp):
        with_exact_inverses(rule, torch.atanh)
    hs = dtp.net(x)
    t_dtp, t_tp = dtp.targets(hs, y), tp.targets(hs, y)
    assert set(t_dtp) == {1, 2, 3}
    for l in t_dtp:
        torch.testing.assert_close(t_dtp[l], t_tp[l], rtol=1e-9, atol=1e-10)
    # and both are the exact preimage of the penultimate target
    t = t_tp[3]
    for l in (3, 2):
        layer = dtp.net.layers[l - 1]
        t = torch.linalg.solve(layer.weight, (torch.atanh(t) - layer.bias).T).T
        torch.testing.assert_close(t_tp[l - 1], t, rtol=1e-9, atol=1e-10)


def test_dtp_targets_reduce_to_activities_when_penultimate_target_is_reached():
    """The difference correction: ĥ_l = h_l exactly when ĥ_{l+1} = h_{l+1}, whatever g is."""
    rule, x, y = make("dtp", eta_hat=1e-30)
    hs = rule.net(x)
    for l, t in rule.targets(hs, y).items():
        torch.testing.assert_close(t, hs[l].detach(), rtol=0, atol=1e-12)


def test_dtp_penultimate_update_is_bp_direction():
    """ĥ_{L-1} = h_{L-1} - η̂ ∂L/∂h_{L-1} makes layer L-1's local update parallel to BP's."""
    rule, x, y = make("dtp", eta_hat=1e-4)
    rule.grads(x, y, feedback=False)
    assert angle_deg(rule.net.layers[-2].weight.grad, bp_grads(rule, x, y)[-2]) < 1e-3


def _jacobian_above(rule, hs, i, derivative):
    """J_{f_{L-1}} ... J_{f_{i+1}} at one example: the Jacobian of h_{L-1} w.r.t. h_i."""
    n = hs[i].shape[1]
    jac = torch.eye(n, dtype=torch.float64)
    for k in range(i + 1, rule.net.depth):
        jac = torch.diag(derivative(hs[k][0])) @ rule.net.layers[k - 1].weight.detach() @ jac
    return jac


@pytest.mark.parametrize("act", ["linear", "tanh"])
def test_theorem_1_dtp_update_within_90_degrees_of_bp(act):
    """Seed 002 Theorem 1: with g = f⁻¹ and small η̂, cos α ≥ λmin/λmax of the Jacobian
    product above the layer (up to O(η̂)), so α < 90°.

    The theorem's layers are f_i = W_i s_i(h_{i-1}); ours are act(W_i h_{i-1}).  The bound is
    checked on the weight updates where the two coincide (linear hidden layers), and on the
    target displacement ĥ_i - h_i against -∂L/∂h_i (the theorem's J⁻¹l versus Jᵀl) for tanh,
    where the weight updates must still lie within 90° of BP's.
    """
    inverse = {"linear": lambda h: h, "tanh": torch.atanh}[act]
    derivative = {"linear": torch.ones_like, "tanh": lambda h: 1 - h**2}[act]
    for trial in range(5):
        rule, x, y = make("dtp", sizes=(8, 8, 8, 8, 3), act=act, eta_hat=1e-6)
        x, y = x[trial : trial + 1], y[trial : trial + 1]  # the theorem is per example
        with_exact_inverses(rule, inverse)
        rule.grads(x, y, feedback=False)
        ours, ref = weight_grads(rule), bp_grads(rule, x, y)
        hs = [h.detach() for h in rule.net(x)]
        targets = rule.targets(rule.net(x), y)
        for i in (1, 2):  # layers whose targets come through the inverses
            s = torch.linalg.svdvals(_jacobian_above(rule, hs, i, derivative))
            bound = float(s.min() / s.max())
            h_i = hs[i].clone().requires_grad_()
            h = h_i
            for layer in rule.net.layers[i:]:
                h = layer(h)
            (dl_dh,) = torch.autograd.grad(rule.loss(h, y), h_i)
            cos_targets = math.cos(math.radians(angle_deg(targets[i] - hs[i], -dl_dh)))
            assert cos_targets >= bound - 1e-4, (trial, i, cos_targets, bound)
            cos_weights = math.cos(math.radians(angle_deg(ours[i - 1], ref[i - 1])))
            assert cos_weights > 0, (trial, i)
            if act == "linear":
                assert cos_weights >= bound - 1e-4, (trial, i, cos_weights, bound)


def test_inverse_losses_noise_preserving_versus_denoising():
    torch.manual_seed(5)
    for name, denoise in (("dtp", False), ("sdtp", True)):
        rule, x, y = make(name)
        rule.noise = 0.3
        hs = [h.detach() for h in rule.net(x)]
        torch.manual_seed(11)
        got = rule.inverse_loss(hs)
        torch.manual_seed(11)
        want = 0.0
        top = rule.net.depth if denoise else rule.net.depth - 1
        for l in range(2, top + 1):
            h = hs[l - 1]
            noisy = h + 0.3 * torch.randn_like(h)
            code = rule.net.layers[l - 1](noisy)
            if l == rule.net.depth:
                code = code.softmax(1)  # g_L reads the class probabilities
            rec = rule.net.feedback[str(l)](code)
            want = want + ((rec - (h if denoise else noisy)) ** 2).sum(1).mean()
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_sdtp_top_target_uses_the_label_not_the_gradient():
    rule, x, y = make("sdtp")
    hs = rule.net(x)
    g = rule.net.feedback[str(rule.net.depth)]
    want = hs[-2] - g(hs[-1].softmax(1)) + g(nn.functional.one_hot(y, 4).double())
    torch.testing.assert_close(rule.targets(hs, y)[rule.net.depth - 1], want.detach())


def test_ao_sdtp_auxiliary_features_are_fixed_and_used():
    rule, x, y = make("ao_sdtp", aux_units=7)
    assert "R" in dict(rule.named_buffers()) and all(p is not rule.R for p in rule.parameters())
    hs = rule.net(x)
    z = torch.tanh(hs[-2] @ rule.R.T)
    g = rule.net.feedback[str(rule.net.depth)]
    o, o_hat = hs[-1].softmax(1), nn.functional.one_hot(y, 4).double()
    want = hs[-2] - g(torch.cat([o, z], 1)) + g(torch.cat([o_hat, z], 1))
    torch.testing.assert_close(rule.targets(hs, y)[rule.net.depth - 1], want.detach())
    assert g.weight.shape == (12, 4 + 7)


def test_fwdtp_never_trains_feedback():
    rule, x, y = make("fwdtp")
    before = {k: v.clone() for k, v in rule.net.feedback.state_dict().items()}
    rule.grads(x, y)
    assert rule.feedback_params() == []
    assert all(p.grad is None for p in rule.net.feedback.parameters())
    assert all(torch.equal(before[k], v) for k, v in rule.net.feedback.state_dict().items())


def test_fwdtp_targets_are_the_difference_correction_through_its_fixed_feedback():
    """Seed 002 eq. 3.15 written out: the penultimate target is a gradient step of the summed
    loss, each target below h_{l-1} + g_l(t_l) - g_l(h_l) through fwdtp's untrained g_l."""
    rule, x, y = make("fwdtp", eta_hat=0.05)
    hs = [h.detach() for h in rule.net(x)]
    got = rule.targets(rule.net(x), y)
    L = rule.net.depth
    h = hs[L - 1].clone().requires_grad_()
    loss = nn.functional.cross_entropy(rule.net.layers[L - 1](h), y, reduction="sum")
    (grad,) = torch.autograd.grad(loss, h)
    t, want = hs[L - 1] - 0.05 * grad, {}
    want[L - 1] = t
    for l in range(L - 1, 1, -1):
        g = rule.net.feedback[str(l)]
        t = hs[l - 1] + g(t) - g(hs[l])
        want[l - 1] = t.detach()
    assert set(got) == set(want)
    for l in want:
        torch.testing.assert_close(got[l], want[l], rtol=1e-12, atol=1e-13)


def test_tp_family_forward_grads_are_local_losses():
    """Fusing every layer's loss in one backward equals one backward per loss."""
    rule, x, y = make("dtp")
    torch.manual_seed(2)
    rule.grads(x, y)
    fused = [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in rule.parameters()]
    rule.zero_grad()
    hs = rule.net(x, local=True)
    targets = rule.targets(hs, y)
    separate = {id(p): torch.zeros_like(p) for p in rule.parameters()}
    losses = [rule.loss(hs[-1], y)] + [layer_loss(hs[l], t) for l, t in targets.items()]
    torch.manual_seed(2)
    losses.append(rule.inverse_loss(hs))
    for loss in losses:
        params = [p for p in rule.parameters()]
        for p, g in zip(params, torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)):
            if g is not None:
                separate[id(p)] += g
    for p, f in zip(rule.parameters(), fused):
        torch.testing.assert_close(f, separate[id(p)], rtol=1e-12, atol=1e-14)


def test_mse_loss_with_half_step_reaches_the_label():
    """Seed 002 after eq. 3.7: with the MSE loss and η̂ = 0.5, ĥ_M = y."""
    rule, x, y = make("dtp", loss="mse")
    out = rule.net(x)[-1].detach().requires_grad_()
    (grad,) = torch.autograd.grad(rule.loss(out, y, reduction="sum"), out)
    torch.testing.assert_close(out - 0.5 * grad, nn.functional.one_hot(y, 4).double())


@pytest.mark.parametrize("name", ["fa", "dfa", "fwdtp"])
def test_random_feedback_rules_reject_learned_feedback(name):
    from biotp.errors import ConfigError

    circuit = parse_circuit({"network": {"layers": [{"size": 5}, {"size": 3}]}, "algorithm": {"name": name},
                             "feedback": {"kind": "learned"}}, "c.yaml")
    with pytest.raises(ConfigError, match=r"c.yaml: feedback.kind: .*random"):
        build(circuit, 4, 3)


def test_rules_are_final_and_one_level_below_their_base():
    """No rule inherits from another: each subclasses `Algorithm` or the abstract
    `TargetPropagation` directly (issue 12: the hierarchy flattened)."""
    from biotp.algorithms.propagation import TargetPropagation
    from biotp.autoencoder import EncoderInverseDTP

    rules = [*ALGORITHMS.values(), EncoderInverseDTP]
    for cls in rules:
        assert cls.__bases__ in ((Algorithm,), (TargetPropagation,)), (cls, cls.__bases__)
        assert not any(issubclass(cls, other) for other in rules if other is not cls), cls
    assert TargetPropagation not in ALGORITHMS.values()
