"""Differential target propagation with Gauss-Newton-normalised updates and iterative
inverses (Bengio 2020, seed 001).

Seed 001 writes every layer as f_l(h_{l-1}) = W_l σ(h_{l-1}): its populations are our
pre-activations a_l (our Dense computes h_l = σ_l(a_l), a_l = W_l h_{l-1} + b_l), and its
σ(h_{l-1}) is our h_{l-1}.  This module works in that space:

  f_l(a_{l-1}) = W_l σ_{l-1}(a_{l-1}) + b_l,      g_l(a_l) = Ω_l σ_l(a_l) + c_l,

so the decoder g_l is the network's feedback module made linear (Ω_l h_l + c_l, predicting
the pre-activation a_{l-1}).  One batch:

  1. τ_L = a_L - β ∂L/∂a_L (eq. target-prop, per-example loss).
  2. Targets refined by iterating approximate inverses (§5-§7), `iterations` = K:
     refine=output (eq. iterative-tau-out-update):  τ_{l-1} <- τ_{l-1} + g_l(τ_l) - g_l(f_l(τ_{l-1}))
       start=activity: τ_{l-1} starts at a_{l-1}, so the first step is DTP's difference
       correction (the DESIGN table's "DTP targets refined by iterative inverses");
       start=decoder: τ_{l-1} starts at g_l(τ_l) (the algorithm box).
     refine=input (eq. u-recurrence):  u_l <- u_l + τ_l - f_l(g_l(u_l)), u_l from τ_l,
       τ_{l-1} = g_l(u_l).
     schedule=layerwise: K iterations at layer l with τ_l final, then layer l-1.
     schedule=parallel (§7, "the simultaneous optimization of targets at all layers in
       parallel"): K synchronous sweeps, every layer updated from the previous sweep's
       values; information needs L-1 sweeps to reach τ_1, so K ≥ L-1 is required.
  3. Forward weights (the box's last line, §8):
       ΔW_l = s_l (τ_l - a_l) n_{l-1}ᵀ,  n_{l-1} = σ(h_{l-1}) / ||σ(h_{l-1})||²,
       s_l = ||τ_L - a_L||² / ||τ_l - a_l||²  (per example; s_l = 1 without layer_scaling:
       pure DTP1, eq. delta-dtp-regular).  With a bias the input vector is [σ(h_{l-1}); 1]
       (the same Gauss-Newton derivation, eq. delta-w-proof, with one more input).
  4. Decoder (the box): Ω_l += β (a_{l-1} - g_l(a_l)) σ(a_l)ᵀ / ||σ(a_l)||², bias likewise.

Normalisation: the box writes n_{l-1} = σ(h_{l-1})/||σ(h_{l-1})|| and the decoder step with
"σ(h_l)/||σ(h_l)||", but the derivation (eq. delta-w-proof: "δ_{i,i''} ||σ(h_{l-1})||^{-2}")
and §10 ("the normalized input n_{l-1} = σ(h_{l-1})/||σ(h_{l-1})||²") give the squared norm;
we use the squared norm for both (the decoder rule is the same DTP1 step applied to g_l).

Neither update is the gradient of a loss, so `.grad` is set directly to minus the batch mean
of the update: an SGD step of lr η then adds η ΔW (forward optimiser; η plays the global
rate) and η_fb ΔΩ (feedback optimiser; η_fb plays the decoder's β).
"""

from __future__ import annotations

from typing import Literal, final

import torch
from pydantic import Field

from ..config import Bool, Count, PositiveFloat, Spec
from ..errors import ConfigError
from ..layers import activation
from .base import ALGORITHM_SPECS, Algorithm, Step


def _normalised(h: torch.Tensor, bias: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(h / (||h||² + b), 1 / (||h||² + b)) per row, b = 1 with a bias input, else 0."""
    inv = 1.0 / ((h * h).sum(1, keepdim=True) + (1.0 if bias else 0.0)).clamp_min(torch.finfo(h.dtype).tiny)
    return h * inv, inv


@ALGORITHM_SPECS.register
class DTPGNSpec(Spec):
    """Differential target propagation with Gauss-Newton-normalised updates (Bengio 2020,
    seed 001).  In the paper's parametrisation f_l(h_{l-1}) = W_l σ(h_{l-1}) the
    populations are pre-activations: τ_L = a_L - β ∂L/∂a_L; targets refined by iterating
    approximate inverses (`refine: output`, eq. iterative-tau-out-update:
    τ_{l-1} <- τ_{l-1} + g_l(τ_l) - g_l(f_l(τ_{l-1})); `refine: input`, eq. u-recurrence:
    u <- u + τ_l - f_l(g_l(u)), τ_{l-1} = g_l(u)), `iterations` = K per layer
    (`layerwise`) or K sweeps over all layers at once (`parallel`, seed 001 §7);
    ΔW_l = s_l (τ_l - a_l) σ(h_{l-1})ᵀ / ||σ(h_{l-1})||² (DTP1, eq. delta-dtp-regular),
    s_l = ||τ_L - a_L||² / ||τ_l - a_l||² with `layer_scaling` (DTP, §8), else s_l = 1.
    `start: activity` begins the output iteration at a_{l-1}, so its first step is DTP's
    difference correction; `start: decoder` at g_l(τ_l) (the algorithm box).
    """

    name: Literal["dtp_gn"]
    beta: PositiveFloat = Field(0.1, description="output target step β (seed 001 eq. target-prop)")
    refine: Literal["output", "input"] = "output"
    iterations: Count = Field(5, description="K: refinement iterations (sweeps when parallel)")
    schedule: Literal["parallel", "layerwise"] = "parallel"
    start: Literal["activity", "decoder"] = "activity"
    layer_scaling: Bool = True


@final
class DTPGN(Algorithm):
    name = "dtp_gn"
    feedback_kind = "learned"
    uses_feedback_modules = True
    dense_only = True

    def __init__(self, circuit, net, loss):
        super().__init__(circuit, net, loss)
        where = circuit.source or "<circuit>"
        if circuit.feedback.activation not in (None, "linear"):
            raise ConfigError(
                f"{where}: feedback.activation: dtp_gn's decoder is g_l(a_l) = Ω_l σ(a_l) + c_l "
                f"(seed 001), linear in the population it reads; got {circuit.feedback.activation!r}, "
                "expected 'linear' or unset"
            )
        for g in net.feedback.values():  # Ω_l h_l + c_l, predicting the pre-activation a_{l-1}
            g.act_name, g.act = "linear", activation("linear")
        spec = self.spec
        if spec.schedule == "parallel" and spec.iterations < net.depth - 1:
            raise ConfigError(
                f"{where}: algorithm.iterations: parallel refinement needs at least depth-1 = "
                f"{net.depth - 1} sweeps for the output target to reach layer 1; got {spec.iterations}"
            )

    # ------------------------------------------------------------ the network in a-space
    def f(self, l: int, a_prev: torch.Tensor) -> torch.Tensor:
        """f_l(a_{l-1}) = W_l σ_{l-1}(a_{l-1}) + b_l (l ≥ 2)."""
        return self.net.layers[l - 1].pre(self.net.layers[l - 2].act(a_prev))

    def g(self, l: int, a: torch.Tensor) -> torch.Tensor:
        """g_l(a_l) = Ω_l σ_l(a_l) + c_l."""
        return self.net.feedback[str(l)](self.net.layers[l - 1].act(a))

    def preactivations(self, hs: list[torch.Tensor]) -> list[torch.Tensor]:
        """[None, a_1, ..., a_L] from the activities [h_0, ..., h_L]."""
        return [None] + [layer.pre(hs[l]) for l, layer in enumerate(self.net.layers)]

    # ------------------------------------------------------------------------ targets
    @torch.no_grad()
    def top_target(self, a_L: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """τ_L = a_L - β ∂L(h_L, y)/∂a_L, L the per-example loss."""
        a = a_L.detach().requires_grad_()
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(self.loss(self.net.layers[-1].act(a), y, reduction="sum"), a)
        return a_L - self.spec.beta * grad

    @torch.no_grad()
    def preactivation_targets(self, hs, y) -> dict[int, torch.Tensor]:
        """{l: τ_l} for l = 1..L, in pre-activation space."""
        a = self.preactivations([h.detach() for h in hs])
        L = len(hs) - 1
        tau = {L: self.top_target(a[L], y)}
        spec = self.spec
        if spec.schedule == "layerwise":
            for l in range(L, 1, -1):
                tau[l - 1] = self.readout(l, self.refine(l, tau[l], self.initial(l, tau[l], a), spec.iterations))
            return tau
        # parallel: initial values, then K synchronous sweeps over all layers
        state = {}
        for l in range(L, 1, -1):
            state[l] = self.initial(l, tau[l], a)
            tau[l - 1] = self.readout(l, state[l])
        for _ in range(spec.iterations):
            state = {l: self.refine(l, tau[l], state[l], 1) for l in range(L, 1, -1)}
            tau.update({l - 1: self.readout(l, state[l]) for l in range(L, 1, -1)})
        return tau

    def initial(self, l, tau_l, a):
        """The iterate's starting value: τ_{l-1} (output refinement) or u_l (input)."""
        if self.spec.refine == "input":
            return tau_l
        return a[l - 1] if self.spec.start == "activity" else self.g(l, tau_l)

    def refine(self, l, tau_l, state, k):
        """k iterations of the chosen refinement at layer l; returns the iterate."""
        for _ in range(k):
            if self.spec.refine == "output":
                state = state + self.g(l, tau_l) - self.g(l, self.f(l, state))
            else:
                state = state + tau_l - self.f(l, self.g(l, state))
        return state

    def readout(self, l, state):
        """τ_{l-1} from the iterate: itself (output) or g_l(u_l) (input)."""
        return state if self.spec.refine == "output" else self.g(l, state)

    @torch.no_grad()
    def targets(self, hs, y) -> dict[int, torch.Tensor]:
        """{l: ĥ_l = σ_l(τ_l)} for l = 1..L-1: the targets of the populations' activities."""
        tau = self.preactivation_targets(hs, y)
        return {l: self.net.layers[l - 1].act(t) for l, t in tau.items() if l < len(hs) - 1}

    # ------------------------------------------------------------------------ updates
    @torch.no_grad()
    def updates(self, hs, tau) -> dict[int, tuple[torch.Tensor, torch.Tensor | None]]:
        """{l: (ΔW_l, Δb_l)}: the DTP (or DTP1) update, batch mean."""
        a = self.preactivations(hs)
        L = len(hs) - 1
        top = ((tau[L] - a[L]) ** 2).sum(1, keepdim=True)
        out = {}
        for l in range(1, L + 1):
            layer = self.net.layers[l - 1]
            delta = tau[l] - a[l]
            if self.spec.layer_scaling and l < L:
                own = (delta * delta).sum(1, keepdim=True)
                delta = delta * torch.where(own > 0, top / own.clamp_min(torch.finfo(own.dtype).tiny), 0.0)
            n, inv = _normalised(hs[l - 1].flatten(1), layer.bias is not None)  # an image input is flat to a dense layer
            dW = delta.T @ n / len(delta)
            db = (delta * inv).mean(0) if layer.bias is not None else None
            out[l] = (dW, db)
        return out

    def decoder_updates(self, hs):
        """{l: (ΔΩ_l, Δc_l)} of the box's decoder rule (without β), and ½||a_{l-1} - g_l(a_l)||²."""
        a = self.preactivations(hs)
        out, loss = {}, 0.0
        for l in range(2, len(hs)):
            g = self.net.feedback[str(l)]
            err = a[l - 1] - self.g(l, a[l])
            n, inv = _normalised(hs[l], g.bias is not None)
            out[l] = (err.T @ n / len(err), (err * inv).mean(0) if g.bias is not None else None)
            loss = loss + 0.5 * (err * err).sum(1).mean()
        return out, loss

    @staticmethod
    def _set_grad(param, update):
        if param is not None:
            param.grad = -update if param.grad is None else param.grad - update

    @torch.no_grad()
    def grads(self, x, y, *, forward=True, feedback=True):
        hs = self.net(x)
        out = hs[-1]
        loss = self.loss(out, y)
        if forward:
            tau = self.preactivation_targets(hs, y)
            for l, (dW, db) in self.updates(hs, tau).items():
                layer = self.net.layers[l - 1]
                self._set_grad(layer.weight, dW)
                self._set_grad(layer.bias, db)
        fb_loss = None
        if feedback:
            ups, fb_loss = self.decoder_updates(hs)
            for l, (dO, dc) in ups.items():
                g = self.net.feedback[str(l)]
                self._set_grad(g.weight, dO)
                self._set_grad(g.bias, dc)
            fb_loss = torch.as_tensor(fb_loss)
        return Step(loss.detach(), out.detach(), fb_loss)
