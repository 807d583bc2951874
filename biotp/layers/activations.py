"""Elementwise activations by name.  `sign` and `step` are the discrete transmissions of
seed 002 §3.3.2 (sign(x) = 1 if x > 0 else 0 there); their derivative is zero almost
everywhere, which is why backprop cannot cross them and target propagation can."""

import torch

ACTIVATIONS = {
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "relu": torch.relu,
    "linear": lambda a: a,
    "sign": lambda a: (a > 0).to(a.dtype),
    "step": lambda a: (a > 0).to(a.dtype),
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
    return torch.zeros_like(h)
