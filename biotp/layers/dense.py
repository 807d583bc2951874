"""Fully connected populations and their feedback pathways."""

from __future__ import annotations

import torch
from torch import nn

from .activations import activation, derivative


class Dense(nn.Module):
    """f_l(h) = act(W h + b), W: [out, in]."""

    def __init__(self, n_in: int, n_out: int, act: str = "tanh", bias: bool = True):
        super().__init__()
        self.n_in, self.n_out, self.act_name = n_in, n_out, act
        self.weight = nn.Parameter(torch.zeros(n_out, n_in))
        self.bias = nn.Parameter(torch.zeros(n_out)) if bias else None
        self.act = activation(act)

    def pre(self, h: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(h, self.weight, self.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.act(self.pre(h))

    def derivative(self, h: torch.Tensor) -> torch.Tensor:
        """f'(a) at the output h = f(a)."""
        return derivative(self.act_name, h)

    def extra_repr(self) -> str:
        return f"{self.n_in} -> {self.n_out}, {self.act_name}"


class DenseFeedback(Dense):
    """g_l(h_l) = act(V h_l + c), V: [n_{l-1}, n_l]: the learned approximate inverse of a
    dense f_l (seed 002 eq. 3.10; seed 004 §2.1)."""
