"""Fully connected populations and their feedback pathways."""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import model_validator
from torch import nn

from ..config import Bool, PositiveInt
from .activations import activation, apply, derivative
from .discrete import Transmission, transmission
from .registry import (ActivationName, AnalyticalFeedback, FeedbackOptions, LAYER_SPECS, LayerSpec, act_feedback,
                       analytical_feedback, build_layer, feedback_for, linear_transpose)


@LAYER_SPECS.register
class DenseLayer(LayerSpec):
    """f(h) = activation(W transmit(h) + b): a fully connected population.

    `transmit` is what crosses the connection from the population below (seed 002
    §3.3.2-3.3.3): `sign` ±1, `step` 0/1, or a `bernoulli` sample that is 1 with probability h.
    Backprop differentiates it exactly (zero) unless `straight_through`, which passes the
    gradient as if it were the identity (seed 002 eq. 3.29)."""

    type: Literal["dense"] = "dense"
    size: PositiveInt
    activation: ActivationName = "tanh"
    bias: Bool = True
    transmit: Literal["identity", "sign", "step", "bernoulli"] = "identity"  # see `discrete`
    straight_through: Bool = False

    @model_validator(mode="after")
    def _straight_through_needs_transmit(self):
        if self.straight_through and self.transmit == "identity":
            raise ValueError("straight_through applies to a discrete transmit (sign, step or bernoulli); "
                             "transmit is identity")
        return self


class Dense(nn.Module):
    """f_l(h) = act(W q(h) + b), W: [out, in], q the transmission (`transmit`; none: q(h) = h;
    see `discrete`).  A spatial input ([C, H, W], tokens) is flattened first; `in_shape`
    remembers its shape."""

    def __init__(self, n_in: int, n_out: int, act: str = "tanh", bias: bool = True,
                 transmit: Transmission | None = None):
        super().__init__()
        self.n_in, self.n_out, self.act_name = n_in, n_out, act
        self.in_shape, self.out_shape = (n_in,), (n_out,)
        self.weight = nn.Parameter(torch.zeros(n_out, n_in))
        self.bias = nn.Parameter(torch.zeros(n_out)) if bias else None
        self.act = activation(act)
        self.transmit = transmit

    def pre(self, h: torch.Tensor) -> torch.Tensor:
        h = h.flatten(1)
        if self.transmit is not None:
            h = self.transmit(h)
        return nn.functional.linear(h, self.weight, self.bias)

    def post(self, a: torch.Tensor) -> torch.Tensor:
        """The rest of f after the pre-activation a: f(h) = post(pre(h)); `a` may be overwritten."""
        out = apply(self.act_name, a)
        return out if len(self.out_shape) == 1 else out.reshape(-1, *self.out_shape)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.post(self.pre(h))

    def derivative(self, h: torch.Tensor) -> torch.Tensor:
        """f'(a) at the output h = f(a)."""
        return derivative(self.act_name, h)

    def weight_matrices(self) -> list[torch.Tensor]:
        """The [out, in] weight matrices an initialisation scheme fills."""
        return [self.weight]

    def extra_repr(self) -> str:
        return f"{self.n_in} -> {self.n_out}, {self.act_name}"


class DenseFeedback(Dense):
    """g_l(h_l) = act(V q(h_l) + c), V: [n_{l-1}, n_l]: the learned approximate inverse of a
    dense f_l (seed 002 eqs. 3.11, 3.26; seed 004 §2.1).  Its output takes the shape of h_{l-1}."""


class DenseTranspose(AnalyticalFeedback):
    """G*(t) = Wᵀ G*_Act(t) (seed 003 eqs. 24, 26/29, 41), reshaped to h_{l-1}."""

    def __call__(self, t, h):
        layer = self.layer
        return linear_transpose(layer, act_feedback(layer.act_name, t, h, self.options), layer.weight)


@build_layer.register
def _(spec: DenseLayer, in_shape):
    layer = Dense(math.prod(in_shape), spec.size, spec.activation, spec.bias,
                  transmission(spec.transmit, spec.straight_through))
    layer.in_shape = tuple(in_shape)
    return [layer]


@feedback_for.register
def _(layer: Dense, act: str):
    # g_l crosses the same connection downwards (see `discrete`: quantised, or reading h^p)
    g = DenseFeedback(layer.n_out, layer.n_in, act, transmit=layer.transmit and layer.transmit.feedback())
    g.in_shape, g.out_shape = layer.out_shape, layer.in_shape
    return g


@analytical_feedback.register
def _(layer: Dense, options=FeedbackOptions()):
    return DenseTranspose(layer, options)


@linear_transpose.register
def _(layer: Dense, u, weight):
    return (u.flatten(1) @ weight).reshape(-1, *layer.in_shape)
