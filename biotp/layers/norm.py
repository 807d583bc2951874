"""Layer normalisation over the last axis (seed 003 eqs. 30-35).

F_Norm = F_SD ∘ F_Mean: x -> (x - mean x) / √s with s = var(x) (+ eps), optionally followed
by a learned gain γ and shift β.  Its Jacobian is (1/√s)(I - 11ᵀ/d - y yᵀ/d), y = F_Norm(x):
symmetric.  Seed 003 freezes s from the forward pass, giving G*(t) = (I - 11ᵀ/d) t / √s
(eq. 35), the exact transpose of the map with s held constant; `exact` adds the -y yᵀ/d term,
the transpose of the full Jacobian.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from ..config import Bool, PositiveFloat
from .registry import (AnalyticalFeedback, FeedbackOptions, LAYER_SPECS, LayerSpec, analytical_feedback, build_layer,
                       feedback_for)


@LAYER_SPECS.register
class LayerNormLayer(LayerSpec):
    """Normalisation over the last axis (seed 003 eqs. 30-33), optionally with a learned gain and shift."""

    type: Literal["layernorm"] = "layernorm"
    affine: Bool = False
    eps: PositiveFloat = 1e-5


class LayerNorm(nn.Module):
    def __init__(self, in_shape, affine: bool = False, eps: float = 1e-5):
        super().__init__()
        self.in_shape = self.out_shape = tuple(in_shape)
        self.eps = eps
        d = in_shape[-1]
        self.gamma = nn.Parameter(torch.ones(d)) if affine else None
        self.beta = nn.Parameter(torch.zeros(d)) if affine else None

    def normalise(self, x):
        """(y, √s): y = (x - mean) / √s, s = var + eps over the last axis (eqs. 31, 33)."""
        mu = x.mean(-1, keepdim=True)
        root_s = (x.var(-1, unbiased=False, keepdim=True) + self.eps).sqrt()
        return (x - mu) / root_s, root_s

    def forward(self, x):
        y, _ = self.normalise(x)
        return y if self.gamma is None else y * self.gamma + self.beta

    def transpose(self, t, y, root_s, mode: str = "frozen_s"):
        """G*_Norm(t) = G*_Mean ∘ G*_SD (eqs. 32, 34, 35) after the gain; `exact` also
        subtracts y (y·v)/d, the term from differentiating s."""
        v = t if self.gamma is None else t * self.gamma
        v = v - v.mean(-1, keepdim=True)
        if mode == "exact":
            v = v - y * (y * v).mean(-1, keepdim=True)
        return v / root_s

    def weight_matrices(self):
        return []


class Identity(nn.Module):
    """g(h) = h: the fixed feedback of a normalisation (which it inverts up to shift and scale)."""

    def forward(self, h):
        return h


class NormTranspose(AnalyticalFeedback):
    def context(self, h_prev, h):
        return self.layer.normalise(h_prev)

    def __call__(self, t, ctx):
        return self.layer.transpose(t, *ctx, mode=self.options.layernorm)


@build_layer.register
def _(spec: LayerNormLayer, in_shape):
    return [LayerNorm(in_shape, spec.affine, spec.eps)]


@feedback_for.register
def _(layer: LayerNorm, act: str):
    return Identity()


@analytical_feedback.register
def _(layer: LayerNorm, options=FeedbackOptions()):
    return NormTranspose(layer, options)
