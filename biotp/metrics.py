"""Measurements on a network and its learning rule: angles to backprop, and the Jacobian
matching losses of seed 003 (§4, definitions 1-3)."""

from __future__ import annotations

import math

import torch


def angle_deg(a: torch.Tensor, b: torch.Tensor) -> float:
    """The angle in degrees between two tensors seen as vectors (90 when either is zero)."""
    a, b = a.flatten().double(), b.flatten().double()
    na, nb = a.norm(), b.norm()
    if na == 0 or nb == 0:
        return 90.0
    return math.degrees(math.acos(float((a @ b / (na * nb)).clamp(-1, 1))))


def bp_angles(rule, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """Per layer, the angle between the rule's weight update and BP's on the same batch.

    Both updates are taken before any optimiser (the negative gradient for BP, the rule's
    `.grad` otherwise), the comparison of seed 002 Theorem 1 and seed 004 Fig. 3.
    """
    layers = rule.net.layers
    rule.zero_grad(set_to_none=True)
    rule.grads(x, y, forward=True, feedback=False)
    ours = [layer.weight.grad.detach().clone() for layer in layers]
    rule.zero_grad(set_to_none=True)
    with torch.enable_grad():
        loss = rule.loss(rule.net(x)[-1], y)
        theirs = torch.autograd.grad(loss, [layer.weight for layer in layers], allow_unused=True)
    rule.zero_grad(set_to_none=True)
    return {
        name: angle_deg(a, b if b is not None else torch.zeros_like(a))
        for name, a, b in zip(rule.net.layer_names(), ours, theirs)
    }



# ------------------------------------------------------- Jacobian matching losses (seed 003 §4)

JML_KINDS = ("I", "P", "T")
JML_EXAMPLES = 2  # examples per measurement during training: two full Jacobians per layer each


def flat_jacobian(fn, x: torch.Tensor) -> torch.Tensor:
    """∂fn(x)/∂x as a [out.numel(), x.numel()] matrix (x one example, batch axis of size 1)."""
    J = torch.autograd.functional.jacobian(fn, x)
    return J.reshape(-1, x.numel())


def jacobian_matching_loss(J_g: torch.Tensor, J_f: torch.Tensor, kind: str = "T") -> float:
    """‖J_g - M(J_f)‖_F with M the inverse (IJML, seed 003 eq. 12), the Moore-Penrose inverse
    (PJML, eq. 13) or the transpose (TJML, eq. 14).  IJML is nan unless J_f is square and regular."""
    if kind == "T":
        target = J_f.T
    elif kind == "P":
        target = torch.linalg.pinv(J_f)
    elif kind == "I":
        if J_f.shape[0] != J_f.shape[1]:
            return math.nan
        try:
            target = torch.linalg.inv(J_f)
        except RuntimeError:  # singular
            return math.nan
    else:
        raise ValueError(f"kind must be one of {JML_KINDS}, got {kind!r}")
    return float(torch.linalg.matrix_norm(J_g - target))


def layer_jmls(layer, feedback, h_prev: torch.Tensor, kinds=JML_KINDS, examples: int = 4) -> dict[str, float]:
    """Mean Jacobian matching losses of `feedback` w.r.t. forward `layer` over the first
    `examples` rows of h_prev.  J_f is taken at h_{l-1}, J_g at h_l = f(h_{l-1}).  `feedback`
    is a learned g_l (a module of h_l) or an analytical G*_l (`biotp.layers.AnalyticalFeedback`,
    linearised at the same forward pass)."""
    from .layers import AnalyticalFeedback

    sums = {k: 0.0 for k in kinds}
    n = min(examples, h_prev.shape[0])
    for i in range(n):
        hp = h_prev[i : i + 1].detach()
        with torch.no_grad():
            h = layer(hp)
        if isinstance(feedback, AnalyticalFeedback):
            ctx = feedback.context(hp, h)
            g = lambda t, ctx=ctx: feedback(t, ctx)  # noqa: E731
        else:
            g = feedback
        J_f, J_g = flat_jacobian(layer, hp), flat_jacobian(g, h)
        for k in kinds:
            sums[k] += jacobian_matching_loss(J_g, J_f, k)
    return {k: v / n for k, v in sums.items()}


def network_jmls(net, x: torch.Tensor, feedback: str = "learned", options=None, kinds=JML_KINDS,
                 examples: int = 4) -> dict[str, dict[str, float]]:
    """{layer_l: {kind: JML}} for l = 2..L, of the learned g_l (`feedback="learned"`) or the
    analytical G*_l (`"analytical"`, with `options` a `biotp.layers.FeedbackOptions`)."""
    from .layers import FeedbackOptions, analytical_feedback

    if feedback == "analytical":
        feedback_of = lambda l: analytical_feedback(net.layers[l - 1], options or FeedbackOptions())  # noqa: E731
    else:
        feedback_of = lambda l: net.feedback[str(l)]  # noqa: E731
    return _per_layer_jmls(net, feedback_of, x, kinds, examples)


def rule_jmls(rule, x: torch.Tensor, examples: int = JML_EXAMPLES) -> dict[str, float]:
    """Metric columns `ijml_layer<l>`, `pjml_layer<l>`, `tjml_layer<l>` (l = 2..L) of a learning
    rule's feedback (`rule.feedback_map(l)`: the learned g_l, or tjml's analytical G*_l) on the
    first `examples` rows of x; nan where the rule has no feedback map of h_l (bp, fa, dfa, gtp)."""
    per_layer = _per_layer_jmls(rule.net, rule.feedback_map, x, JML_KINDS, examples)
    return {f"{kind.lower()}jml_layer{l}": per_layer[f"layer{l}"].get(kind, math.nan)
            for l in range(2, rule.net.depth + 1) for kind in JML_KINDS}


def _per_layer_jmls(net, feedback_of, x, kinds, examples) -> dict[str, dict[str, float]]:
    """{layer_l: layer_jmls of feedback_of(l)} for l = 2..L ({} where feedback_of(l) is None)."""
    with torch.no_grad():
        hs = net(x[:examples])
    out = {}
    for l in range(2, net.depth + 1):
        g = feedback_of(l)
        out[f"layer{l}"] = {} if g is None else layer_jmls(net.layers[l - 1], g, hs[l - 1], kinds, examples)
    return out
