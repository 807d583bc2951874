"""The brian2 engine: the same model as NeuronGroups with unit-checked equations.

Each population is a `NeuronGroup` whose equations are the strings of
`biotp.dynamics.model` (the target variable `t` is called `tgt`, since brian2 reserves
`t` for time), with the time constants carrying their units: brian2 checks every
equation's dimensions.  The nonlocal inputs (weight products, decoders g_l) are dense
products computed by one `network_operation` at the start of every time step, with the
same torch functions the torch engine uses; the plastic weights live in `Synapses` with
the clock-driven rule `model.PLASTICITY`, updated before the groups (order -1).  Brian2's
schedule -- inputs from the state at step n, then every state updater -- is a synchronous
Euler step, so the two engines agree to rounding in float64.

Presents one example at a time, Euler only, stops after the phase durations.  The code
generation target is `numpy` (default) or `cython`.
"""

from __future__ import annotations

import re

import numpy as np
import torch

from ..dynamics import model as M
from ..errors import ConfigError
from .torch import Phase, Presentation

RENAME = {"t": "tgt"}


def brian_expr(text: str) -> str:
    """An equation string in brian2's names (t -> tgt)."""
    return re.sub(r"\b(t)\b", lambda m: RENAME[m.group(1)], text)


def population_equations(model: M.Model, l: int) -> str:
    """The brian2 equations of population l (0 = input), generated from the model."""
    if l == 0:
        return "h : 1\nn : 1"
    lines = [f"dh/dt = {model.forward[l].text} : 1", "a : 1", "fwd : 1 (shared)", "n : 1"]
    if l in model.relaxing and model.var == "t":
        text = brian_expr(model.target[l].text)
        lines += [f"{n} : 1" for n in M.INPUTS[model.spec.relaxation]] + ["on : 1 (shared)", f"dtgt/dt = {text} : 1"]
        if model.plastic:
            lines.append(f"tdot = {text} : 1/second")
    elif l in model.relaxing:  # inverse_input: the target is read out of the decoder input u_l
        lines += ["gu : 1", "gh : 1", f"tgt = {brian_expr(M.T_OF_U)} : 1"]
        if model.plastic:
            lines.append("tdot : 1/second")  # d g(u)/dt, through the decoder
    else:
        lines.append("tgt : 1")
    return "\n".join(lines)


def decoder_input_equations(model: M.Model, l: int) -> str:
    """inverse_input: the decoder-input population u_l of g_{l+1} (size n_{l+1})."""
    return "\n".join([f"du/dt = {brian_expr(model.target[l].text)} : 1", "tup : 1", "fgu : 1", "on : 1 (shared)"])


class Brian2Engine:
    """Runs presentations of single examples; `weights` are updated in place."""

    name = "brian2"

    def __init__(self, model: M.Model, weights: M.Weights, loss, *, generator=None, codegen: str = "numpy"):
        import brian2 as b2

        spec = model.spec
        if spec.solver != "euler":
            raise ConfigError(f"dynamics.solver: the brian2 engine integrates with Euler only; got {spec.solver!r}")
        if weights.W[1].dtype != torch.float64:
            raise ConfigError("the brian2 engine computes in float64: pass float64 weights (biotp.simulate does)")
        b2.prefs.codegen.target = codegen
        self.b2, self.model, self.w, self.loss, self.spec, self.generator = b2, model, weights, loss, spec, generator
        dt = spec.dt * b2.second
        L = model.L
        self.groups = [
            b2.NeuronGroup(model.sizes[l], population_equations(model, l), method="euler", dt=dt,
                           name=f"input" if l == 0 else f"layer{l}")
            for l in range(L + 1)
        ]
        self.decoders = {l: b2.NeuronGroup(model.sizes[l + 1], decoder_input_equations(model, l), method="euler",
                                           dt=dt, name=f"decoder{l}")
                         for l in (model.relaxing if model.var == "u" else [])}
        self.synapses = {}
        if model.plastic:
            for l in range(1, model.top + 1):
                eqs = "w : 1" if l == model.top else \
                    f"dw/dt = plastic * alive * {M.PLASTICITY} : 1 (clock-driven)\nplastic : 1 (shared)\nalive : 1"
                S = b2.Synapses(self.groups[l - 1], self.groups[l], eqs, method="euler", dt=dt, order=-1,
                                name=f"W{l}")
                n_pre, n_post = model.sizes[l - 1], model.sizes[l]
                S.connect(i=np.tile(np.arange(n_pre), n_post), j=np.repeat(np.arange(n_post), n_pre))
                S.w = weights.W[l].numpy().ravel()  # synapse k = post * n_pre + pre: w.reshape = W
                if "alive" in S.variables:  # 0 for a lesioned synapse (see `present`)
                    S.alive = 1.0
                self.synapses[l] = S
        self.record = {}
        for pop, variables in spec.record.items():
            if "r" in variables:
                raise ConfigError(f"record {pop}: [r]: the residual ‖dy/dt‖ is recorded by the torch engine only")
            l = 0 if pop == "input" else int(pop.removeprefix("layer"))
            names = sorted({RENAME.get(v, v) for v in variables if v != "u"} | {"h"})
            self.record[pop] = b2.StateMonitor(self.groups[l], names, record=True, dt=spec.record_every * dt,
                                               order=1, name=f"monitor_{pop}")
            if "u" in variables and l in self.decoders:
                self.record[pop + "/u"] = b2.StateMonitor(self.decoders[l], ["u"], record=True,
                                                          dt=spec.record_every * dt, order=1, name=f"monitor_{pop}_u")
        self.op = b2.NetworkOperation(self._tick, dt=dt, when="start", order=0)
        self.net = b2.Network(self.groups, list(self.decoders.values()), list(self.synapses.values()), list(self.record.values()), self.op)
        self.namespace = {"tau_f": spec.tau_f * b2.second, "tau_t": spec.tau_t * b2.second,
                          "eta": spec.plasticity.eta, "gamma": spec.plasticity.gamma * b2.hertz}
        self.phase = "forward"
        self.frame: dict = {}
        self.cut: dict = {}

    def set_weight(self, kind: str, l: int, value: torch.Tensor) -> None:
        """Replace W_l (`kind` "W") or V_l ("V"), in the Synapses where W_l is plastic."""
        getattr(self.w, kind)[l] = value
        if kind == "W" and l in self.synapses:
            self.synapses[l].variables["w"].set_value(value.detach().numpy().ravel())

    def _apply_cut(self, kind: str) -> None:
        for (k, l), mask in self.cut.items():
            if k == kind:
                self.set_weight(kind, l, self._weights().W[l].masked_fill(mask, 0.0) if kind == "W"
                                else self.w.V[l].masked_fill(mask, 0.0))

    # ---------------------------------------------------------------- raw arrays
    def _arr(self, l: int, name: str) -> torch.Tensor:
        """A live torch view [1, n] of a variable of population l (u_l: its decoder input)."""
        group = self.decoders[l] if name in ("u", "tup", "fgu") or (name == "on" and l in self.decoders) else self.groups[l]
        return torch.from_numpy(group.variables[name].get_value()).view(1, -1)

    def _weights(self) -> M.Weights:
        W = list(self.w.W)
        for l, S in self.synapses.items():
            W[l] = torch.from_numpy(S.variables["w"].get_value()).view(self.model.sizes[l], self.model.sizes[l - 1])
        return M.Weights(W, self.w.b, self.w.V, self.w.c)

    def _inputs(self):
        """The network operation: every nonlocal input from the state at this step."""
        model, w = self.model, self._weights()
        h = [self._arr(l, "h") for l in range(model.L + 1)]
        if self.phase == "forward":
            for l in range(2, model.L + 1):  # a_1 is constant while x is clamped (set in _start)
                self._arr(l, "a")[:] = M.drive(w, l, h[l - 1])
            return
        f = self.frame
        state = self._state()
        t = M.targets_now(model, state, f["t"], f["h"], f["gh"], w)
        for l in model.relaxing:
            for name, value in M.inputs(model, l, t, state["u"], f["h"], f["gh"], w).items():
                self._arr(l, name)[:] = value
        if model.var == "u" and model.plastic:
            _, tdot, _ = M.target_rates(model, state, f["t"], f["h"], f["gh"], w, f["on"], self.spec.tau_t)
            for l in model.relaxing:
                self._arr(l, "tdot")[:] = tdot[l]

    # ------------------------------------------------------------- presentation
    def present(self, x: torch.Tensor, y: torch.Tensor, record=None, perturb=None) -> Presentation:
        """Present the examples of `x` one after another in a single brian2 run: the network
        operation switches phases on the clock (forward phase from rest, onset, target
        blocks), so brian2 sets its run up once per stream, not per example.  Traces are
        those of the spec's `record` (`record` is ignored); of a `Perturbation` only the
        lesions (`cut`) are supported."""
        b2, spec = self.b2, self.spec
        if perturb is not None and (perturb.clamp or perturb.noise or perturb.h0 is not None):
            raise ConfigError("the brian2 engine supports lesions only; clamps, noise and initial states need engine torch")
        self.cut = perturb.cut if perturb is not None else {}
        for l, S in self.synapses.items():
            if "alive" in S.variables:
                mask = self.cut.get(("W", l))
                S.alive = 1.0 if mask is None else (~mask).double().numpy().ravel()
        n_f, n_t = spec.steps(spec.forward_phase), spec.steps(spec.target_phase)
        self.stream = {"x": x.reshape(len(x), -1), "y": y, "step": 0, "P": n_f + n_t, "n_f": n_f,
                       "marks": {pop: len(mon.t) for pop, mon in self.record.items()}, "done": []}
        blocks = self.model.layer_blocks() or [[]]
        self.stream["blocks"] = {n_f + i * (n_t // len(blocks)): block for i, block in enumerate(blocks)}
        self.net.run(len(x) * (n_f + n_t) * spec.dt * b2.second, namespace=self.namespace)
        self._finish()
        done = self.stream["done"]
        h = [torch.cat([d["h"][l] for d in done]) for l in range(self.model.L + 1)]
        t = [torch.cat([d["t"][l] for d in done]) for l in range(self.model.L + 1)]
        worst = lambda key: {l: max(d[key][l] for d in done) for l in done[0][key]}  # noqa: E731
        traces = {k: torch.cat([d["traces"][k] for d in done], dim=1) for k in done[0]["traces"]}
        return Presentation(h, t, Phase(n_f, worst("fres")), Phase(n_t, worst("tres")), traces)

    def _tick(self):
        """Every step: switch phases on the clock, then compute the nonlocal inputs."""
        st = self.stream
        k, s = divmod(st["step"], st["P"])
        if s == 0:
            if k:
                self._finish()
            self._start(k)
        if s == st["n_f"]:
            self._onset(k)
        if s in st["blocks"]:
            for l in self.model.relaxing:
                self.frame["on"][l] = 1.0 if l in st["blocks"][s] else 0.0
                self._arr(l, "on")[:] = self.frame["on"][l]
        st["step"] += 1
        self._inputs()

    def _start(self, k: int):
        """Example k: input clamped, activities at rest, forward settling on."""
        model = self.model
        self._arr(0, "h")[:] = self.stream["x"][k]
        self._arr(1, "a")[:] = M.drive(self._weights(), 1, self._arr(0, "h"))
        for l in range(1, model.L + 1):
            self._arr(l, "h")[:] = 0
            self._arr(l, "fwd")[:] = 1
            if l in model.relaxing:
                self._arr(l, "on")[:] = 0
        for S in self.synapses.values():
            if "plastic" in S.variables:
                S.variables["plastic"].get_value()[:] = 0
        self.phase = "forward"
        self.k = k

    def _onset(self, k: int):
        """End of the forward phase: feedback plasticity, then the targets' initial values."""
        model, L = self.model, self.model.L
        h = [self._arr(l, "h").clone() for l in range(L + 1)]
        self.fres = self._residual_forward(h)
        M.update_feedback(model, h, self.w, self.generator)
        self._apply_cut("V")
        o = M.onset(model, h, self.stream["y"][k : k + 1], self._weights(), self.loss)
        self.frame = {"t": o["t"], "h": h, "gh": o["gh"], "n": o["n"], "on": {l: 0.0 for l in model.relaxing}}
        for l in range(L + 1):
            self._arr(l, "n")[:] = o["n"][l]
            if l and not (l in model.relaxing and model.var == "u"):
                self._arr(l, "tgt")[:] = o["t"][l]
            if l in model.relaxing and model.var == "u":
                self._arr(l, "u")[:] = h[l + 1]
            if l:
                self._arr(l, "fwd")[:] = 0
        if model.plastic:
            self._weights().W[model.top] += M.top_step_update(model, o["t"][model.top], h, o["n"])
            self._apply_cut("W")
            for S in self.synapses.values():
                if "plastic" in S.variables:
                    S.variables["plastic"].get_value()[:] = 1
        self.phase = "target"

    def _finish(self):
        """End of an example's target phase: read the results, apply the layer factor."""
        model, spec, f = self.model, self.spec, self.frame
        self._inputs()  # inputs (and read-out targets) of the final state
        w = self._weights()
        state = self._state()
        t = [v.clone() for v in M.targets_now(model, state, f["t"], f["h"], f["gh"], w)]
        rates, _, _ = M.target_rates(model, state, f["t"], f["h"], f["gh"], w, {l: 1.0 for l in model.relaxing}, spec.tau_t)
        if model.plastic and spec.plasticity.influence:
            for l, dW in M.influence_correction(model, t, f["h"], f["n"]).items():
                w.W[l] += dW
        for l in self.synapses:  # hand the weights back
            self.w.W[l] = w.W[l].clone()
        st = self.stream
        marks = {pop: mark + len(st["done"]) * (st["P"] // spec.record_every) for pop, mark in st["marks"].items()}
        st["done"].append({"h": f["h"], "t": t, "fres": self.fres,
                           "tres": {l: float(v.norm(dim=1).max()) for l, v in rates.items()},
                           "traces": self._traces(marks, st["n_f"], f["h"], t, state)})

    def _state(self) -> dict:
        model = self.model
        return {"t": {l: self._arr(l, "tgt") for l in model.relaxing} if model.var == "t" else {},
                "u": {l: self._arr(l, "u") for l in model.relaxing} if model.var == "u" else {}}

    def _residual_forward(self, h):
        w = self._weights()
        return {l: float(((-h[l] + w.f(self.model, l, h[l - 1])) / self.spec.tau_f).norm()) for l in range(1, self.model.L + 1)}

    def _traces(self, marks, n_f, h, t, state) -> dict:
        """[time, 1, neuron] per requested (population, variable), the final state appended;
        in the forward phase t := h and u is undefined (NaN), as in the torch engine."""
        out = {}
        n_fs = n_f // self.spec.record_every
        for pop, variables in self.spec.record.items():
            mon, l = self.record[pop], 0 if pop == "input" else int(pop.removeprefix("layer"))
            h_trace = np.asarray(mon.h_).T[marks[pop]:]
            for var in variables:
                if var == "u":
                    key = pop + "/u"
                    if key in self.record:
                        data = np.concatenate([np.asarray(self.record[key].u_).T[marks[key]:],
                                               state["u"][l].numpy().reshape(1, -1)])
                    else:
                        data = np.full((len(h_trace) + 1, self.model.sizes[min(l + 1, self.model.L)]), np.nan)
                    data[:n_fs] = np.nan
                else:
                    data = np.asarray(getattr(mon, RENAME.get(var, var) + "_")).T[marks[pop]:]
                    data = np.concatenate([data, {"h": h[l], "t": t[l]}[var].numpy().reshape(1, -1)])
                    data[:n_fs] = h_trace[:n_fs]
                out[(pop, var)] = torch.from_numpy(np.ascontiguousarray(data[:, None, :]))
        return out
