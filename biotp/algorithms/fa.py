"""Feedback alignment (Lillicrap et al. 2016; seed 004 §2): the output error travels down
through fixed random matrices B_l in place of W_lᵀ."""

import torch
from torch.nn import functional as F

from .base import Algorithm, Step, require_dense


class _AlignedLinear(torch.autograd.Function):
    """a = W h + b forward; backward sends δ to the layer below through B (same shape as W)."""

    @staticmethod
    def forward(ctx, h, weight, bias, feedback):
        ctx.save_for_backward(h, feedback)
        ctx.has_bias = bias is not None
        return F.linear(h, weight, bias)

    @staticmethod
    def backward(ctx, grad_a):
        h, feedback = ctx.saved_tensors
        grad_h = grad_a @ feedback if ctx.needs_input_grad[0] else None
        grad_b = grad_a.sum(0) if ctx.has_bias else None
        return grad_h, grad_a.T @ h, grad_b, None


class FA(Algorithm):
    """δ_l = (B_{l+1}ᵀ δ_{l+1}) ⊙ f_l'(a_l);  ΔW_l ∝ -δ_l h_{l-1}ᵀ.  With B_l = W_l it is BP."""

    name = "fa"
    feedback_kind = "random"

    def __init__(self, circuit, net, loss):
        super().__init__(circuit, net, loss)
        require_dense(self)
        g = torch.Generator().manual_seed(circuit.seed + 1)
        for l, layer in enumerate(net.layers[1:], start=2):
            self.fixed_random(f"B{l}", layer.weight.shape, layer.n_in, g)

    def feedback_matrix(self, l: int) -> torch.Tensor:
        return getattr(self, f"B{l}")

    def grads(self, x, y, *, forward=True, feedback=True):
        h = x.flatten(1)
        for l, layer in enumerate(self.net.layers, start=1):
            if l == 1:
                a = layer.pre(h)
            else:
                a = _AlignedLinear.apply(h, layer.weight, layer.bias, self.feedback_matrix(l))
            h = layer.act(a)
        loss = self.loss(h, y)
        if forward:
            loss.backward()
        return Step(loss.detach(), h.detach())
