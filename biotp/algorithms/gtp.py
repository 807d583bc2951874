"""Gradient target propagation (Farias & Maziero; seed 000, §3.1, Algorithm 1, App. B).

Every hidden population y_l relaxes down the gradient of the local cost of the layer above,

    dy_l/dt = -∂C_{l+1}/∂y_l,   C_{l+1} = ½ ||ŷ_{l+1} - f_{l+1}(y_l)||²          (eqs. 3-4)

integrated by Euler with step τ for T iterations (App. B eq. 32):

    y_l^t = y_l^{t-1} - τ W_{l+1}ᵀ [(f_{l+1}(y_l^{t-1}) - ŷ_{l+1}) ⊙ f'_{l+1}],  y_l^0 = h_l.

The gradient travels through the transposed forward weights W_{l+1}ᵀ (weight transport), so
the feedback is analytical and nothing is learned on the feedback side.

What the paper fixes, and this module follows:
  * Output target: the one-hot label, ŷ_L = e_y (§4, "the targets for the output layer
    are" the one-hot vectors), whatever the circuit's reporting loss is.
  * Order: Algorithm 1 runs "for l = N to 1": the target of layer l-1 is integrated with
    the *final* target of layer l held fixed, so layers are relaxed one after the other,
    top down, not as one coupled system.  All Δw_l are computed from the same forward
    pass and applied together afterwards ("Update the weights w_l = w_l + Δw_l" after the
    loop), which is what one optimiser step on the `.grad` filled here does.
  * Weights (eq. 5, eq. 12): Δw_l = -η ∂C_l/∂w_l = η (ŷ_l - y_l) ⊙ f'_l · y_{l-1}ᵀ with
    C_l = ½||ŷ_l - f_l(w_l h_{l-1})||² at the forward activity h_{l-1}; `.grad` is
    ∂C_l/∂w_l averaged over the batch, so an SGD step of lr η applies eq. 5.
  * Initial value (spec `start`): eqs. 13-14 and App. D eq. 39 replace the target by
    "equation (3) for one instant of time", ŷ_l = -τ ∂C_{l+1}/∂y_l, which is what produces
    the paper's Hebbian term -η y_l ∂y_l/∂w_l; the authors' code likewise starts the target
    accumulator at zero.  `start: zero` (default) therefore takes ŷ_l = y_l^T - y_l^0, the
    change accumulated by the Euler steps, with the gradients evaluated along the
    trajectory started at the activity (for T = 1, exactly eq. 14).  `start: activity`
    takes ŷ_l = y_l^T, the solution of eq. 3 started at h_l: this is the continuous-time
    `gradient` relaxation of the engines (DESIGN catalogue item 2).

Batches: each example's relaxation is independent of the others', so the Euler steps run
on the whole batch at once as matrix products; the batch size only sets how many examples
share one weight update (the paper uses 1: `data.batch_size: 1`), with `.grad` the batch
mean of the per-example eq. 5 gradients.
"""

from __future__ import annotations

from typing import Literal, final

import torch
from pydantic import Field

from ..config import Count, PositiveFloat, Spec
from .base import ALGORITHM_SPECS, Algorithm, Step


@ALGORITHM_SPECS.register
class GTPSpec(Spec):
    """Gradient target propagation (Farias & Maziero, seed 000).

    Targets: T Euler steps of size τ of eq. 3, dy_l/dt = -∂C_{l+1}/∂y_l with
    C_{l+1} = ½||ŷ_{l+1} - f_{l+1}(y_l)||² (eq. 4, App. B eq. 32), layer by layer from the
    top (Algorithm 1), ŷ_L = one-hot label (§4).  Weights: eq. 5, Δw_l = -η ∂C_l/∂w_l.
    `start: zero` makes ŷ_l the change accumulated by the Euler steps (y(T) - y(0)), the
    paper's target (eqs. 13-14, App. D eq. 39: ŷ_l = -τ ∂C_{l+1}/∂y_l for one step, which
    yields the Hebbian term -η y_l ∂y_l/∂w_l); `start: activity` makes ŷ_l = y(T), the
    Euler solution started at y_l(0) = h_l (the continuous-time `gradient` relaxation).
    """

    name: Literal["gtp"]
    tau: PositiveFloat = Field(50.0, description="Euler step τ (seed 000 App. B, Tables 1-3)")
    steps: Count = Field(1, description="Euler iterations T (seed 000 App. B)")
    start: Literal["zero", "activity"] = "zero"


@final
class GTP(Algorithm):
    name = "gtp"
    feedback_kind = "analytical"  # W_{l+1}ᵀ: weight transport, no feedback modules
    uses_feedback_modules = False
    dense_only = True

    def grads(self, x, y, *, forward=True, feedback=True):
        hs = self.net(x, local=True)
        out = hs[-1]
        loss = self.loss(out, y)
        if forward:
            L = len(hs) - 1
            targets = self.targets(hs, y)
            targets[L] = self.top_target(hs, y)
            # Σ_l C_l, each C_l reaching only w_l (graphs are cut between layers)
            total = sum(0.5 * ((t - hs[l]) ** 2).sum(1).mean() for l, t in targets.items())
            total.backward()
        return Step(loss.detach(), out.detach())

    @torch.no_grad()
    def top_target(self, hs, y) -> torch.Tensor:
        """ŷ_L: the one-hot label (seed 000 §4)."""
        return self.loss.optimum(y, hs[-1].dtype)

    @torch.no_grad()
    def targets(self, hs: list[torch.Tensor], y: torch.Tensor) -> dict[int, torch.Tensor]:
        """{l: ŷ_l} for l = 1..L-1, relaxed layer by layer from the top (Algorithm 1)."""
        L = len(hs) - 1
        above = self.top_target(hs, y)
        t = {}
        for l in range(L - 1, 0, -1):
            t[l] = above = self.relax(l, hs[l].detach(), above)
        return t

    @torch.no_grad()
    def relax(self, l: int, h_l: torch.Tensor, target_above: torch.Tensor) -> torch.Tensor:
        """T Euler steps of eq. 3 for layer l, from y_l = h_l, with ŷ_{l+1} fixed."""
        f = self.net.layers[l]  # f_{l+1}
        y_l = h_l.clone()
        for _ in range(self.spec.steps):
            y_l = y_l - self.spec.tau * self.cost_gradient(f, y_l, target_above)
        return y_l - h_l if self.spec.start == "zero" else y_l

    @staticmethod
    def cost_gradient(f, y_l: torch.Tensor, target_above: torch.Tensor) -> torch.Tensor:
        """∂C_{l+1}/∂y_l = W_{l+1}ᵀ [(f_{l+1}(y_l) - ŷ_{l+1}) ⊙ f'_{l+1}], one row per example."""
        out = f(y_l)
        return ((out - target_above) * f.derivative(out)) @ f.weight
