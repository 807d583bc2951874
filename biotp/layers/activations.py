"""Elementwise activations by name.  `sign` (±1: 1 if x > 0 else -1, as in Lee et al.'s code)
and `step` (1 if x > 0 else 0, seed 002 eq. 3.24 as printed) are the discrete transmissions of
seed 002 §3.3.2 (`layers.discrete`); their derivative is zero almost everywhere, which is why
backprop cannot cross them and target propagation can.

`leaky_relu` (slope 0.01 below zero) is seed 003's default: invertible, unlike GELU.

`varsigma(name, y)` is ς of seed 003 eq. 27, ς(y) = ∫ σ'(σ⁻¹(y)) dy: the activation's
analytical feedback, whose slope at y = σ(a) is σ'(a) (TJMC)."""

import torch
from torch.nn import functional as F

LEAK = 0.01

ACTIVATIONS = {
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "relu": torch.relu,
    "linear": lambda a: a,
    "sign": lambda a: (a > 0).to(a.dtype) * 2 - 1,
    "step": lambda a: (a > 0).to(a.dtype),
    "leaky_relu": lambda a: F.leaky_relu(a, LEAK),
}


def activation(name: str):
    return ACTIVATIONS[name]


def derivative(name: str, h: torch.Tensor) -> torch.Tensor:
    """f'(a) expressed through the output h = f(a): every activation here allows it."""
    if name == "tanh":
        return 1 - h * h
    if name == "sigmoid":
        return h * (1 - h)
    if name == "relu":
        return (h > 0).to(h.dtype)
    if name == "linear":
        return torch.ones_like(h)
    if name == "leaky_relu":
        return torch.where(h > 0, torch.ones_like(h), torch.full_like(h, LEAK))
    return torch.zeros_like(h)


def varsigma(name: str, y: torch.Tensor) -> torch.Tensor:
    """ς(y) = ∫ σ'(σ⁻¹(y)) dy with ς(0) = 0 (seed 003 eqs. 26-27); ς'(y) = derivative(name, y)."""
    if name == "tanh":
        return y - y**3 / 3
    if name == "sigmoid":
        return y**2 / 2 - y**3 / 3
    if name == "relu":
        return torch.relu(y)
    if name == "leaky_relu":
        return F.leaky_relu(y, LEAK)
    if name == "linear":
        return y
    return torch.zeros_like(y)
