"""The brian2 engine: the model compiled into NeuronGroups and Synapses, run by brian2.

Every population is a `NeuronGroup` whose equations are the model's strings, unit-checked
by brian2.  Every projection is a `Synapses` object, all to all, whose summed variables
are the model's couplings (`a_post = alive * w * h_pre`, `back_pre = alive * w * ec_post`,
...) and whose clock-driven `dw/dt` is the plasticity rule; the events are
`run_regularly` code blocks switched on for their one step.  brian2 computes every term:
no torch runs inside its loop, so its agreement with the torch engine is evidence.

The schedule of one step (slot `groups`; brian2 sorts by order):
  0, 1, 2   summed variables, stage by stage (each stage reads the ones before)
  5, 6, 7   event statements (only in an event step)
  20, 21    monitors; the steady-state check
  30, 31    Synapses' then NeuronGroups' state updates (Euler)
so every update reads the state at the start of the step: a synchronous Euler step, the
torch engine's.  Examples are presented one after another (a batch is a sequence).
Euler only; code generation `numpy` (default) or `cython`.
"""

from __future__ import annotations

import re

import numpy as np
import torch

from ..dynamics.model import RATE, SHARED, Model
from ..dynamics.units import brian2_namespace
from ..errors import ConfigError
from .base import Engine, Parameters, Perturbation, Phase, Presentation

FUNCS = {"tanh", "exp", "log", "sqrt", "abs", "sign", "clip", "sin", "cos", "int"}
STAGE, STATEMENT, MONITOR, CHECK, SYNAPSES, GROUPS = 0, 5, 20, 21, 30, 31


def suffixed(expr: str, suffix: str, keep: set) -> str:
    """`expr` with every variable name given `suffix` (_pre, _post), functions and the
    names in `keep` left alone."""
    return re.sub(r"\b([A-Za-z_]\w*)\b", lambda m: m.group(1) if m.group(1) in FUNCS | keep else m.group(1) + suffix,
                  expr)


class Brian2Engine(Engine):
    """Presents examples one after another; the parameters change by the plasticity."""

    name = "brian2"

    def __init__(self, model: Model, params: Parameters, *, codegen: str = "numpy", **_):
        import brian2 as b2

        spec = model.spec
        if spec.solver != "euler":
            raise ConfigError(f"dynamics.solver: the brian2 engine integrates with Euler only; got {spec.solver!r} "
                              "(use engine torch for rk4)")
        if spec.plasticity.influence:
            raise ConfigError("dynamics.plasticity.influence: the layer factor is applied by the torch engine only")
        if spec.feedback_plasticity.rule == "inverse_loss":
            raise ConfigError("dynamics.feedback_plasticity.rule: inverse_loss runs on the torch engine only; the "
                              "brian2 engine has the decoder rule (decoder) and fixed feedback")
        params.check(model)
        b2.prefs.codegen.target = codegen
        self.b2, self.model, self.spec = b2, model, spec
        self.dt = spec.dt * b2.second
        consts = brian2_namespace(model.constants)
        self.groups, self.tables, self.namespaces = {}, {}, []
        for name, pop in model.populations.items():
            self.groups[name] = self._group(pop, consts)
        self.synapses = {name: self._synapses(p, consts) for name, p in model.projections.items()}
        self.runners = {"feedback": [], "onset": []}
        for st in model.statements:
            self.runners[st.event].append(self._statement(st))
        self.reader = b2.NetworkOperation(self._read, dt=self.dt, when="groups", order=CHECK, name="reader")
        self.checker = b2.NetworkOperation(self._check, dt=self.dt, when="groups", order=CHECK, name="steady_check")
        self.net = b2.Network(*self.groups.values(), *self.synapses.values(), *[r for rs in self.runners.values() for r in rs],
                              self.reader, self.checker)
        self.set_parameters(params)

    # ------------------------------------------------------------------ building
    def _group(self, pop, consts):
        b2 = self.b2
        text = pop.equations
        ns = {**consts, **brian2_namespace(pop.parameters)}
        for var in ("h", "t"):
            if f"noise_{var} : 1" in text.splitlines():  # the pre-drawn noise, read from a table
                table = f"noise_{var}_{pop.name}"
                text = re.sub(rf"^noise_{var} : 1$", f"noise_{var} = {table}(t - t0, i) : 1", text, flags=re.M)
                ns[table] = b2.TimedArray(np.zeros((1, pop.size)), dt=self.dt)
        if "t0" in text:
            text += "\nt0 : second (shared)"
        stochastic = bool(b2.Equations(text).stochastic_variables)
        self.tables[pop.name] = ns
        return b2.NeuronGroup(pop.size, text, method="euler-maruyama" if stochastic else "euler", dt=self.dt,
                              namespace=ns, order=GROUPS, name=pop.name)

    def _synapses(self, p, consts):
        model, b2 = self.model, self.b2
        pre, post = self.groups[p.pre], self.groups[p.post]
        keep = set(consts)
        lines = ["plastic : 1 (shared)", "alive : 1"]
        rule = model.rules.get(p.name)
        if rule is not None:
            lines.append(f"dw/dt = plastic * alive * (eta * {rule}_post * h_pre - eta * gamma * w) : 1 (clock-driven)")
        else:
            lines.append("w : 1")
        summed = {}
        for c in model.couplings:
            if c.projection != p.name:
                continue
            dim = "1/second" if c.target == "vudot" else "1"
            if not c.weighted:
                lines.append(f"{c.target}_post = {suffixed(c.source, '_pre', keep)} : {dim} (summed)")
                summed[f"{c.target}_post"] = c.stage
            elif c.direction == "post":
                lines.append(f"{c.target}_post = alive * w * ({suffixed(c.source, '_pre', keep)}) : {dim} (summed)")
                summed[f"{c.target}_post"] = c.stage
            else:
                lines.append(f"{c.target}_pre = alive * w * ({suffixed(c.source, '_post', keep)}) : {dim} (summed)")
                summed[f"{c.target}_pre"] = c.stage
        ns = {**self.tables[p.pre], **self.tables[p.post]}  # what the post subexpressions it reads need
        for key in set(self.tables[p.pre]) & set(self.tables[p.post]):
            if self.tables[p.pre][key] is not self.tables[p.post][key] and key not in consts:
                raise ConfigError(f"dynamics.populations: {p.pre} and {p.post} both define the parameter {key!r}; "
                                  "the brian2 engine needs distinct names in connected populations")
        self.namespaces.append(ns)
        S = b2.Synapses(pre, post, "\n".join(lines), method="euler", dt=self.dt, order=SYNAPSES, namespace=ns,
                        name=p.name.replace(".", "_"))
        n_pre, n_post = pre.N, post.N
        S.connect(i=np.tile(np.arange(n_pre), n_post), j=np.repeat(np.arange(n_post), n_pre))  # k = post*n_pre + pre
        S.alive = 1.0
        for name, stage in summed.items():
            S.summed_updaters[name].order = STAGE + stage
        return S

    def _statement(self, st):
        """A run_regularly block for one event statement (active only in its event step)."""
        model = self.model
        if st.scope in self.groups:
            gate = ""
            if st.gate is not None:
                gate = ("plastic_b" if model.projections[st.gate].kind == "forward" else "plastic_c") + " * "
            code = f"{st.var} {st.op} {gate}({st.expr})"
            runner = self.groups[st.scope].run_regularly(code, dt=self.dt, when="groups", order=STATEMENT + st.order - 5,
                                                        name=f"{st.event}_{st.scope}_{st.var}")
        else:
            p = model.projections[st.scope]
            keep = set(self.tables[p.post]) | {"w", "alive", "plastic"}
            post = suffixed(st.expr, "_post", keep)
            runner = self.synapses[st.scope].run_regularly(f"w += plastic * alive * ({post}) * h_pre", dt=self.dt,
                                                           when="groups", order=STATEMENT + st.order - 5,
                                                           name=f"{st.event}_{st.scope.replace('.', '_')}_w")
        runner.active = False
        return runner

    # --------------------------------------------------------------- parameters
    def parameters(self) -> Parameters:
        out = Parameters({}, {}, {}, dict(self._c_unused))
        for name, p in self.model.projections.items():
            if p.kind == "pool":
                continue
            w = torch.from_numpy(self.synapses[name].w[:].copy()).view(self.groups[p.post].N, self.groups[p.pre].N)
            (out.W if p.kind == "forward" else out.V)[p.layer] = w
        for name, pop in self.model.populations.items():
            G = self.groups[name]
            if pop.index:
                out.b[pop.index] = torch.from_numpy(G.b[:].copy())
            if "c" in G.variables:
                out.c[pop.index + 1] = torch.from_numpy(G.c[:].copy())
        return out

    def set_parameters(self, params: Parameters) -> None:
        params.check(self.model)
        for name, p in self.model.projections.items():
            if p.kind != "pool":
                self.synapses[name].w = params.weight(p).detach().double().cpu().numpy().ravel()
        self._c_unused = {}
        for name, pop in self.model.populations.items():
            G = self.groups[name]
            if pop.index:
                G.b = params.b[pop.index].detach().double().cpu().numpy()
            if "c" in G.variables:
                G.c = params.c[pop.index + 1].detach().double().cpu().numpy()
            elif pop.index + 1 in params.c:  # a decoder bias no equation reads: kept as it is
                self._c_unused[pop.index + 1] = params.c[pop.index + 1].detach().double().cpu().clone()

    # ------------------------------------------------------------------ running
    def _set(self, group: str, var: str, value) -> None:
        G = self.groups[group]
        if var in G.variables:
            G.variables[var].set_value(np.broadcast_to(np.asarray(value, dtype=float), G.variables[var].get_value().shape).copy()
                                       if not G.variables[var].scalar else float(value))

    def _gates(self, **gates) -> None:
        for G in self.groups.values():
            for g, v in gates.items():
                if g in G.variables:
                    G.variables[g].set_value(float(v))

    def _run(self, steps: int, *, monitors=(), updaters=True, runners=(), check=None, read=False) -> int:
        """Run `steps` steps with the given monitors and event runners on; `updaters` True
        (every ODE), "groups" (the populations' only: an event step) or False (a read step);
        returns how many steps ran before a steady state stopped them."""
        b2 = self.b2
        for m in self.monitors:
            m.active = m in monitors
        for r in self.runners["feedback"] + self.runners["onset"]:
            r.active = r in runners
        for obj in self.groups.values():
            obj.state_updater.active = bool(updaters)
        for obj in self.synapses.values():  # in event steps ("groups") the weights' ODEs stand still
            if getattr(obj, "state_updater", None) is not None:
                obj.state_updater.active = updaters is True
        self.checker.active, self.reader.active = check is not None, read
        self.check = {"moving": check or [], "steps": 0, "stopped": None}
        if steps:
            self.net.run(steps * self.dt, namespace={})
        stopped = self.check["stopped"]
        if stopped is not None:  # the state as the check found it
            for (obj, var), value in stopped["state"].items():
                obj.variables[var].set_value(value)
            return stopped["steps"]
        return steps

    def _check(self) -> None:
        """At steady state (‖dy/dt‖ ≤ atol + rtol ‖y‖ for every moving variable): keep the
        state as it is now and stop the run."""
        spec, c = self.spec, self.check
        for pop, var in c["moving"]:
            G = self.groups[pop]
            rate = np.asarray(getattr(G, RATE[var])[:])
            value = np.asarray(G.variables[var].get_value())
            if np.linalg.norm(rate) > spec.atol + spec.rtol * np.linalg.norm(value):
                c["steps"] += 1
                return
        state = {}
        for obj in list(self.groups.values()) + list(self.synapses.values()):
            for var in obj.equations.diff_eq_names if hasattr(obj, "equations") else []:
                state[(obj, var)] = obj.variables[var].get_value().copy()
        c["stopped"] = {"steps": c["steps"], "state": state}
        self.net.stop()

    def _read(self) -> None:
        self.values = {(pop, var): np.array(getattr(self.groups[pop], var)[:], dtype=float)
                       for pop, var in self.wanted}

    def settle(self, x, steps, h0=None) -> list:
        x = x.flatten(1).double().cpu().numpy()
        out = []
        self.monitors = []
        for k in range(len(x)):
            self._reset(x[k], None, Perturbation(h0=h0), k)
            self._gates(fwd=1.0)
            self._run(steps)
            out.append([np.array(G.h[:]) for G in self.groups.values()])
        return [torch.from_numpy(np.stack([o[l] for o in out])) for l in range(len(self.groups))]

    def _reset(self, x, label, perturbation: Perturbation, k: int) -> None:
        """Example k: every per-neuron variable at rest, the stimulus, the label, gates off."""
        for name, G in self.groups.items():
            for var, v in G.variables.items():
                if (getattr(v, "read_only", True) or var.startswith("_") or var in SHARED or var in ("t0",)
                        or not hasattr(v, "set_value") or var in ("t", "dt", "i", "N", "t_in_timesteps", "lastspike")):
                    continue
                v.set_value(0.0 if v.scalar else np.zeros(v.get_value().shape))
        self.groups["input"].h = x
        if perturbation.h0:
            for pop, value in perturbation.h0.items():
                self._set(pop, "h", value[k].double().cpu().numpy())
        if label is not None:
            self._set(f"layer{self.model.L}", "label", label)
        for pop, value in perturbation.clamped("forward", "h").items():
            v = _example(value, k)
            self._set(pop, "h", v)
            if pop != "input":
                self._set(pop, "clamp_h", v)
                self._set(pop, "hold_h", 1.0)
        for S in self.synapses.values():
            S.plastic = 0.0
        for name, S in self.synapses.items():
            mask = perturbation.lesion.get(name)
            S.alive = 1.0 if mask is None else (~mask.bool()).double().cpu().numpy().ravel()

    def _noise(self, perturbation: Perturbation, phase: str, k: int) -> None:
        """The phase's noise tables (example k's draws) and σ; zero σ elsewhere."""
        self._gates(sigma_h=0.0, sigma_t=0.0)
        for (p, var, pop), xi in perturbation.xi.items():
            if p == phase:
                table = self.b2.TimedArray(xi[k].double().cpu().numpy(), dt=self.dt)
                for ns in [self.tables[pop]] + self.namespaces:
                    if f"noise_{var}_{pop}" in ns:
                        ns[f"noise_{var}_{pop}"] = table
                self.groups[pop].t0 = self.net.t
                self._set(pop, f"sigma_{var}", perturbation.noise[(p, var, pop)])

    def _switch(self, blocked, value: float) -> None:
        """Plasticity switches: each projection's, and its bias's (blocked ones stay off)."""
        for name, S in self.synapses.items():
            S.plastic = 0.0 if name in blocked else value
        for name, pop in self.model.populations.items():
            self._set(name, "plastic_b", 0.0 if f"forward.layer{pop.index}" in blocked else value)
            self._set(name, "plastic_c", 0.0 if f"feedback.layer{pop.index + 1}" in blocked else value)

    def present(self, x, y, record=None, perturbation=None) -> Presentation:
        model, spec, b2 = self.model, self.spec, self.b2
        perturbation = perturbation or Perturbation()
        perturbation.check(model)
        if perturbation.noise and not perturbation.xi:
            raise ConfigError("the brian2 engine needs the noise drawn beforehand (Perturbation.draw)")
        record = spec.record if record is None else record
        names = {(pop, var): model.variable(pop, var, "record") for pop, vs in record.items() for var in vs}
        x = x.flatten(1).double().cpu().numpy()
        L = model.L
        if y is not None and not y.is_floating_point():
            labels = np.eye(model.populations[f"layer{L}"].size)[y.cpu().numpy()]
        else:
            labels = None if y is None else y.double().cpu().numpy()
        rate_of = {}
        for l in model.relaxing:
            pop, var = self._moving(l)
            rate_of[pop] = RATE[var]
        monitored = {}
        for (pop, var), name in names.items():
            if var == "r":
                monitored.setdefault(pop, set()).update({"hdot"} if pop != "input" else set())
                if pop in rate_of:
                    monitored[pop].add(rate_of[pop])
            else:  # a target equals its activity until the onset
                monitored.setdefault(pop, set()).update({name, "h"} if var == "t" else {name})
        self.monitors = [b2.StateMonitor(self.groups[pop], sorted(vs), record=True, when="groups", order=MONITOR,
                                         name=f"monitor_{pop}*") for pop, vs in monitored.items() if vs]
        self.net.add(*self.monitors)
        self.wanted = sorted({(pop, v) for pop, vs in monitored.items() for v in vs}
                             | {(p, "h") for p in self.groups} | {(p, "tgt") for p in list(self.groups)[1:]}
                             | {(p, "hdot") for p in list(self.groups)[1:]}
                             | {(p, v) for p, v in rate_of.items()})
        beta = perturbation.beta if perturbation.beta is not None else spec.target.beta
        for ns in list(self.tables.values()) + self.namespaces:  # the top target's step, this presentation's
            if "beta" in ns:
                ns["beta"] = beta
        n_f, n_t = spec.steps(spec.forward_phase), spec.steps(spec.target_phase)
        steady = spec.stop == "steady"
        examples = []
        try:
            for k in range(len(x)):
                examples.append(self._example(x[k], None if labels is None else labels[k], perturbation, k, n_f, n_t,
                                              steady, rate_of))
        finally:
            self.net.remove(*self.monitors)
        return self._collect(examples, names, rate_of, n_f, n_t)

    def _example(self, x, label, perturbation, k, n_f, n_t, steady, rate_of) -> dict:
        model, spec = self.model, self.spec
        pops = list(self.groups)
        self._reset(x, label, perturbation, k)
        marks = [len(m.t) for m in self.monitors]
        # forward phase
        self._gates(fwd=1.0)
        self._noise(perturbation, "forward", k)
        f_steps = self._run(n_f, monitors=self.monitors, check=[(p, "h") for p in pops[1:]] if steady else None)
        self._gates(sigma_h=0.0, sigma_t=0.0)
        self._run(1, updaters=False, read=True)
        self._gates(fwd=0.0)
        fres = {l: float(np.linalg.norm(self.values[(p, "hdot")])) for l, p in enumerate(pops) if l}
        # events
        for pop, value in perturbation.clamped("target", "h").items():
            self._set(pop, "h", _example(value, k))
        self._switch(perturbation.blocked, 1.0)
        self._run(1, runners=self.runners["feedback"], updaters="groups")
        for pop, value in perturbation.clamped("target", "t").items():
            self._set(pop, "clamp_t", _example(value, k))
            self._set(pop, "hold_t", 1.0)
        self._run(1, runners=self.runners["onset"], updaters="groups")
        # target phase
        self._noise(perturbation, "target", k)
        blocks = model.layer_blocks() or [[]]
        t_steps, tres, segments = 0, {}, []
        for i, block in enumerate(blocks):
            steps = n_t // len(blocks) + (n_t % len(blocks) if i == len(blocks) - 1 else 0)
            for l in model.relaxing:
                pop, var = self._moving(l)
                self._set(pop, "on_u" if var == "u" else "on", 1.0 if l in block else 0.0)
            start = [len(m.t) for m in self.monitors]
            done = self._run(steps, monitors=self.monitors, check=[self._moving(l) for l in block] if steady else None)
            segments.append((start, done, steps))
            t_steps += done
            self._gates(sigma_h=0.0, sigma_t=0.0)
            self._run(1, updaters=False, read=True)
            for l in block:
                pop, var = self._moving(l)
                tres[l] = float(np.linalg.norm(self.values[(pop, RATE[var])]))
        self._switch(perturbation.blocked, 0.0)
        final = dict(self.values)
        return {"marks": marks, "f_steps": f_steps, "segments": segments, "t_steps": t_steps,
                "fres": fres, "tres": tres, "final": final}

    def _moving(self, l: int) -> tuple[str, str]:
        return (f"layer{l + 1}", "u") if self.model.moving(l) == "u" else (f"layer{l}", "tgt")

    def _collect(self, examples, names, rate_of, n_f, n_t) -> Presentation:
        """Traces [time, example, neuron] sampled every record_every steps (held after a
        steady stop), the final state appended; the statistics as the torch engine's."""
        every = self.spec.record_every
        pops = list(self.groups)
        mon = {m.source.name: m for m in self.monitors}
        traces = {}
        for (pop, var), name in names.items():
            per_example = []
            for ex in examples:
                m = mon.get(pop)

                def take(v, a, n, total):
                    data = np.asarray(getattr(m, v))[:, a:a + n].T  # [time, neuron]
                    rows = [data[s] for s in range(0, n, every)]
                    while len(rows) < -(-total // every):
                        rows.append(data[n - 1] if n else data[-1])
                    return rows

                def series(v_forward, v_target):
                    rows = []
                    if v_forward is not None:
                        rows += take(v_forward, ex["marks"][list(mon).index(pop)], ex["f_steps"] + (ex["f_steps"] < n_f), n_f)
                    for start, done, steps in ex["segments"]:
                        if v_target is not None:
                            rows += take(v_target, start[list(mon).index(pop)], done + (done < steps), steps)
                    return rows

                if var == "r":
                    fwd = series("hdot" if pop != "input" else None, None)
                    size = len(fwd[0]) if fwd else 1
                    tgt = series(None, rate_of[pop]) if pop in rate_of else [np.zeros(size)] * sum(
                        -(-s // every) for _, _, s in ex["segments"])
                    rows = [np.linalg.norm(r, keepdims=True) for r in fwd] + [np.linalg.norm(r, keepdims=True) for r in tgt]
                    if pop == "input":
                        rows = [np.zeros(1)] * (-(-n_f // every)) + rows
                    last = ex["final"].get((pop, rate_of.get(pop, "")))
                    rows.append(np.linalg.norm(last, keepdims=True) if last is not None else np.zeros(1))
                else:
                    rows = series("h" if var == "t" else name, name)
                    rows.append(ex["final"][(pop, name)])
                per_example.append(np.stack(rows))
            traces[(pop, var)] = torch.from_numpy(np.stack(per_example, axis=1))
        last = examples
        h = [torch.from_numpy(np.stack([ex["final"][(p, "h")] for ex in last])) for p in pops]
        t = [h[0]] + [torch.from_numpy(np.stack([ex["final"][(p, "tgt")] for ex in last])) for p in pops[1:]]
        worst = lambda key: {l: max(ex[key][l] for ex in last) for l in last[0][key]}  # noqa: E731
        fphase = Phase(max(ex["f_steps"] for ex in last), worst("fres"))
        tphase = Phase(max(ex["t_steps"] for ex in last), worst("tres"))
        return Presentation(h, t, fphase, tphase, traces)


def _example(value, k: int):
    """Example k's row of a clamp value (a scalar, a vector or [batch, n])."""
    v = value.double().cpu().numpy() if torch.is_tensor(value) else np.asarray(value, dtype=float)
    return v[k] if v.ndim == 2 and v.shape[0] > 1 else (v[0] if v.ndim == 2 else v)
