"""The torch engine: the continuous-time model integrated batched over examples.

One presentation of a batch of examples (`TorchEngine.present`):
  1. forward phase: τ_f dh_l/dt = -h_l + f_l(a_l) from rest (h = 0), for `forward_phase`
     or until steady; no plasticity (the targets do not move, so the rule is anytime);
  2. feedback plasticity on the settled activities (`model.update_feedback`);
  3. onset of the target phase: t_l = h_l, n_{l-1} = h_{l-1}/‖h_{l-1}‖², the top target
     steps to its value (its weight change is the step's integral);
  4. target phase: the relaxation ODE for all layers at once or one block at a time,
     with dW_l/dt = η(-γW_l + (dt_l/dt) n_{l-1}ᵀ), for `target_phase` or until steady;
  5. with `influence`, the DTP layer factor is applied to the phase's change.
Steady state: ‖dy_l/dt‖ ≤ atol + rtol‖y_l‖ for every layer l and example.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..dynamics import model as M
from .integrators import SOLVERS


def forward_field(y: dict, a1: torch.Tensor, model: M.Model, w: M.Weights, tau_f: float) -> dict:
    """dh_l/dt for l = 1..L (see `model.forward`); `a1` = W_1 x + b_1 is constant while the
    input x is clamped."""
    h = y["h"]
    rates = {}
    for l in range(1, model.L + 1):
        a = a1 if l == 1 else M.drive(w, l, h[l - 1])
        rates[l] = model.forward[l].evaluate({"h": h[l], "a": a, "tau_f": tau_f, "fwd": 1.0})
    return {"h": rates}


def target_field(y: dict, model: M.Model, t0: list, h: list, gh: dict, n: list, w: M.Weights, on: dict, tau_t: float) -> dict:
    """d(t or u)_l/dt for the relaxing layers and, with plasticity, dW_l/dt."""
    if "W" in y:
        w = M.Weights([y["W"].get(l, w.W[l]) if l else None for l in range(model.L + 1)], w.b, w.V, w.c)
    state = {"t": y.get("t", {}), "u": y.get("u", {})}
    rates, tdot, _ = M.target_rates(model, state, t0, h, gh, w, on, tau_t)
    out = {model.var: rates}
    if "W" in y:
        out["W"] = M.plasticity_rates(model, tdot, n, w.W)
    return out


@dataclass
class Phase:
    """What one phase of a presentation did."""

    steps: int
    residual: dict  # layer -> max over examples of ‖dy_l/dt‖ at the end


@dataclass
class Presentation:
    h: list  # settled activities h_0..h_L
    t: list  # final targets t_0..t_L (t_0 = x)
    forward: Phase
    target: Phase
    traces: dict = field(default_factory=dict)  # (population, variable) -> [time, example, neuron]


class TorchEngine:
    """Runs presentations on `weights` (updated in place by plasticity)."""

    name = "torch"

    def __init__(self, model: M.Model, weights: M.Weights, loss, *, generator: torch.Generator | None = None):
        self.model, self.w, self.loss, self.spec = model, weights, loss, model.spec
        self.solver = SOLVERS[self.spec.solver]()
        self.generator = generator

    # ------------------------------------------------------------------ a phase
    def _run(self, field, y, n_steps, args, sample, state_key):
        """Integrate `n_steps` of dt (fewer at steady state), sampling every
        `record_every` steps; returns (y, Phase)."""
        spec, every = self.spec, self.spec.record_every
        steady_stop = spec.stop == "steady"
        s = 0
        while s < n_steps:
            if s % every == 0:
                sample(y)
            y_next, k = self.solver.step(field, y, spec.dt, *args)
            if steady_stop and _steady(k[state_key], y[state_key], spec.atol, spec.rtol):
                break
            y, s = y_next, s + 1
        if s < n_steps:  # steady: the state holds for the rest of the phase
            for _ in range((s // every + 1) * every, n_steps, every):
                sample(y)
        k = field(y, *args)[state_key]
        return y, Phase(s, {l: float(v.norm(dim=1).max()) if v.numel() else 0.0 for l, v in k.items()})

    def present(self, x: torch.Tensor, y: torch.Tensor, record: dict | None = None) -> Presentation:
        model, spec, w = self.model, self.spec, self.w
        record = spec.record if record is None else record
        L, x = model.L, x.flatten(1)
        traces: dict = {(p, v): [] for p, vs in record.items() for v in vs}
        cur = {"h": None, "t": None, "u": {}}

        def sample(_y=None):
            for (pop, var) in traces:
                l = 0 if pop == "input" else int(pop.removeprefix("layer"))
                if var == "h":
                    val = cur["h"][l]
                elif var == "t":
                    val = cur["t"][l]
                elif l in cur["u"]:
                    val = cur["u"][l]
                else:  # u is defined only for inverse_input, in the target phase
                    val = torch.full_like(cur["h"][min(l + 1, L)], float("nan"))
                traces[(pop, var)].append(val.detach().clone())

        # 1. forward phase from rest
        def fsample(h_now):
            cur["h"] = cur["t"] = h_now
            sample()

        h, fphase = self.forward_phase(x, fsample)
        # 2. feedback plasticity, 3. onset
        M.update_feedback(model, h, w, self.generator)
        onset = M.onset(model, h, y, w, self.loss)
        t, gh, n = onset["t"], onset["gh"], onset["n"]
        if model.plastic:
            w.W[model.top] = w.W[model.top] + M.top_step_update(model, t[model.top], h, n)
        state = {model.var: {l: (t[l] if model.var == "t" else h[l + 1]).clone() for l in model.relaxing}}
        if model.plastic:
            state["W"] = {l: w.W[l] for l in model.relaxing}

        def tsample(yt):
            ww = w if "W" not in yt else M.Weights([yt["W"].get(l, w.W[l]) if l else None for l in range(L + 1)], w.b, w.V, w.c)
            cur["h"], cur["u"] = h, yt.get("u", {})
            cur["t"] = M.targets_now(model, {"t": yt.get("t", {}), "u": cur["u"]}, t, h, gh, ww)
            sample()

        # 4. target phase, block by block
        blocks = model.layer_blocks()
        n_target = spec.steps(spec.target_phase)
        total, residual = 0, {}
        for i, block in enumerate(blocks or [[]]):
            steps = n_target // max(len(blocks), 1) + (n_target % max(len(blocks), 1) if i == len(blocks) - 1 else 0)
            on = {l: 1.0 if l in block else 0.0 for l in model.relaxing}
            if not block:  # nothing relaxes (a one-layer network): hold
                for _ in range(0, steps, spec.record_every):
                    cur["h"], cur["t"] = h, t
                    sample()
                continue
            key = model.var
            state, phase = self._run(target_field, state, steps, (model, t, h, gh, n, w, on, spec.tau_t), tsample, key)
            total += phase.steps
            residual.update({l: phase.residual[l] for l in block})
        cur["h"] = h
        if model.plastic and "W" in state:
            for l, W in state["W"].items():
                w.W[l] = W
        cur["u"] = state.get("u", {})
        cur["t"] = M.targets_now(model, {"t": state.get("t", {}), "u": cur["u"]}, t, h, gh, w)
        sample()  # the final state, end of the target phase
        if model.plastic and spec.plasticity.influence:
            for l, dW in M.influence_correction(model, cur["t"], h, n).items():
                w.W[l] = w.W[l] + dW
        out = {k: torch.stack(v) for k, v in traces.items()}
        return Presentation(h, cur["t"], fphase, Phase(total, residual), out)

    def forward_phase(self, x: torch.Tensor, sample=lambda h: None) -> tuple[list, Phase]:
        """Settle τ_f dh_l/dt = -h_l + f_l(a_l) from rest; returns ([h_0..h_L], Phase).
        No weight changes here: the targets are not moving."""
        model, spec, L = self.model, self.spec, self.model.L
        zeros = {l: x.new_zeros(x.shape[0], model.sizes[l]) for l in range(1, L + 1)}
        as_list = lambda yf: [x] + [yf["h"][l] for l in range(1, L + 1)]  # noqa: E731
        yf, phase = self._run(forward_field, {"h": zeros}, spec.steps(spec.forward_phase),
                              (M.drive(self.w, 1, x), model, self.w, spec.tau_f), lambda yf: sample(as_list(yf)), "h")
        return as_list(yf), phase


def _steady(k: dict, y: dict, atol: float, rtol: float) -> bool:
    return all(bool((k[l].norm(dim=1) <= atol + rtol * y[l].norm(dim=1)).all()) for l in k)
