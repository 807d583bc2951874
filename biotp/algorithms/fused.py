"""Layer-local losses of dense layers in closed form, batched across layers of equal shape.

Every target-propagation rule trains each dense population by a loss of the form
||act(W u + b) - r||², summed over units and averaged over the batch: the forward layer loss
(u = h_{l-1}, r = ĥ_l; seed 002 Algorithm 1) and the inverse loss of g_l (u = f_l(h_{l-1} + ε),
r = h_{l-1} + ε or h_{l-1}).  With h = act(W u + b) its gradient is

    δ = (2 / B) (h - r) ⊙ act'(h),   ∂/∂W = δᵀ u,   ∂/∂b = Σ_batch δ,

which is what autograd computes for the same loss, without building a graph.  Losses of
layers that share a weight shape and an activation are reduced together: their activities are
stacked and each elementwise step is one pass over the stack instead of one per layer, which is
what lets the per-batch work of a deep MLP use a second core (torch splits an elementwise
operation across threads only above 32 768 elements, and a 100 × 240 activity has 24 000); the
products stay per layer, written into the stack and into `.grad` (stacking the weights would
copy them).  A run of equal layers is cut into chunks of at most `CHUNK_ELEMENTS` activities, so
the extra memory of batching stays bounded whatever the batch size and depth: at batch 1000
each layer is already large enough and goes alone.  Buffers the caller owns (`scratch`) take
δ and act' in place.
"""

from __future__ import annotations

import math
from itertools import groupby

import torch
from torch import nn

from ..layers import Dense, DenseFeedback, derivative
from ..layers.activations import ACTIVATIONS, derivative_, in_place

# activations computed in place whose derivative `derivative(name, h)` reads off the output
# h = act(a) exactly as autograd's backward of the same function does
FUSABLE_ACTIVATIONS = frozenset(name for name, act in ACTIVATIONS.items() if act.in_place is not None)
PARALLEL_ELEMENTS = 32768  # torch splits an elementwise operation over threads only above this size
CHUNK_ELEMENTS = 1 << 17  # activities per stacked tensor (144 000 = 6 × 100 × 240 splits in two)


def fusable(layer: nn.Module, kind: type = Dense) -> bool:
    """A plain dense layer (or feedback) of type `kind`: no transmission, no hooks, a bias, an
    activation with a closed-form derivative."""
    return (type(layer) is kind and layer.transmit is None and layer.act_name in FUSABLE_ACTIVATIONS
            and not (layer._forward_hooks or layer._forward_pre_hooks) and layer.bias is not None)


def dense_apply(layers: list[Dense], u: torch.Tensor) -> torch.Tensor:
    """act(W_i u_i + b_i) for equal-shaped layers with one activation, u: [k, B, in].  The
    products go layer by layer into one stacked output (stacking the weights would copy them
    all); the activation is one pass over the stack."""
    out = u.new_empty((len(layers), u.shape[1], layers[0].weight.shape[0]))
    for i, m in enumerate(layers):
        torch.addmm(m.bias, u[i], m.weight.T, out=out[i])
    return in_place(layers[0].act_name)(out)


def local_grads(layers: list[Dense], u: torch.Tensor, h: torch.Tensor, r: torch.Tensor,
                scratch: bool = False) -> torch.Tensor:
    """Add to `.grad` of each layer i the gradient of ||h_i - r_i||² / B, h_i = act(W_i u_i + b_i);
    u, h, r: [k, B, ...] for k equal-shaped layers with one activation (`scratch`: h and r are
    the caller's to lose, and are overwritten).  Returns Σ_i ||h_i - r_i||² / B."""
    batch, name = h.shape[1], layers[0].act_name
    if scratch:  # no new tensor: δ into r, act'(h) into h
        delta = r.sub_(h).neg_()
        slope = derivative_(name, h)
    else:
        delta, slope = h - r, derivative(name, h)
    loss = torch.dot(delta.flatten(), delta.flatten()) / batch
    delta.mul_(slope).mul_(2 / batch)
    del slope
    for i, m in enumerate(layers):
        _accumulate(m.weight, delta[i].T, u[i])
        _accumulate(m.bias, delta[i].sum(0))
    return loss


def _accumulate(p: torch.Tensor, g: torch.Tensor, u: torch.Tensor | None = None) -> None:
    """p.grad += g, or g @ u when `u` is given (a product written straight into the gradient)."""
    if u is None:
        p.grad = g if p.grad is None else p.grad + g
    elif p.grad is None:
        p.grad = g @ u
    else:
        p.grad.addmm_(g, u)


def chunks(items: list, key, size_of):
    """Runs of consecutive items with one `key`, cut into near-equal chunks of at most
    CHUNK_ELEMENTS activities (`size_of(item)` each)."""
    for _, run in groupby(items, key=key):
        run = list(run)
        n = math.ceil(len(run) * size_of(run[0]) / CHUNK_ELEMENTS)
        step = math.ceil(len(run) / max(n, 1))
        for i in range(0, len(run), step):
            yield run[i : i + step]


def forward_chunks(layers: dict[int, Dense], hs: list[torch.Tensor]) -> list[list[int]]:
    """The populations l (keys of `layers`, f_l = layers[l]) in the groups whose layer losses
    are reduced together, from the top down: the order in which targets arrive."""
    key = lambda l: (tuple(layers[l].weight.shape), layers[l].act_name)  # noqa: E731
    size = lambda l: hs[l].numel() + hs[l - 1].numel()  # noqa: E731
    return list(chunks(sorted(layers, reverse=True), key, size))


def layer_loss_grads(layers: list[Dense], inputs: list[torch.Tensor], outputs: list[torch.Tensor],
                     targets: list[torch.Tensor], scratch: bool = False) -> None:
    """Gradients of Σ_i ||f_i(inputs[i]) - targets[i]||² / B into `.grad`, given outputs[i] =
    f_i(inputs[i]), for equal-shaped layers with one activation (one chunk of `forward_chunks`).
    A single layer reads its tensors in place (`scratch`: and may overwrite its outputs and
    targets); several are stacked."""
    if len(layers) == 1:
        view = lambda ts: ts[0].flatten(1).unsqueeze(0)  # noqa: E731
        local_grads(layers, view(inputs), view(outputs), view(targets), scratch=scratch)
        return
    stack = lambda ts: torch.stack([t.flatten(1) for t in ts])  # noqa: E731
    local_grads(layers, stack(inputs), stack(outputs), stack(targets), scratch=True)


def inverse_loss_grads(encoders: dict[int, Dense], decoders: dict[int, DenseFeedback], h_prev: dict[int, torch.Tensor],
                       sigma: float, denoise: bool) -> torch.Tensor:
    """Gradients of Σ_l ||g_l(f_l(h_{l-1} + σ ε_l)) - r_l||² / B, r_l = h_{l-1} (`denoise`) or
    h_{l-1} + σ ε_l, into the decoders' `.grad`; returns the loss (no graph).  ε_l is drawn from
    the global generator layer by layer from the bottom up, as `TargetPropagation.inverse_loss`
    draws it.  f_l and g_l of one chunk share shapes: their elementwise work is one pass per step."""
    total = 0.0
    key = lambda l: (tuple(encoders[l].weight.shape), encoders[l].act_name,  # noqa: E731
                     tuple(decoders[l].weight.shape), decoders[l].act_name)
    size = lambda l: h_prev[l].numel() + encoders[l].weight.shape[0] * h_prev[l].shape[0]  # noqa: E731
    for ls in chunks(sorted(decoders), key, size):
        first = h_prev[ls[0]].flatten(1)
        noisy = first.new_empty((len(ls), *first.shape))
        for i, l in enumerate(ls):
            noisy[i].normal_()  # = torch.randn_like(h_prev[l]): the same draws in the same order
            noisy[i].mul_(sigma).add_(h_prev[l].flatten(1))
        code = dense_apply([encoders[l] for l in ls], noisy)
        g = [decoders[l] for l in ls]
        rec = dense_apply(g, code)
        if denoise:  # r = h_{l-1}: into the noisy buffer, free once the code is made (no new copy)
            for i, l in enumerate(ls):
                noisy[i].copy_(h_prev[l].flatten(1))
        total = total + local_grads(g, code, rec, noisy, scratch=True)
        del noisy, code, rec  # before the next chunk's are made
    return total
