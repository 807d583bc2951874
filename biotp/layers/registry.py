"""The dispatch tables of the layer package, keyed by type so a new layer (or layer
spec) registers itself from outside the core:

- `LAYER_SPECS`: the layer specs a circuit's `network.layers` accepts, by `type`;
- `build_layer(spec, in_shape)`: the forward module(s) a layer spec describes;
- `feedback_for(layer, act)`: the learned approximate inverse g_l (TP, DTP, ...);
- `analytical_feedback(layer, options)`: the analytical feedback G*_l of seed 003 (TJMC);
- `linear_transpose(layer, u, weight)`: the transpose of the linear part of a weighted layer's
  pre-activation, with `weight` in place of its own (the random feedback of FA, seed 004 §2.1.1).

G*_l is linearised at the forward pass where the paper says so (max-pool indices, the frozen
s of LayerNorm, σ'(x) of the Hadamard activation feedback), so it is called as
`G(t, ctx)` with `ctx = G.context(h_prev, h)` taken once per forward pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import singledispatch
from typing import Literal, Union

import torch
from pydantic import Field

from ..config import Count, NonNegativeInt, Registry, Spec
from .activations import ACTIVATION_NAMES, derivative, varsigma

# layer specs by `type` (dense when omitted); each is defined beside its layer and registers here
LAYER_SPECS = Registry("layer", "type", default="dense")
ActivationName = Literal[ACTIVATION_NAMES]  # type: ignore[valid-type]
Padding = Union[Literal["same"], NonNegativeInt]


class LayerSpec(Spec):
    """The base of every layer spec: `type` (its registry tag, set by each layer) and `repeat`."""

    repeat: Count = Field(1, description="stack this many identical layers")


@dataclass(frozen=True)
class FeedbackOptions:
    """Choices of seed 003 §5: `activation` "varsigma" (eqs. 26-27) or "hadamard" (σ'(x) ⊙ t,
    eq. 29); `layernorm` "frozen_s" (eqs. 30-35) or "exact" (with the ∂s/∂x term)."""

    activation: str = "varsigma"
    layernorm: str = "frozen_s"


def act_feedback(name: str, t: torch.Tensor, h: torch.Tensor, options: FeedbackOptions) -> torch.Tensor:
    """G*_Act at the population output h = σ(a): ς(t) (eq. 26) or σ'(a) ⊙ t (eq. 29, read as its
    linear part: the printed outer σ would make the Jacobian σ'(σ'(a) t) σ'(a), not σ'(a))."""
    if options.activation == "hadamard":
        return derivative(name, h) * t
    return varsigma(name, t)


class AnalyticalFeedback:
    """G*_l: h_l-shaped targets -> h_{l-1}-shaped targets.  Holds a reference to the forward
    layer (its current weights), no parameters of its own."""

    def __init__(self, layer, options: FeedbackOptions = FeedbackOptions()):
        self.layer, self.options = layer, options

    def context(self, h_prev: torch.Tensor, h: torch.Tensor):
        """What G* freezes from the forward pass h = f(h_prev)."""
        return h

    def __call__(self, t: torch.Tensor, ctx) -> torch.Tensor:
        raise NotImplementedError


@singledispatch
def build_layer(spec, in_shape: tuple[int, ...]) -> list:
    """The forward modules (populations) of one layer spec whose input has shape `in_shape`."""
    raise TypeError(f"no layer is registered for spec type {type(spec).__name__}")


@singledispatch
def feedback_for(layer, act: str):
    """The approximate-inverse module g_l for forward layer `layer`, ending in `act`."""
    raise TypeError(f"no feedback pathway is registered for layer type {type(layer).__name__}")


@singledispatch
def analytical_feedback(layer, options: FeedbackOptions = FeedbackOptions()) -> AnalyticalFeedback:
    """G*_l = argmin_H J^T(H, f_l) (seed 003 eq. 18 under TJMC) for forward layer `layer`."""
    raise TypeError(f"no analytical feedback is registered for layer type {type(layer).__name__}")


@singledispatch
def linear_transpose(layer, u: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """(∂a/∂h)ᵀ u for the pre-activation a = W h + b of `layer`, with `weight` (shaped like W) in
    place of W: Wᵀ u for dense, the transposed convolution for conv, the transposed untied map for
    locally connected layers.  u is shaped like a (`layer.pre(h)`), the result like h."""
    raise TypeError(f"no transposed linear map is registered for layer type {type(layer).__name__}")
