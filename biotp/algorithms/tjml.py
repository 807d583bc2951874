"""Target propagation through analytical feedback (Bao et al.; seed 003 Algorithm 2, TJML-DTP).

One batch:
  1. forward pass h_l = f_l(h_{l-1}) (lines 1-4);
  2. G*_l = argmin_H J*(H, f_l) in closed form for every layer (line 7, eq. 18): under TJMC
     the transposes of seed 003 §5 (Wᵀ, transposed convolution, max-unpool, ς or σ'(x) ⊙ t,
     the LayerNorm and GAP rules, skip and composite rules), see `biotp.layers`;
  3. t_L = h_L - β ∂L/∂h_L (line 9), t_{l-1} = G*_l(t_l) + h_{l-1} - G*_l(h_l) (line 11, the
     difference correction of eq. 8);
  4. every f_l, the output layer included, descends L_l = ||t_l - h_l||² / (2β) (eq. 5,
     lines 14-16); with t fixed, its gradient is BP's when β -> 0 under TJMC.
No feedback weights are trained.

`condition: pseudo_inverse | inverse` (PJMC, IJMC; seed 003 eqs. 12-13) replace G*_l by the
(pseudo-)inverse of f_l's Jacobian at the forward pass, t_{l-1} = h_{l-1} + J_l⁺ (t_l - h_l):
per-example Jacobians by autograd, for small layers only (seed 003 §4, "Limitations").
"""

from __future__ import annotations

from typing import Literal, final

import torch
from pydantic import Field

from ..config import PositiveFloat, Spec
from ..errors import ConfigError
from ..layers import FeedbackOptions, analytical_feedback
from .base import ALGORITHM_SPECS, Algorithm, Step


@ALGORITHM_SPECS.register
class TJMLSpec(Spec):
    """DTP through the analytical feedback G* of seed 003 Algorithm 2 (no feedback training).

    `beta` is β of the output target t_L = h_L - β ∂L/∂h_L.  `condition`: transpose (TJMC,
    the paper's method), pseudo_inverse (PJMC) or inverse (IJMC, square invertible layers).
    `activation_feedback`: varsigma (eqs. 26-27) or hadamard (σ'(x) ⊙ t, eq. 29).
    `layernorm_feedback`: frozen_s (eqs. 30-35) or exact (the transpose including ∂s/∂x)."""

    name: Literal["tjml"]
    beta: PositiveFloat = Field(0.01, description="output target step β (seed 003 Algorithm 2, line 9)")
    condition: Literal["transpose", "pseudo_inverse", "inverse"] = "transpose"
    activation_feedback: Literal["varsigma", "hadamard"] = "varsigma"
    layernorm_feedback: Literal["frozen_s", "exact"] = "frozen_s"


@final
class TJML(Algorithm):
    """The rule of seed 003 Algorithm 2 (see the module docstring)."""

    name = "tjml"
    feedback_kind = "analytical"
    supports_transmission = False  # G* is built from the weights (DenseTranspose ignores `transmit`)
    uses_feedback_modules = False

    def __init__(self, circuit, net, loss):
        super().__init__(circuit, net, loss)
        options = FeedbackOptions(self.spec.activation_feedback, self.spec.layernorm_feedback)
        self.analytical = [analytical_feedback(layer, options) for layer in net.layers]  # [l - 1] is G*_l

    def feedback_map(self, l):
        return self.analytical[l - 1]

    def grads(self, x, y, *, forward=True, feedback=True):
        hs = self.net(x, local=True)
        out = hs[-1]
        loss = self.loss(out, y)
        if forward:
            self.target_losses(hs, self.targets(hs, y), self.spec.beta).backward()
        return Step(loss.detach(), out.detach())

    @torch.no_grad()
    def targets(self, hs, y):
        """{l: t_l} for l = 1..L, from the output down (Algorithm 2 lines 9-12)."""
        L = len(hs) - 1
        t = {L: self.top_target(hs, y)}
        for l in range(L, 1, -1):
            t[l - 1] = self.propagate(l, hs, t[l])
        return t

    def top_target(self, hs, y):
        """t_L = h_L - β ∂L(h_L, y)/∂h_L, L the per-example loss (line 9)."""
        return self.output_target(hs, y, self.spec.beta)

    def propagate(self, l, hs, t_l):
        h_prev, h = hs[l - 1].detach(), hs[l].detach()
        if self.spec.condition != "transpose":
            return h_prev + self.inverse_step(l, h_prev, t_l - h)
        G = self.analytical[l - 1]
        ctx = G.context(h_prev, h)
        return h_prev + G(t_l, ctx) - G(h, ctx)

    def inverse_step(self, l, h_prev, delta):
        """J_l⁺ δ (PJMC) or J_l⁻¹ δ (IJMC), J_l = ∂f_l/∂h_{l-1} at each example."""
        layer, n = self.net.layers[l - 1], h_prev.shape[0]

        def single(h):
            return layer(h.unsqueeze(0)).flatten()

        J = torch.func.vmap(torch.func.jacrev(single))(h_prev).reshape(n, delta[0].numel(), h_prev[0].numel())
        d = delta.flatten(1).unsqueeze(-1)
        if self.spec.condition == "inverse":
            if J.shape[1] != J.shape[2]:
                raise ConfigError(
                    f"{self.circuit.source or '<circuit>'}: algorithm.condition: inverse needs square layers, "
                    f"but layer {l} maps {J.shape[2]} to {J.shape[1]} units; use pseudo_inverse or transpose"
                )
            step = torch.linalg.solve(J, d)
        else:
            step = torch.linalg.pinv(J) @ d
        return step.reshape(h_prev.shape)
