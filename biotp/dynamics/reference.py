"""The discrete side of the continuous-time model: the forward pass its forward phase
settles to, and the fast path's own learning rule on the same parameters (the reference
the settled dynamics are compared with).

  settled_forward   h_l = F_l(W_l h_{l-1} + b_l) (potential form: W_l F_{l-1}(h_{l-1}) + b_l), the
                    forward phase's fixed point; settled_output, the output's rate there
  FastPathRule      the fast path's `dtp` (for plasticity dtp) or `dtp_gn` (for dtp1) run on a
                    `Network` holding the given `Parameters`; its weight change in the
                    continuous model's scale:
                      dtp     ΔW_l = -(η/2) ∂‖h_l - t_l‖²/∂W_l (l < L; the fast path's layer loss is
                              ‖·‖², the continuous rule's ½‖·‖²), ΔW_L = -η β ∂L/∂W_L (the output
                              target is h_L - β ∂L/∂h_L); targets: DTP's, η̂ = β
                      dtp with the gradient relaxation: the fast path's gtp (seed 000, start at the
                              activity, τ = dt/τ_t, T = the steps of each layer's block), ΔW_l =
                              -η ∂½‖t_l - h_l‖²/∂W_l, the label as the output's target
                      dtp1    ΔW_l = η · dtp_gn's DTP1 update (refine: output, one iteration from the
                              activity, i.e. DTP's difference targets), with V_l, c_l as its decoder
                    The continuous model's activity targets are the fast path's `dtp` targets
                    exactly.  In the potential form (`dynamics.form: potential`, linear
                    feedback) the populations are dtp_gn's pre-activations and the two are the
                    same algorithm.  In the rate form, for the same targets the two
                    DTP1 changes agree to first order in β (exactly for linear layers), but
                    below the output its targets differ -- its decoders map an activity to
                    the pre-activation below (τ_{l-1} = a + Ω(σ(τ_l) - h_l)), the continuous
                    ones to the activity below -- by the diagonal f'(a_{l-1}), which does not
                    vanish with β.
"""

from __future__ import annotations

import json

import numpy as np
import torch

from ..errors import ConfigError
from ..layers.activations import activation


def settled_forward(model, params, x: torch.Tensor) -> list:
    """[h_0..h_L], the fixed point of the forward phase: h_l = F_l(W_l h_{l-1} + b_l), or in
    the potential form h_l = W_l F_{l-1}(h_{l-1}) + b_l (F_0 the identity: h_0 = x)."""
    h = [x.flatten(1).to(params.W[1])]
    potential = model.spec.form == "potential"
    for l in range(1, model.L + 1):
        F = activation(model.populations[f"layer{l}"].activation)
        below = activation(model.populations[f"layer{l - 1}"].activation) if potential and l > 1 else None
        a = (below(h[-1]) if below else h[-1]) @ params.W[l].T + params.b[l]
        h.append(a if potential else F(a))
    return h


def settled_output(model, params, x: torch.Tensor) -> torch.Tensor:
    """The network's output (the output layer's rate) at the forward phase's fixed point."""
    h_L = settled_forward(model, params, x)[-1]
    if model.spec.form == "potential":
        return activation(model.populations[f"layer{model.L}"].activation)(h_L)
    return h_L


def settled_error(model, params, loss, x, y) -> tuple[float, float]:
    """(error rate, mean loss) of the settled forward pass on (x, y)."""
    with torch.no_grad():
        out = settled_output(model, params, x)
        return float((out.argmax(1) != y.to(out.device)).double().mean()), float(loss(out, y.to(out.device)))


class FastPathRule:
    """The fast path's rule matching the circuit's plasticity (see the module docstring)."""

    def __init__(self, circuit, model, input_size: int):
        from ..algorithms import ALGORITHMS
        from ..algorithms.base import Loss
        from ..network import Network

        rule = model.spec.plasticity.rule
        spec, where = model.spec, f"{circuit.source or '<circuit>'}: dynamics"
        if rule == "dtp" and spec.relaxation == "gradient":
            blocks = len(model.relaxing) or 1
            steps = spec.steps(spec.target_phase) // blocks
            if (spec.target.mode != "clamped" or spec.schedule != "layerwise" or spec.solver != "euler"
                    or spec.stop != "fixed" or steps * blocks != spec.steps(spec.target_phase)):
                raise ConfigError(f"{where}: the fast path's gtp relaxes layer by layer from the label with Euler steps: "
                                  "compare it with target.mode: clamped, schedule: layerwise, solver: euler, stop: "
                                  "fixed and a target phase of a whole number of steps per layer")
            algorithm = {"name": "gtp", "tau": spec.dt / spec.tau_t, "steps": steps, "start": "activity"}
        elif rule == "dtp":
            if spec.target.mode != "gradient_step" or spec.relaxation != "difference":
                raise ConfigError(f"{where}: the fast path's dtp has DTP's targets: compare it with relaxation: "
                                  f"difference and target.mode: gradient_step (got {spec.relaxation}, {spec.target.mode})")
            algorithm = {"name": "dtp", "eta_hat": spec.target.beta}
        elif rule == "dtp" and spec.form == "potential":
            raise ConfigError(f"{where}: the fast path has no dtp on pre-activations: compare the potential form's dtp1 "
                              "with dtp_gn")
        elif rule == "dtp1":
            algorithm = {"name": "dtp_gn", "beta": spec.target.beta, "iterations": 1, "refine": "output",
                         "start": "activity", "schedule": "layerwise", "layer_scaling": spec.plasticity.influence}
        else:
            raise ConfigError(f"{where}.plasticity.rule: the discrete reference needs plasticity (dtp or dtp1); got none")
        self.rule, self.model, self.eta, self.beta = rule, model, spec.plasticity.eta, spec.target.beta
        self.algorithm = algorithm["name"]
        self.circuit = circuit.with_updates(f"algorithm={json.dumps(algorithm)}")
        cls = ALGORITHMS[algorithm["name"]]
        self.net = Network(self.circuit, input_size, with_feedback=cls.uses_feedback_modules, seed=0).double()
        self.loss = Loss(self.circuit.loss, model.populations[f"layer{model.L}"].size)
        self.algo = cls(self.circuit, self.net, self.loss).double()

    def load(self, params) -> None:
        """Put `params` into the fast path's network."""
        with torch.no_grad():
            for l, layer in enumerate(self.net.layers, 1):
                layer.weight.copy_(params.W[l])
                if layer.bias is not None:
                    layer.bias.copy_(params.b[l])
            for key, g in self.net.feedback.items():
                if int(key) not in params.V:
                    continue
                g.weight.copy_(params.V[int(key)])
                if g.bias is not None:
                    g.bias.copy_(params.c[int(key)])

    def update(self, params, x, y) -> dict:
        """{l: (ΔW_l, Δb_l)}: the fast path's change from `params` on the batch (x, y)."""
        self.load(params)
        for p in self.net.parameters():
            p.grad = None
        self.algo.grads(x.double(), y, forward=True, feedback=False)
        L, out = self.model.L, {}
        for l, layer in enumerate(self.net.layers, 1):
            if self.algorithm == "dtp":
                scale = -self.eta * self.beta if l == L else -self.eta / 2
            else:  # gtp's .grad is ∇ Σ ½‖t_l - h_l‖²; dtp_gn's is minus its update
                scale = -self.eta
            bias = layer.bias.grad.detach().clone() if layer.bias is not None else torch.zeros_like(layer.weight[:, 0])
            out[l] = (scale * layer.weight.grad.detach().clone(), scale * bias)
        return out


class Reference:
    """The fast path's own rule beside a continuous run: its own forward-weight trajectory
    from the same start (sharing the continuous run's feedback weights, which the fast path's
    rule does not train here), and for every batch the angle and relative distance
    ‖ΔW_cont − ΔW_disc‖/‖ΔW_disc‖ between the continuous ΔW_l and the fast path's from the
    same weights.  `expect` before a batch, `compare` after it, `columns` per metrics row."""

    def __init__(self, circuit, model, input_size: int, params):
        self.rule = FastPathRule(circuit, model, input_size)
        self.params = params.copy(torch.float64)
        self.pending: dict[str, list] = {}

    def expect(self, params, x, y) -> None:
        """Before a batch: the parameters it starts from and the fast path's ΔW from them."""
        self.start = params
        self.dW = self.rule.update(params.copy(torch.float64), x, y)

    def compare(self, params, x, y) -> None:
        """After the batch: compare its ΔW with the expected one; advance the reference."""
        for l, (dref, _) in self.dW.items():
            dcont = (params.W[l] - self.start.W[l]).double()
            dref = dref.to(dcont.device)
            self.pending.setdefault(f"angle_layer{l}", []).append(angle(dcont, dref))
            self.pending.setdefault(f"distance_layer{l}", []).append(
                float((dcont - dref).norm() / dref.norm().clamp_min(1e-30)))
        self.params.V, self.params.c = ({k: v.double().clone() for k, v in d.items()} for d in (params.V, params.c))
        for l, (dW, db) in self.rule.update(self.params, x, y).items():
            self.params.W[l] = self.params.W[l] + dW
            self.params.b[l] = self.params.b[l] + db

    def columns(self, evaluate, L: int) -> dict:
        """A metrics row's reference columns: its test error (`evaluate(params)`), the mean
        angles and distances since the last row (nan before any batch)."""
        row = {"reference_test_error": evaluate(self.params)[0]}
        for l in range(1, L + 1):
            for name in (f"angle_layer{l}", f"distance_layer{l}"):
                vals = self.pending.pop(name, [])
                row[name] = float(np.mean(vals)) if vals else np.nan
        return row


def angle(a: torch.Tensor, b: torch.Tensor) -> float:
    """Angle (degrees) between two weight changes, flattened."""
    a, b = a.flatten().double(), b.flatten().double()
    cos = (a @ b) / (a.norm() * b.norm()).clamp_min(1e-300)
    return float(torch.rad2deg(torch.arccos(cos.clamp(-1, 1))))
