"""Convolutional populations (seed 003 §5: LeNet, Simplified-VGG) and the MLP-Mixer patch
embedding, with their feedback pathways.

The transpose of a convolution's Jacobian is the transposed convolution with the same
kernel, i.e. the convolution with the kernel rotated by 180° and its in/out channels
swapped (seed 003 eq. 20); `conv_transpose` computes it with `conv_transpose2d`.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

from ..config import Bool, PositiveInt
from .activations import activation
from .pool import unpool
from .registry import (ActivationName, AnalyticalFeedback, FeedbackOptions, LAYER_SPECS, LayerSpec, Padding,
                       act_feedback, analytical_feedback, build_layer, feedback_for, linear_transpose)


class FilterSpec(LayerSpec):
    """What a layer of filters sliding over [C, H, W] has: `channels` filters of `kernel` x
    `kernel`, moved by `stride`; `padding: same` is kernel // 2 (shape kept at stride 1)."""

    channels: PositiveInt
    kernel: PositiveInt = 3
    stride: PositiveInt = 1
    padding: Padding = "same"
    activation: ActivationName = "tanh"
    bias: Bool = True


@LAYER_SPECS.register
class ConvLayer(FilterSpec):
    """f(h) = [maxpool_p] activation(W * h + b): a convolution, optionally followed by max-pooling
    with window = stride = `pool` (the conv+pool block of seed 003 eq. 42, one population)."""

    type: Literal["conv"] = "conv"
    pool: PositiveInt | None = None


@LAYER_SPECS.register
class PatchEmbedLayer(LayerSpec):
    """MLP-Mixer stem: non-overlapping `patch` x `patch` patches linearly embedded into `channels`,
    giving tokens [S, C] (a convolution with kernel = stride = patch)."""

    type: Literal["patch_embed"] = "patch_embed"
    patch: PositiveInt
    channels: PositiveInt
    activation: ActivationName = "linear"
    bias: Bool = True


def padding_of(padding, kernel: int) -> int:
    """`same` is kernel // 2: the output keeps its shape at stride 1 (seed 004 §5.2)."""
    return kernel // 2 if padding == "same" else int(padding)


def out_size(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


def conv_transpose(u, weight, stride: int, padding: int, size: tuple[int, int], bias=None):
    """The transpose of h -> conv2d(h, weight) applied to u, with output spatial size `size`
    (the output padding makes up what the forward stride dropped)."""
    k = weight.shape[-1]
    extra = [s - ((o - 1) * stride - 2 * padding + k) for s, o in zip(size, u.shape[-2:])]
    return F.conv_transpose2d(u, weight, bias, stride, padding, output_padding=tuple(extra))


class Conv(nn.Module):
    """f(h) = [MaxPool_p] act(W * h + b), W: [C_out, C_in, k, k] (seed 003 eqs. 19, 42).
    With `tokens`, the output [C, H', W'] is read as tokens [H'W', C] (MLP-Mixer stem)."""

    def __init__(self, in_shape, channels, kernel=3, stride=1, padding=0, act="tanh", bias=True,
                 pool: int | None = None, tokens: bool = False):
        super().__init__()
        c, hh, ww = in_shape
        self.in_shape, self.kernel, self.stride, self.padding = tuple(in_shape), kernel, stride, padding
        self.act_name, self.act, self.pool, self.tokens = act, activation(act), pool, tokens
        self.weight = nn.Parameter(torch.zeros(channels, c, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(channels)) if bias else None
        self.conv_shape = (channels, out_size(hh, kernel, stride, padding), out_size(ww, kernel, stride, padding))
        if pool:
            self.out_shape = (channels, self.conv_shape[1] // pool, self.conv_shape[2] // pool)
        elif tokens:
            self.out_shape = (self.conv_shape[1] * self.conv_shape[2], channels)
        else:
            self.out_shape = self.conv_shape

    def pre(self, h):
        return F.conv2d(h, self.weight, self.bias, self.stride, self.padding)

    def post(self, a):
        """The rest of f after the pre-activation a: f(h) = post(pre(h))."""
        s = self.act(a)
        if self.pool:
            return F.max_pool2d(s, self.pool)
        return s.flatten(2).transpose(1, 2) if self.tokens else s

    def forward(self, h):
        return self.post(self.pre(h))

    def weight_matrices(self):
        return [self.weight]

    def extra_repr(self):
        return (f"{self.in_shape} -> {self.out_shape}, kernel {self.kernel}, stride {self.stride}, "
                f"padding {self.padding}, {self.act_name}" + (f", pool {self.pool}" if self.pool else ""))


class ConvFeedback(nn.Module):
    """g(y) = act(Vᵀ ⋆ up(y) + c): a transposed convolution with its own trainable kernel V
    (same shape as W), after nearest-neighbour upsampling when f pools, or after reading tokens
    back as a map.  The learned inverse of a convolution (seed 004 §5.4)."""

    def __init__(self, layer: Conv, act: str):
        super().__init__()
        self.layer_shape, self.out_shape = layer.conv_shape, layer.in_shape
        self.stride, self.padding, self.pool, self.tokens = layer.stride, layer.padding, layer.pool, layer.tokens
        self.act_name, self.act = act, activation(act)
        self.weight = nn.Parameter(torch.zeros_like(layer.weight))
        self.bias = nn.Parameter(torch.zeros(layer.in_shape[0]))

    def forward(self, y):
        if self.pool:
            y = F.interpolate(y, size=self.layer_shape[1:], mode="nearest")
        elif self.tokens:
            y = y.transpose(1, 2).reshape(-1, *self.layer_shape)
        return self.act(conv_transpose(y, self.weight, self.stride, self.padding, self.out_shape[1:], self.bias))

    def weight_matrices(self):
        return [self.weight]


class ConvTranspose(AnalyticalFeedback):
    """G* = G*_Conv ∘ G*_Act ∘ G*_MaxPool (seed 003 eqs. 20, 22, 26/29, 43): unpool at the forward
    arg-max indices, activation feedback, transposed convolution with the forward kernel."""

    def context(self, h_prev, h):
        layer = self.layer
        a = layer.act(layer.pre(h_prev))
        idx = F.max_pool2d(a, layer.pool, return_indices=True)[1] if layer.pool else None
        return a, idx

    def __call__(self, t, ctx):
        layer, (a, idx) = self.layer, ctx
        if layer.pool:
            t = unpool(t, idx, layer.conv_shape[1:])
        elif layer.tokens:
            t = t.transpose(1, 2).reshape(-1, *layer.conv_shape)
        return linear_transpose(layer, act_feedback(layer.act_name, t, a, self.options), layer.weight)


@build_layer.register
def _(spec: ConvLayer, in_shape):
    if len(in_shape) != 3:
        raise ValueError(f"a conv layer needs a [C, H, W] input, got shape {tuple(in_shape)}")
    return [Conv(in_shape, spec.channels, spec.kernel, spec.stride, padding_of(spec.padding, spec.kernel),
                 spec.activation, spec.bias, spec.pool)]


@build_layer.register
def _(spec: PatchEmbedLayer, in_shape):
    if len(in_shape) != 3:
        raise ValueError(f"patch_embed needs a [C, H, W] input, got shape {tuple(in_shape)}")
    return [Conv(in_shape, spec.channels, spec.patch, spec.patch, 0, spec.activation, spec.bias, tokens=True)]


@feedback_for.register
def _(layer: Conv, act: str):
    return ConvFeedback(layer, act)


@analytical_feedback.register
def _(layer: Conv, options=FeedbackOptions()):
    return ConvTranspose(layer, options)


@linear_transpose.register
def _(layer: Conv, u, weight):
    return conv_transpose(u, weight, layer.stride, layer.padding, layer.in_shape[1:])
