"""Parameter-free spatial layers: max-pooling, global average pooling, flatten.

Their analytical feedbacks (seed 003 eqs. 22, 37) are exact transposes of their Jacobians.
Having no weights, their learned feedbacks g_l are fixed maps too: nearest-neighbour
upsampling for max-pool, broadcasting for GAP, reshaping for flatten.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

from ..config import PositiveInt
from .registry import (AnalyticalFeedback, FeedbackOptions, LAYER_SPECS, LayerSpec, analytical_feedback, build_layer,
                       feedback_for)


@LAYER_SPECS.register
class MaxPoolLayer(LayerSpec):
    """Max-pooling over `kernel` x `kernel` windows, step `stride` (default: kernel); seed 003 eq. 21."""

    type: Literal["maxpool"] = "maxpool"
    kernel: PositiveInt = 2
    stride: PositiveInt | None = None


@LAYER_SPECS.register
class GAPLayer(LayerSpec):
    """Global average pooling (seed 003 eq. 36): [C, H, W] -> [C], or tokens [S, C] -> [C]."""

    type: Literal["gap"] = "gap"


@LAYER_SPECS.register
class FlattenLayer(LayerSpec):
    """Reshape to a vector (a dense layer after a spatial one flattens by itself)."""

    type: Literal["flatten"] = "flatten"


def unpool(t: torch.Tensor, indices: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """MaxUnpool (seed 003 eq. 22): t [N, C, h, w] put back at the arg-max positions `indices`
    (flat over H*W, as `max_pool2d(..., return_indices=True)` gives them) of a [N, C, H, W]
    map of zeros.  Values sharing a position (overlapping windows) add, so this is exactly the
    transpose of max-pooling's Jacobian."""
    n, c = t.shape[:2]
    out = t.new_zeros(n, c, size[0] * size[1])
    out = out.scatter_add(2, indices.flatten(2), t.flatten(2))
    return out.view(n, c, *size)


class MaxPool(nn.Module):
    """f(h) = MaxPool(h) over `kernel` x `kernel` windows with step `stride` (seed 003 eq. 21)."""

    def __init__(self, in_shape, kernel: int = 2, stride: int | None = None):
        super().__init__()
        c, hh, ww = in_shape
        self.kernel, self.stride = kernel, stride or kernel
        self.in_shape = tuple(in_shape)
        self.out_shape = (c, (hh - kernel) // self.stride + 1, (ww - kernel) // self.stride + 1)

    def forward(self, h):
        return F.max_pool2d(h, self.kernel, self.stride)

    def indices(self, h):
        return F.max_pool2d(h, self.kernel, self.stride, return_indices=True)[1]

    def extra_repr(self):
        return f"{self.kernel}x{self.kernel}, stride {self.stride}"


class Upsample(nn.Module):
    """g(h) = nearest-neighbour upsampling to `out_shape`: the fixed feedback of a max-pool."""

    def __init__(self, out_shape):
        super().__init__()
        self.out_shape = tuple(out_shape)

    def forward(self, h):
        return F.interpolate(h, size=self.out_shape[1:], mode="nearest")


class MaxUnpool(AnalyticalFeedback):
    """G*(t) = MaxUnpool(t) at the forward pass's arg-max indices (seed 003 eq. 22)."""

    def context(self, h_prev, h):
        return self.layer.indices(h_prev)

    def __call__(self, t, indices):
        return unpool(t, indices, self.layer.in_shape[1:])


class GlobalAvgPool(nn.Module):
    """f(h) = mean over positions (seed 003 eq. 36): [C, H, W] -> [C], tokens [S, C] -> [C]."""

    def __init__(self, in_shape):
        super().__init__()
        if len(in_shape) not in (2, 3):
            raise ValueError(f"gap averages over positions: it needs an input [C, H, W] or tokens [S, C], "
                             f"got shape {list(in_shape)}")
        self.in_shape = tuple(in_shape)
        self.spatial = len(in_shape) == 3
        self.out_shape = (in_shape[0],) if self.spatial else (in_shape[-1],)
        self.count = math.prod(in_shape[1:]) if self.spatial else in_shape[0]

    def forward(self, h):
        return h.mean((2, 3)) if self.spatial else h.mean(1)


class Broadcast(nn.Module):
    """g(t) = t copied to every position, divided by their number `scale`: Gᵀ of GAP when
    scale is the count (seed 003 eq. 37), a plain copy when scale = 1."""

    def __init__(self, out_shape, spatial: bool, scale: float = 1.0):
        super().__init__()
        self.out_shape, self.spatial, self.scale = tuple(out_shape), spatial, scale

    def forward(self, t):
        n = t.shape[0]
        t = t[:, :, None, None] if self.spatial else t[:, None, :]
        return t.expand(n, *self.out_shape) / self.scale


class GAPTranspose(AnalyticalFeedback):
    """G*(t) = (1/d) 1 t (seed 003 eq. 37)."""

    def __init__(self, layer, options=FeedbackOptions()):
        super().__init__(layer, options)
        self.broadcast = Broadcast(layer.in_shape, layer.spatial, layer.count)

    def __call__(self, t, ctx):
        return self.broadcast(t)


class Flatten(nn.Module):
    def __init__(self, in_shape):
        super().__init__()
        self.in_shape, self.out_shape = tuple(in_shape), (math.prod(in_shape),)

    def forward(self, h):
        return h.flatten(1)


class Reshape(nn.Module):
    def __init__(self, out_shape):
        super().__init__()
        self.out_shape = tuple(out_shape)

    def forward(self, t):
        return t.reshape(-1, *self.out_shape)


class Unflatten(AnalyticalFeedback):
    def __call__(self, t, ctx):
        return t.reshape(-1, *self.layer.in_shape)


@build_layer.register
def _(spec: MaxPoolLayer, in_shape):
    return [MaxPool(in_shape, spec.kernel, spec.stride)]


@build_layer.register
def _(spec: GAPLayer, in_shape):
    return [GlobalAvgPool(in_shape)]


@build_layer.register
def _(spec: FlattenLayer, in_shape):
    return [Flatten(in_shape)]


@feedback_for.register
def _(layer: MaxPool, act: str):
    return Upsample(layer.in_shape)


@feedback_for.register
def _(layer: GlobalAvgPool, act: str):
    return Broadcast(layer.in_shape, layer.spatial)


@feedback_for.register
def _(layer: Flatten, act: str):
    return Reshape(layer.in_shape)


@analytical_feedback.register
def _(layer: MaxPool, options=FeedbackOptions()):
    return MaxUnpool(layer, options)


@analytical_feedback.register
def _(layer: GlobalAvgPool, options=FeedbackOptions()):
    return GAPTranspose(layer, options)


@analytical_feedback.register
def _(layer: Flatten, options=FeedbackOptions()):
    return Unflatten(layer, options)
