"""DTP with feedback trained by the local difference reconstruction loss (Ernoult et al. 2022,
as Algorithm 1 and eqs. 7-11 of seed 003).

Targets (seed 003 eq. 7-8): t_L = h_L - β ∂L/∂h_L, and for every l ≤ L the difference
correction t_{l-1} = g_l(t_l) + h_{l-1} - g_l(f_l(h_{l-1})); unlike `dtp` the penultimate
target also goes through g_L, so every g_l, l = 2..L, is trained.

Forward losses (seed 003 eq. 5): (1/2β)||t_l - h_l||² for each layer, t_l held fixed; for
the output layer this is the per-example loss's own gradient, so the global loss is used.

Feedback (Algorithm 1, eqs. 9-11), per layer, ε, η ~ N(0, σ²I) independent:
    r̂ = g_l(f_l(h + ε)) - g_l(f_l(h)) + h,   r̃ = g_l(f_l(h) + η) - g_l(f_l(h)) + h,
    L^IP = -εᵀ(r̂ - h),   L^RR = ½||r̃ - h||²,   L^LDRL = L^IP + L^RR  (summed over layers).
Its minimum in expectation (σ → 0) is ∂g_l = (∂f_l)ᵀ (seed 003 Prop. 3).

`feedback_iterations` = K feedback updates per batch (Algorithm 1's inner loop "for i = 1 to
N"), each with fresh noise.  The first K-1 steps are taken here with `feedback_optimizer`
(the caller's feedback optimiser, when it hands it over by setting the attribute, so its
state is the one checkpointed); the K-th gradient is left in `.grad` for the caller's step.
Without a handed-over optimiser and K > 1, one is built from `feedback.optimizer` and all K
steps are taken here (then nothing is left in `.grad`).
"""

from __future__ import annotations

from typing import Literal, final

import torch
from pydantic import Field

from ..config import Count, PositiveFloat, Spec
from ..optim import make_optimizer
from .base import ALGORITHM_SPECS, Step
from .propagation import TargetPropagation


@ALGORITHM_SPECS.register
class LDRLSpec(Spec):
    """DTP targets with feedback trained by the local difference reconstruction loss
    L^IP + L^RR (Ernoult et al. 2022; seed 003 Algorithm 1, eqs. 7-11), `feedback_iterations`
    feedback updates per batch; forward losses (1/2β)||t_l - h_l||² (seed 003 eq. 5)."""

    name: Literal["ldrl"]
    beta: PositiveFloat = Field(0.1, description="output target step β (seed 003 eq. 7)")
    feedback_iterations: Count = Field(1, description="feedback updates per batch (Algorithm 1, inner loop)")


@final
class LDRL(TargetPropagation):
    name = "ldrl"

    def __init__(self, circuit, net, loss):
        super().__init__(circuit, net, loss)
        self.feedback_optimizer: torch.optim.Optimizer | None = None
        self._own_optimizer: torch.optim.Optimizer | None = None

    @property
    def feedback_iterations(self) -> int:
        return self.spec.feedback_iterations

    def inverse_layers(self, L):
        return range(2, L + 1)

    def top_target(self, hs, y):
        """t_{L-1} = g_L(t_L) + h_{L-1} - g_L(h_L), t_L = h_L - β ∂L/∂h_L (seed 003 eqs. 7-8)."""
        return self.propagate(len(hs) - 1, hs, self.output_target(hs, y, self.spec.beta))

    def inverse_loss(self, hs):
        """Σ_l L^IP + L^RR (seed 003 eqs. 9-11), batch mean."""
        total = 0.0
        for l in self.inverse_layers(len(hs) - 1):
            total = total + self.ldrl_loss(l, hs[l - 1].detach())
        return total

    def ldrl_loss(self, l, h, eps=None, eta=None):
        """L^IP + L^RR at layer l for activity h of population l-1 (noise drawn if not given)."""
        f, g = self.net.layers[l - 1], self.g(l)
        with torch.no_grad():
            code = f(h)
            eps = self.noise * torch.randn_like(h) if eps is None else eps
            eta = self.noise * torch.randn_like(code) if eta is None else eta
            code_eps = f(h + eps)
        base = g(code)
        r_hat = g(code_eps) - base + h
        r_tilde = g(code + eta) - base + h
        ip = -(eps * (r_hat - h)).sum(1)
        rr = 0.5 * ((r_tilde - h) ** 2).sum(1)
        return (ip + rr).mean()

    def grads(self, x, y, *, forward=True, feedback=True):
        hs = self.net(x, local=True)
        out = hs[-1]
        loss = self.loss(out, y)
        if forward:
            targets = self.targets(hs, y)
            total = loss + self.target_losses(hs, targets, self.spec.beta)
            total.backward()
        fb_loss = None
        if feedback:
            fb_loss = self.train_feedback(hs)
        return Step(loss.detach(), out.detach(), fb_loss)

    def train_feedback(self, hs):
        """K feedback updates (Algorithm 1); returns the first iteration's loss."""
        K = self.feedback_iterations
        params = self.feedback_params()
        opt = self.feedback_optimizer
        if opt is None and K > 1:
            if self._own_optimizer is None:
                self._own_optimizer = make_optimizer(self.circuit.feedback.optimizer, params)
            opt = self._own_optimizer
        hs = [h.detach() for h in hs]
        first = None
        for k in range(K):
            for p in params:
                p.grad = None
            fb = self.inverse_loss(hs)
            fb.backward()
            first = fb.detach() if first is None else first
            if k < K - 1 or opt is self._own_optimizer and opt is not None:
                opt.step()
        if opt is not None and opt is self._own_optimizer:
            for p in params:
                p.grad = None
        return first
