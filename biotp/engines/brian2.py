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
Euler, or exponential Euler (`exponential_euler`); code generation `numpy` (default) or
`cython`.
"""

from __future__ import annotations

import re

import numpy as np
import torch

from ..dynamics.model import RATE, SHARED, Model
from ..dynamics.units import brian2_namespace
from ..errors import ConfigError
from .base import Engine, Parameters, Perturbation, Phase, Presentation

FUNCS = {"tanh", "exp", "log", "sqrt", "abs", "sign", "clip", "sin", "cos", "int", "exprel"}
STAGE, STATEMENT, MONITOR, CHECK, SYNAPSES, GROUPS = 0, 5, 20, 21, 30, 31


def suffixed(expr: str, suffix: str, keep: set) -> str:
    """`expr` with every variable name given `suffix` (_pre, _post), functions and the
    names in `keep` left alone."""
    return re.sub(r"\b([A-Za-z_]\w*)\b", lambda m: m.group(1) if m.group(1) in FUNCS | keep else m.group(1) + suffix,
                  expr)


def exponential_euler():
    """A brian2 state updater: x += dt exprel(A dt) (A x + B), with brian2's own split of each
    rate into A x + B (`get_conditionally_linear_system`).  It is brian2's exponential Euler
    written through exprel(z) = (e^z - 1)/z, which stays finite where a gate makes A = 0
    (brian2's form divides by A)."""
    from brian2.parsing.sympytools import sympy_to_str
    from brian2.stateupdaters.base import StateUpdateMethod, UnsupportedEquationsException
    from brian2.stateupdaters.exponential_euler import get_conditionally_linear_system

    class ExponentialEuler(StateUpdateMethod):
        def __call__(self, equations, variables=None, method_options=None):
            if equations.is_stochastic:
                raise UnsupportedEquationsException("exponential Euler cannot integrate white noise")
            try:
                system = get_conditionally_linear_system(equations, variables)
            except ValueError as err:
                raise UnsupportedEquationsException(str(err)) from None
            code = []
            for x, (A, B) in system.items():
                A, B = sympy_to_str(A), sympy_to_str(B)
                code.append(f"_{x} = {x} + dt * exprel(({A}) * dt) * (({A}) * {x} + {B})" if A != "0" else
                            f"_{x} = {x} + dt * ({B})")
            return "\n".join(code + [f"{x} = _{x}" for x in system])

    return ExponentialEuler()


class Brian2Engine(Engine):
    """Presents examples one after another; the parameters change by the plasticity."""

    name = "brian2"

    def __init__(self, model: Model, params: Parameters, *, codegen: str = "numpy", **_):
        import brian2 as b2

        spec = model.spec
        if spec.solver not in ("euler", "exponential_euler"):
            raise ConfigError(f"{model.source}: dynamics.solver: the brian2 engine integrates with euler or exponential_euler; "
                              f"got {spec.solver!r} (use engine torch for rk4 and adaptive)")
        if spec.plasticity.influence:
            raise ConfigError(f"{model.source}: dynamics.plasticity.influence: the layer factor is applied by the torch engine only")
        if spec.feedback_plasticity.rule == "inverse_loss":
            raise ConfigError(f"{model.source}: dynamics.feedback_plasticity.rule: inverse_loss runs on the torch engine only; the "
                              "brian2 engine has the decoder rule (decoder) and fixed feedback")
        params.check(model)
        b2.prefs.codegen.target = codegen
        self.b2, self.model, self.spec = b2, model, spec
        self.dt = spec.dt * b2.second
        self.method = exponential_euler() if spec.solver == "exponential_euler" else "euler"
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
        for obj in self.net.objects:  # they belong to this network even before it first runs
            obj._network = self.net.id
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
        if stochastic and self.spec.solver == "exponential_euler":
            raise ConfigError(f"{self.model.source}: dynamics.solver: exponential_euler cannot integrate a user's white "
                              f"noise xi (population {pop.name}; use euler: Euler-Maruyama)")
        self.tables[pop.name] = ns
        return b2.NeuronGroup(pop.size, text, method="euler-maruyama" if stochastic else self.method, dt=self.dt,
                              namespace=ns, order=GROUPS, name=pop.name)

    def _synapses(self, p, consts):
        model, b2 = self.model, self.b2
        pre, post = self.groups[p.pre], self.groups[p.post]
        keep = set(consts)
        lines = ["plastic : 1 (shared)", "alive : 1"]
        rule = model.rules.get(p.name)
        if rule is not None:
            pre_factor = f"{model.presynaptic[p.name]}_pre"
            lines.append(f"dw/dt = plastic * alive * (eta * {rule}_post * {pre_factor} - eta * gamma * w) : 1 (clock-driven)")
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
                raise ConfigError(f"{model.source}: dynamics.populations: {p.pre} and {p.post} both define the parameter {key!r}; "
                                  "the brian2 engine needs distinct names in connected populations")
        self.namespaces.append(ns)
        S = b2.Synapses(pre, post, "\n".join(lines), method=self.method, dt=self.dt, order=SYNAPSES, namespace=ns,
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
            pre_factor = f"{model.presynaptic[st.scope]}_pre"
            runner = self.synapses[st.scope].run_regularly(f"w += plastic * alive * ({post}) * {pre_factor}", dt=self.dt,
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
        """Set a variable of a group where it exists (a per-neuron value broadcasts)."""
        v = self.groups[group].variables.get(var)
        if v is not None:
            v.set_value(float(value) if v.scalar else np.broadcast_to(np.asarray(value, dtype=float), v.size).copy())

    def _gates(self, **gates) -> None:
        for name in self.groups:
            for g, value in gates.items():
                self._set(name, g, value)

    def _run(self, steps: int, *, monitors=False, updaters=True, runners=(), check=None, read=False) -> int:
        """Run `steps` steps with the monitors on or off and the given event runners on;
        `updaters` True (every ODE), "groups" (the populations' only: an event step) or
        False (a read step, where nothing moves); `check` [(population, var)] stops the run
        at steady state, `read` keeps the values `_read` takes.  Returns the steps run."""
        for m in self.monitors.values():
            m.active = monitors
        for r in self.runners["feedback"] + self.runners["onset"]:
            r.active = r in runners
        for G in self.groups.values():
            G.state_updater.active = bool(updaters)
        for S in self.synapses.values():  # in event steps the weights' ODEs stand still
            if S.state_updater is not None:
                S.state_updater.active = updaters is True
        self.checker.active, self.reader.active = check is not None, read
        self.check = {"moving": check or [], "steps": 0, "stopped": None}
        self.net.run(steps * self.dt, namespace={})
        stopped = self.check["stopped"]
        if stopped is None:
            return steps
        for (obj, var), value in stopped["state"].items():  # the state as the check found it
            obj.variables[var].set_value(value)
        return stopped["steps"]

    def _check(self) -> None:
        """Each step: at steady state (‖dy/dt‖ ≤ atol + rtol ‖y‖ for every moving variable)
        keep the state as it is now, before this step's update, and stop the run."""
        spec, c = self.spec, self.check
        for pop, var in c["moving"]:
            G = self.groups[pop]
            rate, value = np.asarray(getattr(G, RATE[var])[:]), np.asarray(G.variables[var].get_value())
            if np.linalg.norm(rate) > spec.atol + spec.rtol * np.linalg.norm(value):
                c["steps"] += 1
                return
        objects = list(self.groups.values()) + list(self.synapses.values())
        c["stopped"] = {"steps": c["steps"], "state": {(obj, var): obj.variables[var].get_value().copy()
                                                        for obj in objects for var in obj.equations.diff_eq_names}}
        self.net.stop()

    def _read(self) -> None:
        """The read step: every wanted value, with this step's summed variables."""
        self.values = {(pop, var): np.array(getattr(self.groups[pop], var)[:], dtype=float) for pop, var in self.wanted}

    def _reset(self, x, label, perturbation: Perturbation, k: int) -> None:
        """Example k: every variable of the examples (not b, c) at rest, switches off, the
        stimulus, the label, the initial state and clamps, the lesions."""
        for name, G in self.groups.items():
            for var, eq in G.equations.items():
                if eq.type != "subexpression" and var not in SHARED:
                    self._set(name, var, 0.0)
        self.groups["input"].h = x
        for pop, value in (perturbation.h0 or {}).items():
            self._set(pop, "h", _example(value, k))
        if label is not None:
            self._set(f"layer{self.model.L}", "label", label)
        for pop, value in perturbation.clamped("forward", "h").items():
            self._set(pop, "h", _example(value, k))
            if pop != "input":
                self._set(pop, "clamp_h", _example(value, k))
                self._set(pop, "hold_h", 1.0)
        for name, S in self.synapses.items():
            S.plastic = 0.0
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

    def settle(self, x, steps, h0=None) -> list:
        x = x.flatten(1).double().cpu().numpy()
        self.monitors, out = {}, []
        for k in range(len(x)):
            self._reset(x[k], None, Perturbation(h0=h0), k)
            self._gates(fwd=1.0)
            self._run(steps)
            out.append([np.array(G.h[:]) for G in self.groups.values()])
        return [torch.from_numpy(np.stack([o[l] for o in out])) for l in range(len(self.groups))]

    def present(self, x, y, record=None, perturbation=None) -> Presentation:
        model, spec, b2 = self.model, self.spec, self.b2
        perturbation = perturbation or Perturbation()
        perturbation.check(model)
        if perturbation.noise and not perturbation.xi:
            raise ConfigError("the brian2 engine needs the noise drawn beforehand (Perturbation.draw)")
        record = spec.record if record is None else record
        names = {(pop, var): model.variable(pop, var, "record") for pop, vs in record.items() for var in vs}
        x = x.flatten(1).double().cpu().numpy()
        out = model.populations[f"layer{model.L}"].size
        labels = None if y is None else (y.double().cpu().numpy() if y.is_floating_point()
                                         else np.eye(out)[y.cpu().numpy()])
        self.rates = {model.moving(l)[0]: RATE[model.moving(l)[1]] for l in model.relaxing}
        monitored: dict[str, set] = {}
        for (pop, var), name in names.items():
            for phase in ("forward", "target"):
                source = self._source(pop, var, name, phase)
                if source is not None:
                    monitored.setdefault(pop, set()).add(source)
        self.monitors = {pop: b2.StateMonitor(self.groups[pop], sorted(vs), record=True, when="groups", order=MONITOR,
                                              name=f"monitor_{pop}*") for pop, vs in monitored.items()}
        self.net.add(*self.monitors.values())
        pops = list(self.groups)
        self.wanted = {(p, "h") for p in pops} | {(p, v) for p in pops[1:] for v in ("tgt", "hdot")} | \
            set(self.rates.items()) | {(p, v) for p, vs in monitored.items() for v in vs}
        beta = perturbation.beta if perturbation.beta is not None else spec.target.beta
        for ns in list(self.tables.values()) + self.namespaces:  # the top target's step, this presentation's
            if "beta" in ns:
                ns["beta"] = beta
        try:
            examples = [self._example(x[k], None if labels is None else labels[k], perturbation, k)
                        for k in range(len(x))]
        finally:
            self.net.remove(*self.monitors.values())
        traces = {key: torch.from_numpy(np.stack([self._trace(ex, key, name) for ex in examples], axis=1))
                  for key, name in names.items()}
        h = [torch.from_numpy(np.stack([ex["final"][(p, "h")] for ex in examples])) for p in pops]
        t = [h[0]] + [torch.from_numpy(np.stack([ex["final"][(p, "tgt")] for ex in examples])) for p in pops[1:]]
        worst = lambda key: {l: max(ex[key][l] for ex in examples) for l in examples[0][key]}  # noqa: E731
        return Presentation(h, t, Phase(max(ex["f_steps"] for ex in examples), worst("fres")),
                            Phase(max(ex["t_steps"] for ex in examples), worst("tres")), traces)

    def _source(self, pop: str, var: str, name: str, phase: str) -> str | None:
        """The monitored variable behind a recorded one in a phase: a target is its activity
        before the onset; the residual r is the norm of the moving variable's rate."""
        if var == "r":
            return ("hdot" if pop != "input" else None) if phase == "forward" else self.rates.get(pop)
        return "h" if var == "t" and phase == "forward" else name

    def _example(self, x, label, perturbation: Perturbation, k: int) -> dict:
        """One example's presentation (the module docstring's timeline); what it recorded."""
        model, spec = self.model, self.spec
        pops = list(self.groups)
        n_f, n_t = spec.steps(spec.forward_phase), spec.steps(spec.target_phase)
        steady = spec.stop == "steady"
        self._reset(x, label, perturbation, k)
        segments = []

        def phase(name, steps, moving):
            start = {pop: len(m.t) for pop, m in self.monitors.items()}
            done = self._run(steps, monitors=True, check=moving if steady else None)
            segments.append((name, start, done + (done < steps), steps))
            self._gates(sigma_h=0.0, sigma_t=0.0)
            self._run(1, updaters=False, read=True)  # the end of the phase, as the torch engine reads it
            return done

        # forward phase
        self._gates(fwd=1.0)
        self._noise(perturbation, "forward", k)
        f_steps = phase("forward", n_f, [(p, "h") for p in pops[1:]])
        fres = {l: float(np.linalg.norm(self.values[(p, "hdot")])) for l, p in enumerate(pops) if l}
        self._gates(fwd=0.0)
        # events: feedback plasticity, the targets' onset
        for pop, value in perturbation.clamped("target", "h").items():
            self._set(pop, "h", _example(value, k))
        self._switch(perturbation.blocked, 1.0)
        self._run(1, runners=self.runners["feedback"], updaters="groups")
        for pop, value in perturbation.clamped("target", "t").items():
            self._set(pop, "clamp_t", _example(value, k))
            self._set(pop, "hold_t", 1.0)
        self._run(1, runners=self.runners["onset"], updaters="groups")
        # target phase, block by block
        self._noise(perturbation, "target", k)
        t_steps, tres = 0, {}
        for steps, switches, moving in model.target_blocks(n_t):
            for (pop, switch), value in switches.items():
                self._set(pop, switch, value)
            t_steps += phase("target", steps, [(pop, var) for _, pop, var in moving])
            for l, pop, var in moving:
                tres[l] = float(np.linalg.norm(self.values[(pop, RATE[var])]))
        self._switch(perturbation.blocked, 0.0)
        return {"segments": segments, "f_steps": f_steps, "t_steps": t_steps, "fres": fres, "tres": tres,
                "final": dict(self.values)}

    def _trace(self, ex: dict, key: tuple, name: str) -> np.ndarray:
        """[time, neuron] of one recorded variable in one example: every `record_every`th
        step of each phase (the last state held after a steady stop), then the final state."""
        pop, var = key
        every = self.spec.record_every
        rows = []
        for phase, start, recorded, steps in ex["segments"]:
            source = self._source(pop, var, name, phase)
            want = -(-steps // every)
            if source is None:
                rows += [np.zeros(1)] * want
                continue
            data = np.asarray(getattr(self.monitors[pop], source))[:, start[pop] : start[pop] + recorded].T
            if var == "r":
                data = np.linalg.norm(data, axis=1, keepdims=True)
            taken = list(data[::every])
            rows += taken + [data[-1]] * (want - len(taken))
        final = ex["final"].get((pop, self._source(pop, var, name, "target"))) if var == "r" else ex["final"][(pop, name)]
        if var == "r":
            final = np.zeros(1) if final is None else np.linalg.norm(final, keepdims=True)
        return np.stack(rows + [final])


def _example(value, k: int):
    """Example k's row of a value (a scalar, a vector or [batch, n])."""
    v = value.double().cpu().numpy() if torch.is_tensor(value) else np.asarray(value, dtype=float)
    return v[k] if v.ndim == 2 and v.shape[0] > 1 else (v[0] if v.ndim == 2 else v)
