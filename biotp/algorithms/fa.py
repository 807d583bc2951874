"""Feedback alignment (Lillicrap et al. 2016; seed 004 §2.1.1): the error travels down through
fixed random feedback B_l, shaped like W_l, in place of W_l.

The backward pass is BP's with B_l substituted for W_l in each layer's transposed map
(`biotp.layers.linear_transpose`): B_lᵀ δ for a dense layer, the transposed convolution with
the fixed random kernel B_l for a convolution, the transpose of the fixed random untied map B_l
for a locally connected layer.  Parameter-free layers (max-pool, flatten, global average pooling)
and the activations pass the error on as BP does: they carry no weights to transport.
"""

from typing import Literal, final

import torch

from ..config import Spec
from ..errors import ConfigError
from ..layers import LocallyConnected, linear_transpose
from .base import ALGORITHM_SPECS, Algorithm, Step


class _FeedbackPath(torch.autograd.Function):
    """Identity on the pre-activation a = W h + b, which the caller computes from a detached h
    (so W and b receive their true gradients); the backward pass sends ∂L/∂a down to h through B
    instead of W."""

    @staticmethod
    def forward(ctx, h, a, layer, feedback):
        ctx.layer = layer
        ctx.save_for_backward(feedback)
        return a.view_as(a)

    @staticmethod
    def backward(ctx, grad_a):
        (feedback,) = ctx.saved_tensors
        grad_h = linear_transpose(ctx.layer, grad_a, feedback) if ctx.needs_input_grad[0] else None
        return grad_h, grad_a, None, None


def has_weights(layer) -> bool:
    return next(layer.parameters(), None) is not None


def check_transposable(rule: Algorithm) -> None:
    """Every weighted layer needs a transposed linear map to carry random feedback."""
    default = linear_transpose.dispatch(object)
    for l, layer in enumerate(rule.net.layers, start=1):
        if has_weights(layer) and linear_transpose.dispatch(type(layer)) is default:
            raise ConfigError(
                f"{rule.circuit.source or '<circuit>'}: network.layers: {rule.name} supports dense, conv and "
                f"locally connected layers and parameter-free ones (maxpool, flatten, gap); layer {l} is "
                f"{type(layer).__name__}"
            )


def fan_in(layer) -> int:
    """Inputs per output unit: n_in (dense), C_in k k (conv; locally connected, whose weight is
    [locations, C_out, C_in k k])."""
    w = layer.weight
    return w.shape[-1] if isinstance(layer, LocallyConnected) else w[0].numel()


@ALGORITHM_SPECS.register
class FASpec(Spec):
    name: Literal["fa"]


@final
class FA(Algorithm):
    """δ_{l-1} = B_lᵀ(δ_l) ⊙ f'_{l-1}(a_{l-1}), with B_lᵀ the transposed map of layer l taken with
    B_l in place of W_l;  ΔW_l ∝ -∂L/∂W_l given δ_l.  With B_l = W_l it is BP."""

    name = "fa"
    feedback_kind = "random"

    def __init__(self, circuit, net, loss):
        super().__init__(circuit, net, loss)
        check_transposable(self)
        g = torch.Generator().manual_seed(circuit.seed + 1)
        for l, layer in enumerate(net.layers[1:], start=2):
            if has_weights(layer):
                self.fixed_random(f"B{l}", layer.weight.shape, fan_in(layer), g)

    def feedback_matrix(self, l: int) -> torch.Tensor | None:
        """B_l, or None where layer l has no weights (or is the first: nothing lies below it)."""
        return getattr(self, f"B{l}", None)

    def grads(self, x, y, *, forward=True, feedback=True):
        h = x.reshape(x.shape[0], *self.net.input_shape)
        for l, layer in enumerate(self.net.layers, start=1):
            B = self.feedback_matrix(l)
            if B is None:
                h = layer(h)
            else:
                h = layer.post(_FeedbackPath.apply(h, layer.pre(h.detach()), layer, B))
        loss = self.loss(h, y)
        if forward:
            loss.backward()
        return Step(loss.detach(), h.detach())
