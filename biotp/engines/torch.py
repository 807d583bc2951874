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


def forward_field(y: dict, a1: torch.Tensor, model: M.Model, w: M.Weights, tau_f: float, frozen=()) -> dict:
    """dh_l/dt for l = 1..L (see `model.forward`); `a1` = W_1 x + b_1 is constant while the
    input x is clamped; populations in `frozen` are clamped (rate 0)."""
    h = y["h"]
    rates = {}
    for l in range(1, model.L + 1):
        if l in frozen:
            rates[l] = torch.zeros_like(h[l])
            continue
        a = a1 if l == 1 else M.drive(w, l, h[l - 1])
        rates[l] = model.forward[l].evaluate({"h": h[l], "a": a, "tau_f": tau_f, "fwd": 1.0})
    return {"h": rates}


def target_field(y: dict, model: M.Model, t0: list, h: list, gh: dict, n: list, w: M.Weights, on: dict, tau_t: float,
                 frozen=(), cut=None) -> dict:
    """d(t or u)_l/dt for the relaxing layers and, with plasticity, dW_l/dt; targets in
    `frozen` are clamped (rate 0, so they drive no plasticity either); synapses in `cut`
    {l: mask} are lesioned (no plasticity)."""
    if "W" in y:
        w = M.Weights([y["W"].get(l, w.W[l]) if l else None for l in range(model.L + 1)], w.b, w.V, w.c)
    state = {"t": y.get("t", {}), "u": y.get("u", {})}
    rates, tdot, _ = M.target_rates(model, state, t0, h, gh, w, on, tau_t)
    for l in frozen:
        rates[l] = tdot[l] = torch.zeros_like(rates[l])
    out = {model.var: rates}
    if "W" in y:
        out["W"] = M.plasticity_rates(model, tdot, n, w.W)
        for l, mask in (cut or {}).items():
            if l in out["W"]:
                out["W"][l] = out["W"][l].masked_fill(mask, 0.0)
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


@dataclass
class Perturbation:
    """What an experimenter does to one presentation (`biotp.protocols` builds these).

    clamp   {(phase, variable, l): value}: population l's `h` (phase "forward": held while
            the activities settle, l = 0 replaces the input; "target": the activity the target
            phase sees) or target `t` (phase "target": held from the onset; a relaxing target
            steps to its clamp like the top target does, and its weights change by the step's
            integral η (v - h_l) n_{l-1}ᵀ); value broadcasts against [batch, n_l].
    noise   {(phase, variable, l): σ}: after every step, variable += σ √(2 dt/τ) ξ (τ = τ_f for
            h, τ_t for t), so a linear population relaxing to a fixed point fluctuates around it
            with stationary standard deviation σ; with plasticity the target's noise increment
            drives its weights like any other change of t (dW = η dt_l n_{l-1}ᵀ).
    h0      initial activities h_1..h_L of the forward phase (default: rest, h = 0).
    cut     {("W" or "V", l): mask}: lesioned synapses, held at zero with no plasticity.
    """

    clamp: dict = field(default_factory=dict)
    noise: dict = field(default_factory=dict)
    h0: list | None = None
    cut: dict = field(default_factory=dict)

    def clamped(self, phase: str, var: str) -> dict:
        return {l: v for (p, v_, l), v in self.clamp.items() if p == phase and v_ == var}

    def noisy(self, phase: str, var: str) -> dict:
        return {l: s for (p, v_, l), s in self.noise.items() if p == phase and v_ == var}


NO_PERTURBATION = Perturbation()


class TorchEngine:
    """Runs presentations on `weights` (updated in place by plasticity)."""

    name = "torch"

    def __init__(self, model: M.Model, weights: M.Weights, loss, *, generator: torch.Generator | None = None):
        self.model, self.w, self.loss, self.spec = model, weights, loss, model.spec
        self.solver = SOLVERS[self.spec.solver]()
        self.generator = generator
        self.perturb = NO_PERTURBATION

    def set_weight(self, kind: str, l: int, value: torch.Tensor) -> None:
        """Replace W_l (`kind` "W") or V_l ("V") -- the protocols' lesions go through here."""
        getattr(self.w, kind)[l] = value

    def _noise(self, like: torch.Tensor, sigma: float, tau: float) -> torch.Tensor:
        xi = torch.randn(like.shape, generator=self.generator, dtype=like.dtype).to(like.device)
        return sigma * (2 * self.spec.dt / tau) ** 0.5 * xi

    # ------------------------------------------------------------------ a phase
    def _run(self, field, y, n_steps, args, sample, state_key, kick=None):
        """Integrate `n_steps` of dt (fewer at steady state), sampling (state, its rate)
        every `record_every` steps and applying `kick(y)` (noise) after each step; returns
        (y, Phase, the rate at the final state)."""
        spec, every = self.spec, self.spec.record_every
        steady_stop = spec.stop == "steady"
        s = 0
        while s < n_steps:
            y_next, k = self.solver.step(field, y, spec.dt, *args)
            if s % every == 0:
                sample(y, k)
            if steady_stop and _steady(k[state_key], y[state_key], spec.atol, spec.rtol):
                break
            y, s = (y_next if kick is None else kick(y_next)), s + 1
        k = field(y, *args)
        if s < n_steps:  # steady: the state holds for the rest of the phase
            for _ in range((s // every + 1) * every, n_steps, every):
                sample(y, k)
        return y, Phase(s, {l: float(v.norm(dim=1).max()) if v.numel() else 0.0 for l, v in k[state_key].items()}), k

    def present(self, x: torch.Tensor, y: torch.Tensor, record: dict | None = None,
                perturb: Perturbation | None = None) -> Presentation:
        """One presentation of the batch `x` with labels `y` (see the module docstring);
        `record` {population: [variables]} defaults to the spec's; `perturb` clamps and
        noise (see `Perturbation`).  Variable `r` records ‖dy_l/dt‖ of the population's
        moving variable (h in the forward phase, t or u in the target phase)."""
        model, spec, w = self.model, self.spec, self.w
        self.perturb = perturb = perturb or NO_PERTURBATION
        record = spec.record if record is None else record
        L, x = model.L, x.flatten(1)
        if 0 in perturb.clamped("forward", "h"):
            x = perturb.clamped("forward", "h")[0].expand_as(x).to(x)
        traces: dict = {(p, v): [] for p, vs in record.items() for v in vs}
        cur = {"h": None, "t": None, "u": {}, "r": {}}

        def sample():
            for (pop, var) in traces:
                l = 0 if pop == "input" else int(pop.removeprefix("layer"))
                if var == "h":
                    val = cur["h"][l]
                elif var == "t":
                    val = cur["t"][l]
                elif var == "r":  # ‖rate‖ per example; zero for a population that is not moving
                    r = cur["r"].get(l)
                    val = r.norm(dim=1, keepdim=True) if r is not None else cur["h"][l].new_zeros(len(x), 1)
                elif l in cur["u"]:
                    val = cur["u"][l]
                else:  # u is defined only for inverse_input, in the target phase
                    val = torch.full_like(cur["h"][min(l + 1, L)], float("nan"))
                traces[(pop, var)].append(val.detach().clone())

        # 1. forward phase (from rest, or from perturb.h0)
        def fsample(h_now, k=None):
            cur["h"] = cur["t"] = h_now
            cur["r"] = {} if k is None else k["h"]
            sample()

        h, fphase = self.forward_phase(x, fsample)
        for l, v in perturb.clamped("target", "h").items():
            h[l] = v.expand_as(h[l]).to(h[l])
        # 2. feedback plasticity, 3. onset
        M.update_feedback(model, h, w, self.generator)
        self._cut()
        onset = M.onset(model, h, y, w, self.loss)
        t, gh, n = onset["t"], onset["gh"], onset["n"]
        t_clamp = perturb.clamped("target", "t")
        for l, v in t_clamp.items():
            t[l] = v.expand_as(t[l]).to(t[l])
        if model.plastic:
            w.W[model.top] = w.W[model.top] + M.top_step_update(model, t[model.top], h, n)
            for l in set(t_clamp) & set(model.relaxing):  # a clamped target's step, like the top's
                w.W[l] = w.W[l] + model.spec.plasticity.eta * (t[l] - h[l]).T @ n[l - 1] / n[0].shape[0]
        self._cut()
        frozen = tuple(l for l in t_clamp if l in model.relaxing)
        if frozen and model.var == "u":
            raise ValueError("clamping a target needs a relaxation of t (inverse_input relaxes u)")
        state = {model.var: {l: (t[l] if model.var == "t" else h[l + 1]).clone() for l in model.relaxing}}
        if model.plastic:
            state["W"] = {l: w.W[l] for l in model.relaxing}
        kick = self._target_kick(n) if perturb.noisy("target", model.var) else None

        def tsample(yt, k=None):
            ww = w if "W" not in yt else M.Weights([yt["W"].get(l, w.W[l]) if l else None for l in range(L + 1)], w.b, w.V, w.c)
            cur["h"], cur["u"] = h, yt.get("u", {})
            cur["t"] = M.targets_now(model, {"t": yt.get("t", {}), "u": cur["u"]}, t, h, gh, ww)
            cur["r"] = {} if k is None else k[model.var]
            sample()

        # 4. target phase, block by block
        blocks = model.layer_blocks()
        n_target = spec.steps(spec.target_phase)
        total, residual, k = 0, {}, None
        for i, block in enumerate(blocks or [[]]):
            steps = n_target // max(len(blocks), 1) + (n_target % max(len(blocks), 1) if i == len(blocks) - 1 else 0)
            on = {l: 1.0 if l in block else 0.0 for l in model.relaxing}
            if not block:  # nothing relaxes (a one-layer network): hold
                for _ in range(0, steps, spec.record_every):
                    cur["h"], cur["t"], cur["r"] = h, t, {}
                    sample()
                continue
            key = model.var
            state, phase, k = self._run(target_field, state, steps, (model, t, h, gh, n, w, on, spec.tau_t, frozen,
                                         {l: m for (kind, l), m in perturb.cut.items() if kind == "W"}),
                                        tsample, key, kick)
            total += phase.steps
            residual.update({l: phase.residual[l] for l in block})
        cur["h"] = h
        if model.plastic and "W" in state:
            for l, W in state["W"].items():
                w.W[l] = W
        cur["u"] = state.get("u", {})
        cur["t"] = M.targets_now(model, {"t": state.get("t", {}), "u": cur["u"]}, t, h, gh, w)
        cur["r"] = {} if k is None else k[model.var]
        sample()  # the final state, end of the target phase
        if model.plastic and spec.plasticity.influence:
            for l, dW in M.influence_correction(model, cur["t"], h, n).items():
                w.W[l] = w.W[l] + dW
        self._cut()
        self.perturb = NO_PERTURBATION
        out = {k: torch.stack(v) for k, v in traces.items()}
        return Presentation(h, cur["t"], fphase, Phase(total, residual), out)

    def _cut(self) -> None:
        """Hold lesioned synapses at zero (after the updates that bypass the vector field)."""
        for (kind, l), mask in self.perturb.cut.items():
            self.set_weight(kind, l, getattr(self.w, kind)[l].masked_fill(mask, 0.0))

    def _target_kick(self, n: list):
        """Noise on relaxing targets after each step, with the weight change it drives."""
        model, noisy = self.model, self.perturb.noisy("target", self.model.var)
        bad = [l for l in noisy if l not in model.relaxing]
        if bad:
            raise ValueError(f"noise on the target of layer{bad[0]}: only relaxing targets "
                             f"(layers {sorted(model.relaxing)}) move in the target phase")

        def kick(y):
            y = {key: dict(part) for key, part in y.items()}
            for l, sigma in noisy.items():
                e = self._noise(y[model.var][l], sigma, self.spec.tau_t)
                y[model.var][l] = y[model.var][l] + e
                if "W" in y and model.var == "t":
                    y["W"][l] = y["W"][l] + model.spec.plasticity.eta * e.T @ n[l - 1] / n[0].shape[0]
            return y

        return kick

    def forward_phase(self, x: torch.Tensor, sample=lambda h, k=None: None, steps: int | None = None) -> tuple[list, Phase]:
        """Settle τ_f dh_l/dt = -h_l + f_l(a_l) from rest (or `perturb.h0`), clamped
        populations held, for `steps` (default: the forward phase); returns ([h_0..h_L],
        Phase).  No weight changes here: the targets are not moving."""
        model, spec, L, perturb = self.model, self.spec, self.model.L, self.perturb
        clamp = {l: v for l, v in perturb.clamped("forward", "h").items() if l}
        h0 = perturb.h0 or [None] + [x.new_zeros(x.shape[0], model.sizes[l]) for l in range(1, L + 1)]
        y0 = {"h": {l: clamp[l].expand_as(h0[l]).to(h0[l]) if l in clamp else h0[l] for l in range(1, L + 1)}}
        noisy = perturb.noisy("forward", "h")

        def kick(y):
            return {"h": {l: v + self._noise(v, noisy[l], spec.tau_f) if l in noisy else v for l, v in y["h"].items()}}

        as_list = lambda yf: [x] + [yf["h"][l] for l in range(1, L + 1)]  # noqa: E731
        yf, phase, _ = self._run(forward_field, y0, spec.steps(spec.forward_phase) if steps is None else steps,
                                 (M.drive(self.w, 1, x), model, self.w, spec.tau_f, tuple(clamp)),
                                 lambda yf, k=None: sample(as_list(yf), k), "h", kick if noisy else None)
        return as_list(yf), phase


def _steady(k: dict, y: dict, atol: float, rtol: float) -> bool:
    return all(bool((k[l].norm(dim=1) <= atol + rtol * y[l].norm(dim=1)).all()) for l in k)
