"""The fast path of tp, dtp, sdtp and ao_sdtp (closed-form, layer-batched local losses,
`biotp.algorithms.fused`) against a straightforward per-layer reference written here.

The reference shares nothing with the rules but the network they build: it reads the weights,
runs the forward pass itself, computes each target from the paper's formula and each weight
update by plain autograd on one layer's loss at a time (seed 002 Algorithm 1, eqs. 3.7, 3.9,
3.13, 3.15; seed 004 Algorithm 1, eq. 3).  The inverse losses' noise is the global generator's,
seeded, drawn per layer from the bottom up (the order the rules draw it); noise 0 is tested too.
Targets are compared as the rule computed them in the same call (recorded from `targets`).
"""

import pytest
import torch
from torch.nn import functional as F

from biotp.algorithms import build
from biotp.circuit import parse_circuit

ACT = {"tanh": torch.tanh, "sigmoid": torch.sigmoid, "relu": torch.relu, "linear": lambda a: a,
       "leaky_relu": lambda a: F.leaky_relu(a, 0.01)}
TOL = {torch.float32: 1e-6, torch.float64: 1e-12}
RULES = ["tp", "dtp", "sdtp", "ao_sdtp"]
EXTRA = {"tp": {"eta_hat": 0.3}, "dtp": {"eta_hat": 0.3}, "ao_sdtp": {"aux_units": 4}}
NETS = {  # (input, hidden sizes..., classes), activation
    "equal": ((12, 9, 9, 9, 9, 5), "tanh"),
    "mixed": ((10, 8, 6, 6, 8, 4), "tanh"),
    "sigmoid": ((7, 6, 6, 6, 3), "sigmoid"),
    "leaky": ((7, 6, 6, 6, 3), "leaky_relu"),
    "shallow": ((6, 5, 3), "tanh"),
}


def make(rule, sizes, act, noise, dtype, seed=5):
    layers = [{"size": s, "activation": act} for s in sizes[1:-1]] + [{"size": sizes[-1], "activation": "linear"}]
    circuit = parse_circuit({
        "network": {"layers": layers}, "loss": "cross_entropy", "seed": seed,
        "algorithm": {"name": rule, **EXTRA.get(rule, {})},
        "feedback": {"noise": noise},
    })
    net_rule = build(circuit, sizes[0], sizes[-1]).to(dtype)
    g = torch.Generator().manual_seed(seed + 11)
    x = torch.randn(16, sizes[0], generator=g, dtype=dtype)
    y = torch.randint(0, sizes[-1], (16,), generator=g)
    return net_rule, x, y


# ------------------------------------------------------------------ the reference
def dense(m, h):
    return ACT[m.act_name](h @ m.weight.T + m.bias)


def layer_grads(m, h_in, target):
    """∂/∂(W, b) of ||act(W h_in + b) - target||² / B, one layer, by autograd."""
    w, b = m.weight.detach().requires_grad_(), m.bias.detach().requires_grad_()
    out = ACT[m.act_name](h_in.detach() @ w.T + b)
    loss = ((out - target.detach()) ** 2).sum() / out.shape[0]
    return torch.autograd.grad(loss, (w, b))


def reference(rule, x, y, noise_seed):
    """({l: ĥ_l}, {parameter name: update}) of one batch, computed layer by layer."""
    name, net, L = rule.name, rule.net, rule.net.depth
    f = {l: net.layers[l - 1] for l in range(1, L + 1)}
    g = {int(k): m for k, m in net.feedback.items()}
    with torch.no_grad():
        hs = [x]
        for l in range(1, L + 1):
            hs.append(dense(f[l], hs[-1]))
    n_classes = hs[-1].shape[1]
    onehot = F.one_hot(y, n_classes).to(x.dtype)

    def code_of(h_prev, out):  # what g_L reads (sdtp: class probabilities; ao_sdtp: with z = σ(R h))
        p = out.softmax(1)
        return p if name == "sdtp" else torch.cat([p, ACT[rule.spec.aux_activation](h_prev @ rule.R.T)], 1)

    t = {}
    with torch.no_grad():
        if name in ("tp", "dtp"):  # seed 002 eq. 3.7 at the penultimate layer
            h = hs[L - 1].clone().requires_grad_()
            with torch.enable_grad():
                (grad,) = torch.autograd.grad(F.cross_entropy(dense(f[L], h), y, reduction="sum"), h)
            t[L - 1] = hs[L - 1] - rule.spec.eta_hat * grad
        else:  # seed 004 Algorithm 1 / eq. 3: ĥ_{L-1} = h - g(code(h_L)) + g(code with ô = label)
            code = code_of(hs[L - 1], hs[L])
            best = torch.cat([onehot, code[:, n_classes:]], 1)
            t[L - 1] = hs[L - 1] - dense(g[L], code) + dense(g[L], best)
        for l in range(L - 1, 1, -1):
            if name == "tp":  # eq. 3.9
                t[l - 1] = dense(g[l], t[l])
            else:  # eq. 3.15
                t[l - 1] = hs[l - 1] + dense(g[l], t[l]) - dense(g[l], hs[l])

    grads = {}
    for l in range(1, L):
        grads[f"net.layers.{l - 1}.weight"], grads[f"net.layers.{l - 1}.bias"] = layer_grads(f[l], hs[l - 1], t[l])
    w, b = f[L].weight.detach().requires_grad_(), f[L].bias.detach().requires_grad_()
    grads[f"net.layers.{L - 1}.weight"], grads[f"net.layers.{L - 1}.bias"] = torch.autograd.grad(
        F.cross_entropy(hs[L - 1] @ w.T + b, y), (w, b))

    inverse = range(2, L) if name in ("tp", "dtp") else range(2, L + 1)
    if len(inverse):
        torch.manual_seed(noise_seed)
        for l in inverse:
            noisy = hs[l - 1] + rule.noise * torch.randn(hs[l - 1].shape, dtype=x.dtype)
            with torch.no_grad():
                code = dense(f[l], noisy)
                if l == L:
                    code = code_of(noisy, code)
            r = noisy if name in ("tp", "dtp") else hs[l - 1]  # noise-preserving / de-noising
            grads[f"net.feedback.{l}.weight"], grads[f"net.feedback.{l}.bias"] = layer_grads(g[l], code, r)
    return t, grads


# ------------------------------------------------------------------ the comparison
def run_rule(rule, x, y, noise_seed):
    recorded = {}
    descend = rule.descend  # the targets, top down, as the rule computes them

    def record(hs, y):
        for l, t in descend(hs, y):
            recorded[l] = t.clone()
            yield l, t

    rule.descend = record
    rule.zero_grad(set_to_none=True)
    torch.manual_seed(noise_seed)
    rule.grads(x, y)
    del rule.descend
    return recorded, {n: p.grad for n, p in rule.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("net", list(NETS))
@pytest.mark.parametrize("name", RULES)
@pytest.mark.parametrize("noise", [0.0, 0.3])
def test_fast_path_equals_the_per_layer_reference(name, net, dtype, noise):
    sizes, act = NETS[net]
    rule, x, y = make(name, sizes, act, noise, dtype)
    assert rule.fusable()  # the fast path is what is tested
    targets, grads = run_rule(rule, x, y, noise_seed=17)
    ref_targets, ref_grads = reference(rule, x, y, noise_seed=17)
    tol = TOL[dtype]
    assert sorted(targets) == sorted(ref_targets)
    for l in ref_targets:
        torch.testing.assert_close(targets[l], ref_targets[l], rtol=tol, atol=tol, msg=lambda m: f"target {l}: {m}")
    assert sorted(grads) == sorted(ref_grads)
    for k in ref_grads:
        torch.testing.assert_close(grads[k], ref_grads[k], rtol=tol, atol=tol, msg=lambda m: f"{k}: {m}")


@pytest.mark.parametrize("name", RULES)
def test_graph_path_equals_the_reference_too(name):
    """The general path (any layer type) on the same nets: both paths compute the rule."""
    rule, x, y = make(name, *NETS["mixed"], 0.3, torch.float64)
    rule.fuse = False
    assert not rule.fusable()
    targets, grads = run_rule(rule, x, y, noise_seed=3)
    ref_targets, ref_grads = reference(rule, x, y, noise_seed=3)
    for l in ref_targets:
        torch.testing.assert_close(targets[l], ref_targets[l], rtol=1e-12, atol=1e-12)
    for k in ref_grads:
        torch.testing.assert_close(grads[k], ref_grads[k], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", RULES)
def test_feedback_only_and_forward_only_passes(name):
    """The alternating schedule's passes: each trains only its own parameters, with the same updates."""
    rule, x, y = make(name, *NETS["equal"], 0.3, torch.float64)
    _, ref_grads = reference(rule, x, y, noise_seed=9)
    for forward, feedback in ((True, False), (False, True)):
        rule.zero_grad(set_to_none=True)
        torch.manual_seed(9)
        rule.grads(x, y, forward=forward, feedback=feedback)
        grads = {n: p.grad for n, p in rule.named_parameters() if p.grad is not None}
        want = {k: v for k, v in ref_grads.items() if k.startswith("net.layers" if forward else "net.feedback")}
        assert sorted(grads) == sorted(want)
        for k in want:
            torch.testing.assert_close(grads[k], want[k], rtol=1e-12, atol=1e-12)


def test_a_transmission_or_hook_takes_the_graph():
    """Where the closed form does not hold (a discrete transmission), the rule is not fused."""
    layers = [{"size": 6, "activation": "tanh", "transmit": "sign"}, {"size": 6, "activation": "tanh"},
              {"size": 3, "activation": "linear"}]
    circuit = parse_circuit({"network": {"layers": layers}, "algorithm": {"name": "dtp"}, "seed": 1})
    assert not build(circuit, 5, 3).fusable()
