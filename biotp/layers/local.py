"""Locally connected populations: convolution-shaped receptive fields with untied weights
(seed 004 §5.2, §5.4, Table 3).

With P = unfold(h) the [C_in k k, L] patches of one example (L output positions),
a[:, o, l] = Σ_i W[l, o, i] P[i, l] + b[o, l].  The transpose of this linear map is
fold(Σ_o W[l, o, i] y[o, l]): `fold` is the adjoint of `unfold`, so the transposed map costs
one einsum and one fold, which is what seed 004 §5.4 obtains through autograd.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

from .activations import activation
from .conv import FilterSpec, out_size, padding_of
from .init import MatrixStack
from .registry import (LAYER_SPECS, AnalyticalFeedback, FeedbackOptions, act_feedback, analytical_feedback, build_layer,
                       feedback_for, linear_transpose)


@LAYER_SPECS.register
class LocalLayer(FilterSpec):
    """A locally connected layer: a convolution with untied weights (seed 004 §5.2, §5.4, Table 3)."""

    type: Literal["local"] = "local"


def local_apply(h, weight, kernel, stride, padding):
    """The linear part Σ_i W[l, o, i] unfold(h)[i, l], h [N, C, H, W] -> [N, C_out, L]."""
    patches = F.unfold(h, kernel, padding=padding, stride=stride)  # [N, C k k, L]
    return torch.einsum("nil,loi->nol", patches, weight)


def local_transpose(y, weight, kernel, stride, padding, size):
    """The transpose of `local_apply`: y [N, C_out, L] -> [N, C_in, H, W] (`size` = (H, W))."""
    patches = torch.einsum("nol,loi->nil", y.flatten(2), weight)
    return F.fold(patches, size, kernel, padding=padding, stride=stride)


class LocallyConnected(nn.Module):
    """f(h) = act(W ⊛ h + b) with a separate [C_out, C_in k k] filter at each output position:
    W [L, C_out, C_in k k], b [C_out, H', W']."""

    def __init__(self, in_shape, channels, kernel=3, stride=1, padding=0, act="tanh", bias=True):
        super().__init__()
        c, hh, ww = in_shape
        self.in_shape, self.kernel, self.stride, self.padding = tuple(in_shape), kernel, stride, padding
        self.out_shape = (channels, out_size(hh, kernel, stride, padding), out_size(ww, kernel, stride, padding))
        n_pos = self.out_shape[1] * self.out_shape[2]
        self.act_name, self.act = act, activation(act)
        self.weight = nn.Parameter(torch.zeros(n_pos, channels, c * kernel * kernel))
        self.bias = nn.Parameter(torch.zeros(self.out_shape)) if bias else None

    def pre(self, h):
        a = local_apply(h, self.weight, self.kernel, self.stride, self.padding).reshape(-1, *self.out_shape)
        return a if self.bias is None else a + self.bias

    def post(self, a):
        """The rest of f after the pre-activation a: f(h) = post(pre(h))."""
        return self.act(a)

    def forward(self, h):
        return self.post(self.pre(h))

    def transpose(self, y, weight=None):
        """Wᵀ y, y shaped like the output (`weight`, shaped like W, in place of W if given)."""
        weight = self.weight if weight is None else weight
        return local_transpose(y, weight, self.kernel, self.stride, self.padding, self.in_shape[1:])

    def weight_matrices(self):
        return [MatrixStack(self.weight.data)]  # one [C_out, C_in k k] bank per location

    def extra_repr(self):
        return f"{self.in_shape} -> {self.out_shape}, kernel {self.kernel}, stride {self.stride}, {self.act_name}"


class LocalFeedback(nn.Module):
    """g(y) = act(V y + c), V with the sparsity of Wᵀ and its own trainable weights (seed 004
    §5.4): V [L, C_out, C_in k k] acting as the transposed locally connected map."""

    def __init__(self, layer: LocallyConnected, act: str):
        super().__init__()
        self.kernel, self.stride, self.padding = layer.kernel, layer.stride, layer.padding
        self.out_shape = layer.in_shape
        self.act_name, self.act = act, activation(act)
        self.weight = nn.Parameter(torch.zeros_like(layer.weight))
        self.bias = nn.Parameter(torch.zeros(layer.in_shape))

    def forward(self, y):
        x = local_transpose(y, self.weight, self.kernel, self.stride, self.padding, self.out_shape[1:])
        return self.act(x + self.bias)

    def weight_matrices(self):
        return [MatrixStack(self.weight.data)]


class LocalTranspose(AnalyticalFeedback):
    """G*(t) = Wᵀ G*_Act(t) with Wᵀ the transposed locally connected map."""

    def context(self, h_prev, h):
        return h

    def __call__(self, t, h):
        return self.layer.transpose(act_feedback(self.layer.act_name, t, h, self.options))


@build_layer.register
def _(spec: LocalLayer, in_shape):
    if len(in_shape) != 3:
        raise ValueError(f"a local layer needs a [C, H, W] input, got shape {tuple(in_shape)}")
    return [LocallyConnected(in_shape, spec.channels, spec.kernel, spec.stride,
                             padding_of(spec.padding, spec.kernel), spec.activation, spec.bias)]


@feedback_for.register
def _(layer: LocallyConnected, act: str):
    return LocalFeedback(layer, act)


@analytical_feedback.register
def _(layer: LocallyConnected, options=FeedbackOptions()):
    return LocalTranspose(layer, options)


@linear_transpose.register
def _(layer: LocallyConnected, u, weight):
    return layer.transpose(u, weight)
