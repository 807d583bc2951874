"""Measurements on a network and its learning rule: angles to backprop, error rates.

(Jacobian matching losses of seed 003 live here too.)
"""

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


@torch.no_grad()
def error_rate(predict, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> float:
    """Fraction of examples whose arg-max output differs from the label."""
    wrong = 0
    for i in range(0, len(x), batch_size):
        wrong += int((predict(x[i : i + batch_size]).argmax(1) != y[i : i + batch_size]).sum())
    return wrong / max(len(x), 1)
