"""Layer-local losses of dense layers in closed form, batched across layers of equal shape.

Every target-propagation rule trains each dense population by a loss of the form
||act(W u + b) - r||², summed over units and averaged over the batch: the forward layer loss
(u = h_{l-1}, r = ĥ_l; seed 002 Algorithm 1) and the inverse loss of g_l (u = f_l(h_{l-1} + ε),
r = h_{l-1} + ε or h_{l-1}).  With h = act(W u + b) its gradient is

    δ = (2 / B) (h - r) ⊙ act'(h),   ∂/∂W = δᵀ u,   ∂/∂b = Σ_batch δ,

which is what autograd computes for the same loss, without building a graph.  Losses of
layers that share a weight shape and an activation are reduced together: one batched product
(`bmm`) and one elementwise pass for all of them instead of one per layer, which is what lets
the per-batch work of a deep MLP use a second core (torch splits an elementwise operation
across threads only above 32 768 elements, and a 100 × 240 activity has 24 000).
"""

from __future__ import annotations

from itertools import groupby

import torch
from torch import nn

from ..layers import Dense, DenseFeedback, derivative

# activations whose derivative `derivative(name, h)` reads off the output h = act(a) exactly
# as autograd's backward of the same function does
FUSABLE_ACTIVATIONS = frozenset({"tanh", "sigmoid", "relu", "linear", "leaky_relu"})


def fusable(layer: nn.Module, kind: type = Dense) -> bool:
    """A plain dense layer (or feedback) of type `kind`: no transmission, no hooks, an activation
    with a closed-form derivative."""
    return (type(layer) is kind and layer.transmit is None and layer.act_name in FUSABLE_ACTIVATIONS
            and not (layer._forward_hooks or layer._forward_pre_hooks) and layer.bias is not None)


def stack_params(layers: list[Dense]) -> tuple[torch.Tensor, torch.Tensor]:
    """The weights [k, out, in] and biases [k, 1, out] of equal-shaped layers."""
    return torch.stack([m.weight for m in layers]), torch.stack([m.bias for m in layers]).unsqueeze(1)


def dense_apply(layers: list[Dense], u: torch.Tensor) -> torch.Tensor:
    """act(W_i u_i + b_i) for equal-shaped layers with one activation, u: [k, B, in]."""
    w, b = stack_params(layers)
    return layers[0].act(torch.baddbmm(b, u, w.transpose(1, 2)))


def local_grads(layers: list[Dense], u: torch.Tensor, h: torch.Tensor, r: torch.Tensor) -> None:
    """Add to `.grad` of each layer i the gradient of ||h_i - r_i||² / B, h_i = act(W_i u_i + b_i);
    u, h, r: [k, B, ...] for k equal-shaped layers with one activation."""
    delta = (h - r) * derivative(layers[0].act_name, h) * (2 / h.shape[1])
    dw = torch.bmm(delta.transpose(1, 2), u)
    db = delta.sum(1)
    for i, m in enumerate(layers):
        _accumulate(m.weight, dw[i])
        _accumulate(m.bias, db[i])


def _accumulate(p: torch.Tensor, g: torch.Tensor) -> None:
    p.grad = g if p.grad is None else p.grad + g


def groups(items: list[tuple[int, Dense]]):
    """Runs of consecutive (l, layer) with one weight shape and activation: [(ls, layers)]."""
    key = lambda item: (tuple(item[1].weight.shape), item[1].act_name)  # noqa: E731
    for _, run in groupby(items, key=key):
        run = list(run)
        yield [l for l, _ in run], [m for _, m in run]


def layer_loss_grads(layers: dict[int, Dense], inputs: dict[int, torch.Tensor], outputs: dict[int, torch.Tensor],
                     targets: dict[int, torch.Tensor]) -> None:
    """Gradients of Σ_l ||f_l(inputs[l]) - targets[l]||² / B into `.grad`, given outputs[l] = f_l(inputs[l])."""
    for ls, ms in groups(sorted(layers.items())):
        stack = lambda d: torch.stack([d[l].flatten(1) for l in ls])  # noqa: E731
        local_grads(ms, stack(inputs), stack(outputs), stack(targets))


def inverse_loss_grads(encoders: dict[int, Dense], decoders: dict[int, DenseFeedback], h_prev: dict[int, torch.Tensor],
                       noise: dict[int, torch.Tensor], sigma: float, denoise: bool) -> torch.Tensor:
    """Gradients of Σ_l ||g_l(f_l(h_{l-1} + σ ε_l)) - r_l||² / B, r_l = h_{l-1} (`denoise`) or
    h_{l-1} + σ ε_l, into the decoders' `.grad`; returns the loss (no graph).  f_l and g_l of one
    group share shapes, so each group is two batched products forward and one backward."""
    total = 0.0
    items = sorted(decoders.items())
    key = lambda item: (tuple(encoders[item[0]].weight.shape), encoders[item[0]].act_name,  # noqa: E731
                        tuple(item[1].weight.shape), item[1].act_name)
    for _, run in groupby(items, key=key):
        ls = [l for l, _ in run]
        h = torch.stack([h_prev[l].flatten(1) for l in ls])
        noisy = h + sigma * torch.stack([noise[l].flatten(1) for l in ls])
        code = dense_apply([encoders[l] for l in ls], noisy)
        g = [decoders[l] for l in ls]
        rec = dense_apply(g, code)
        r = h if denoise else noisy
        local_grads(g, code, rec, r)
        total = total + (rec - r).square().sum() / h.shape[1]
    return total
