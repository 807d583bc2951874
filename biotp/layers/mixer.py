"""MLP-Mixer blocks on tokens [S, C] (Tolstikhin et al. 2021, as used by seed 003 §5-6).

Token mixing (seed 003 eq. 46):   x + (Act(W₁ Norm(x)ᵀ + b₁))ᵀ            (one FC, S -> S)
  or, with `token_hidden`:        x + (W₂ Act(W₁ Norm(x)ᵀ + b₁) + b₂)ᵀ
Channel mixing (seed 003 eq. 44): x + W₂ Act(W₁ Norm(x) + b₁) + b₂        (per token, C -> C)
Norm is a LayerNorm over channels.  The analytical feedback is the skip rule (eq. 39) around
the composite rule (eq. 41): G*(t) = t + G*_Norm(G*_FC(G*_Act(G*_FC(t)))) (eqs. 45, 47).
The activation inside a block is fed back by its slope at the forward pass, σ'(x) ⊙ t (the
Hadamard form of eq. 29, which seed 003 introduced for the Mixer): ς would be evaluated at
a point that is not the activation's output, breaking TJMC.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from ..config import Bool, PositiveInt
from .activations import activation, derivative
from .norm import LayerNorm
from .registry import (ActivationName, AnalyticalFeedback, FeedbackOptions, LAYER_SPECS, LayerSpec,
                       analytical_feedback, build_layer, feedback_for)


@LAYER_SPECS.register
class MixerLayer(LayerSpec):
    """An MLP-Mixer block on tokens [S, C] (seed 003 eqs. 44-47): token mixing
    x + Act(FC(Norm(x))ᵀ)ᵀ (with `token_hidden`: FC∘Act∘FC), then channel mixing
    x + FC(Act(FC(Norm(x)))).  `split`: each of the two skip blocks is its own population
    carrying a target (seed 003 "fundamental units"); otherwise the block is one population."""

    type: Literal["mixer"] = "mixer"
    token_hidden: PositiveInt | None = None
    channel_hidden: PositiveInt
    activation: ActivationName = "leaky_relu"
    affine: Bool = True
    split: Bool = True


class MixerMLP(nn.Module):
    """One skip block x + MLP(Norm(x)) mixing tokens (`axis="token"`) or channels."""

    def __init__(self, in_shape, axis: str, hidden: int | None, act: str = "leaky_relu", affine: bool = True):
        super().__init__()
        if len(in_shape) != 2:
            raise ValueError(f"a mixer block needs tokens [S, C], got shape {tuple(in_shape)}")
        self.in_shape = self.out_shape = tuple(in_shape)
        self.axis, self.hidden, self.act_name, self.act = axis, hidden, act, activation(act)
        dim = in_shape[0] if axis == "token" else in_shape[1]
        self.norm = LayerNorm(in_shape, affine)
        self.w1 = nn.Parameter(torch.zeros(hidden or dim, dim))
        self.b1 = nn.Parameter(torch.zeros(hidden or dim))
        self.w2 = nn.Parameter(torch.zeros(dim, hidden)) if hidden else None
        self.b2 = nn.Parameter(torch.zeros(dim)) if hidden else None

    def _mix(self, u):
        u = u.transpose(1, 2) if self.axis == "token" else u
        s1 = self.act(u @ self.w1.T + self.b1)
        z = s1 @ self.w2.T + self.b2 if self.hidden else s1
        return (z.transpose(1, 2) if self.axis == "token" else z), s1

    def forward(self, x):
        return x + self._mix(self.norm(x))[0]

    def context(self, x):
        """What G* freezes: the normalised input, √s, and the activation's output."""
        y, root_s = self.norm.normalise(x)
        u = y if self.norm.gamma is None else y * self.norm.gamma + self.norm.beta
        return y, root_s, self._mix(u)[1]

    def transpose(self, t, ctx, layernorm: str = "frozen_s"):
        y, root_s, s1 = ctx
        v = t.transpose(1, 2) if self.axis == "token" else t
        if self.hidden:
            v = v @ self.w2
        v = (derivative(self.act_name, s1) * v) @ self.w1
        v = v.transpose(1, 2) if self.axis == "token" else v
        return t + self.norm.transpose(v, y, root_s, layernorm)

    def weight_matrices(self):
        return [self.w1] + ([self.w2] if self.hidden else [])

    def extra_repr(self):
        return f"{self.axis} mixing, {self.in_shape}, hidden {self.hidden}, {self.act_name}"


class MixerBlock(nn.Module):
    """Token mixing then channel mixing as one population (`split: false`)."""

    def __init__(self, in_shape, token_hidden, channel_hidden, act="leaky_relu", affine=True):
        super().__init__()
        self.in_shape = self.out_shape = tuple(in_shape)
        self.token = MixerMLP(in_shape, "token", token_hidden, act, affine)
        self.channel = MixerMLP(in_shape, "channel", channel_hidden, act, affine)

    def forward(self, x):
        return self.channel(self.token(x))

    def context(self, x):
        return self.token.context(x), self.channel.context(self.token(x))

    def transpose(self, t, ctx, layernorm="frozen_s"):
        """G* = G*_token ∘ G*_channel (seed 003 eq. 41)."""
        return self.token.transpose(self.channel.transpose(t, ctx[1], layernorm), ctx[0], layernorm)

    def weight_matrices(self):
        return self.token.weight_matrices() + self.channel.weight_matrices()


class MixerTranspose(AnalyticalFeedback):
    def context(self, h_prev, h):
        return self.layer.context(h_prev)

    def __call__(self, t, ctx):
        return self.layer.transpose(t, ctx, self.options.layernorm)


@build_layer.register
def _(spec: MixerLayer, in_shape):
    if not spec.split:
        return [MixerBlock(in_shape, spec.token_hidden, spec.channel_hidden, spec.activation, spec.affine)]
    return [MixerMLP(in_shape, "token", spec.token_hidden, spec.activation, spec.affine),
            MixerMLP(in_shape, "channel", spec.channel_hidden, spec.activation, spec.affine)]


@feedback_for.register
def _(layer: MixerMLP, act: str):
    """A mirror block with its own trainable weights."""
    return MixerMLP(layer.in_shape, layer.axis, layer.hidden, layer.act_name, layer.norm.gamma is not None)


@feedback_for.register
def _(layer: MixerBlock, act: str):
    g = MixerBlock(layer.in_shape, layer.token.hidden, layer.channel.hidden, layer.token.act_name,
                   layer.token.norm.gamma is not None)
    return g


@analytical_feedback.register(MixerMLP)
@analytical_feedback.register(MixerBlock)
def _(layer, options=FeedbackOptions()):
    return MixerTranspose(layer, options)
