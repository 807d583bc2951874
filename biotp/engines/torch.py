"""The torch engine: the model's equation strings translated to batched tensor code.

Each expression is parsed by brian2's parser into sympy and printed as torch code over a
`Scope` -- the variables of one population for a batch of examples, where a missing
subexpression is computed on first use.  Couplings are dense products, stage by stage;
plasticity is the batch mean of err ⊗ h_pre.  One step of the whole network is Euler or
RK4 (`integrators`); the events between phases are Euler steps, like brian2's.

Examples are presented side by side ([batch, n] per variable); the weights and biases are
shared by the batch.
"""

from __future__ import annotations

import math

import sympy
import torch

from ..dynamics.model import GATED, SHARED, Model
from ..errors import ConfigError
from .base import Engine, Parameters, Perturbation, Phase, Presentation
from .integrators import SOLVERS, phi1

FUNCTIONS = {"tanh": "torch.tanh", "exp": "torch.exp", "log": "torch.log", "sqrt": "torch.sqrt", "Abs": "torch.abs",
             "sign": "torch.sign", "sin": "torch.sin", "cos": "torch.cos", "clip": "torch.clamp", "exprel": "phi1"}


def to_torch(expr: sympy.Expr, constants: dict) -> str:
    """Python source of `expr` over torch tensors: symbols read from the scope `s`, the
    names in `constants` replaced by their values and symbol-free parts folded (so what a
    function is applied to is a tensor)."""
    return _print(expr.subs({s: constants[str(s)] for s in expr.free_symbols if str(s) in constants}))


def _print(expr: sympy.Expr) -> str:
    if expr.is_Symbol:
        return f"s[{str(expr)!r}]"
    if not expr.free_symbols:
        value = _constant(expr)
        return f"float({str(value)!r})" if math.isinf(value) else repr(value)
    args = [_print(a) for a in expr.args]
    if expr.is_Add:
        return "(" + " + ".join(args) + ")"
    if expr.is_Mul:
        return "(" + " * ".join(args) + ")"
    if expr.is_Pow:
        return f"({args[0]} ** {args[1]})"
    name = type(expr).__name__
    if name in FUNCTIONS:
        return f"{FUNCTIONS[name]}({', '.join(args)})"
    raise ConfigError(f"the torch engine cannot translate {name!r} in {expr}; expected arithmetic and "
                      f"{', '.join(sorted(FUNCTIONS))}")


def _constant(expr: sympy.Expr) -> float:
    """The float64 value of a symbol-free expression (brian2's function classes, such as its
    sqrt and clip, do not evaluate in sympy)."""
    if expr.is_Number or expr is sympy.pi:
        return float(expr)
    args = [_constant(a) for a in expr.args]
    if expr.is_Add:
        return math.fsum(args)
    if expr.is_Mul:
        return math.prod(args)
    if expr.is_Pow:
        return args[0] ** args[1]
    name = type(expr).__name__
    if name not in FUNCTIONS:
        raise ConfigError(f"the torch engine cannot evaluate {name!r} in {expr}")
    f = eval(FUNCTIONS[name], {"torch": torch, "phi1": phi1})  # noqa: S307 (a name from FUNCTIONS)
    return float(f(*(torch.tensor(a, dtype=torch.float64) for a in args)))


def compile_expression(text: str, constants: dict, where: str):
    """A function scope -> tensor for a brian2 expression string (see `to_torch`)."""
    from brian2.parsing.sympytools import str_to_sympy

    try:
        code = to_torch(str_to_sympy(text), constants)
    except (SyntaxError, TypeError, ValueError) as err:
        raise ConfigError(f"{where}: cannot read the expression {text!r}: {err}") from None
    return eval(f"lambda s: {code}", {"torch": torch, "phi1": phi1})  # noqa: S307 (code printed from sympy above)


def _rows(tree: dict, rows: torch.Tensor, batch: int) -> dict:
    """The examples `rows` of every per-example leaf ([batch, ...]) of a dict of dicts."""
    return {n: {v: x[rows] if torch.is_tensor(x) and x.dim() >= 2 and x.shape[0] == batch else x
                for v, x in part.items()} for n, part in tree.items()}


class Scope(dict):
    """The variables of one population at one instant: a missing subexpression is computed
    on first use, and so is a coupling it receives (`into`), from the sending population's
    scope in `scopes` -- so a step computes only the sums its equations read."""

    __slots__ = ("sub", "into", "scopes", "engine", "where")

    def __init__(self, values: dict, sub: dict, into: dict, scopes: dict, engine, where: str):
        super().__init__(values)
        self.sub, self.into, self.scopes, self.engine, self.where = sub, into, scopes, engine, where

    def __missing__(self, name):
        if name in self.sub:
            value = self.sub[name](self)
        elif name in self.into:
            value = self.engine._sum(self.into[name], self.scopes)
        else:
            raise ConfigError(f"{self.where}: {name!r} is not defined")
        self[name] = value
        return value

    def forget(self) -> None:
        """Drop computed subexpressions (after a statement changed a variable); the sums stay,
        as in a brian2 step."""
        for name in self.sub:
            self.pop(name, None)


class CompiledPopulation:
    """One population's equations as torch functions."""

    def __init__(self, pop, model: Model, units: dict):
        from brian2 import Equations

        self.pop, self.name, self.size = pop, pop.name, pop.size
        eqs = Equations(pop.equations)
        # folded: brian2's units (unless a variable has the name), the circuit's constants (β
        # excepted: a protocol may change it), the user's
        units = {k: v for k, v in units.items() if k not in eqs.names}
        constants = {**units, **{k: v for k, (v, _) in model.constants.items() if k != "beta"},
                     **{k: v for k, (v, _) in pop.parameters.items()}}
        where = f"population {pop.name}"
        self.diff = {n: compile_expression(str(e.expr), constants, where) for n, e in eqs.items()
                     if e.type == "differential equation"}
        self.sub = {n: compile_expression(str(e.expr), constants, where) for n, e in eqs.items()
                    if e.type == "subexpression"}
        self.linear = {}  # the coefficient of each variable in its own rate (exponential Euler)
        if model.spec.solver == "exponential_euler":
            from brian2.parsing.sympytools import str_to_sympy

            for var, expr in eqs.get_substituted_expressions():
                rate, x = str_to_sympy(expr.code), sympy.Symbol(var, real=True)
                A = sympy.diff(rate, x)
                if A.has(x):
                    raise ConfigError(f"{model.source}: dynamics.solver: exponential_euler needs equations linear in "
                                      f"their own variable; d{var}/dt = {expr} in population {pop.name} is not "
                                      "(use euler or rk4)")
                if A != 0:
                    self.linear[var] = compile_expression(str(A), constants, where)
        self.params = [n for n, e in eqs.items() if e.type == "parameter"]
        self.shared = [n for n, e in eqs.items() if "shared" in e.flags]
        self.stochastic = sorted(eqs.stochastic_variables)


class TorchEngine(Engine):
    """Presents batches; its parameters change in place by the model's plasticity."""

    name = "torch"

    def __init__(self, model: Model, params: Parameters, *, generator: torch.Generator | None = None,
                 dtype=torch.float64, device="cpu"):
        import brian2

        self.model, self.spec = model, model.spec
        params.check(model)
        self.dtype, self.device = dtype, torch.device(device)
        self.generator = generator or torch.Generator().manual_seed(0)
        units = {name: float(u) for name, u in vars(brian2).items() if isinstance(u, brian2.Unit)}
        units["dt"] = self.spec.dt
        self.pops = {name: CompiledPopulation(p, model, units) for name, p in model.populations.items()}
        self.constants = {k: v for k, (v, _) in model.constants.items()}
        self.sources = {(c.projection, c.target): compile_expression(c.source, {**units, **self.constants},
                                                                     f"coupling {c.target}") for c in model.couplings}
        self.into = {name: {c.target: c for c in model.couplings if self._receiver(c) == name} for name in self.pops}
        self.cache, self.masked, self.settling = {}, {}, None
        # how often the host looks whether a batch has settled (a device sync): every step
        # on the CPU, where it is free; every 16 on a GPU.  The results do not depend on it.
        self.look = 1 if self.device.type == "cpu" else 16
        self.statements = {ev: [s for s in model.statements if s.event == ev] for ev in ("feedback", "onset")}
        self.compiled_statements = {id(s): compile_expression(s.expr, {**units}, f"{s.scope}: {s.var}")
                                    for s in model.statements}
        solver = SOLVERS[self.spec.solver]
        self.solver = solver(self._linear) if self.spec.solver == "exponential_euler" else solver()
        if self.spec.solver == "adaptive":
            self._check_adaptive()
        if self.spec.solver == "exponential_euler" and any(self.pops[n].stochastic for n in self.pops):
            raise ConfigError(f"{model.source}: dynamics.solver: exponential_euler cannot integrate a user's white "
                              "noise xi (use euler: Euler-Maruyama)")
        self.set_parameters(params)

    def _check_adaptive(self) -> None:
        """What the adaptive solver's per-example steps cannot honour, refused by name."""
        spec, why = self.spec, None
        if any(self.pops[n].stochastic for n in self.pops):
            why = "a user's white noise xi needs a fixed step (euler)"
        elif self.model.plastic and spec.relaxation != "difference":
            why = (f"with plasticity the targets of relaxation {spec.relaxation!r} read the plastic weights, which "
                   "the examples share: use relaxation difference, or euler/rk4")
        elif self.model.plastic and spec.plasticity.gamma > 0:
            why = "weight decay (plasticity.gamma > 0) acts on the shared weights over the batch's time: use euler/rk4"
        elif self.model.plastic and spec.plasticity.influence:
            why = "the layer factor (influence) is applied by the fixed-step solvers only"
        if why:
            raise ConfigError(f"{self.model.source}: dynamics.solver: adaptive: {why}")

    # ------------------------------------------------------------- parameters
    def parameters(self) -> Parameters:
        return self.params.copy()

    def set_parameters(self, params: Parameters) -> None:
        self.params = params.copy(self.dtype, self.device)

    def _receiver(self, c) -> str:
        """The population a coupling sums into."""
        p = self.model.projections[c.projection]
        return p.post if c.direction == "post" else p.pre

    def _sender(self, c) -> str:
        """The population a coupling reads from."""
        p = self.model.projections[c.projection]
        return p.pre if c.direction == "post" else p.post

    # ---------------------------------------------------------- the vector field
    def _scopes(self, state: dict, W: dict) -> dict:
        """Scopes of every population at `state` under the weights W (couplings lazily)."""
        scopes = {}
        self.W = W
        for name, cp in self.pops.items():
            values = {**self.base[name], **self.values[name], **state.get(name, {})}
            scopes[name] = Scope(values, cp.sub, self.into[name], scopes, self, f"population {name}")
        return scopes

    def _sum(self, c, scopes: dict) -> torch.Tensor:
        """A coupling's value: Σ over the projection's synapses of its source.  A plain
        variable through unchanged weights gives the value it gave before (the input of
        the first layer while the stimulus is clamped, a frozen activity in the target phase)."""
        src = scopes[self._sender(c)]
        plain = c.source in src  # a stored variable (subexpressions are computed on demand)
        w = self.W.get(c.projection)
        if plain:
            hit = self.cache.get(c)
            if hit is not None and hit[0] is src[c.source] and hit[1] is w:
                return hit[2]
        x = self.sources[(c.projection, c.target)](src)
        if not c.weighted:
            out = x.sum(1, keepdim=True)
        else:
            out = x @ w.T if c.direction == "post" else x @ w
        if plain:
            self.cache[c] = (src[c.source], w, out)
        return out

    def _batch(self, value, pop: str) -> torch.Tensor:
        """`value` as [batch, n] (a constant expression gives a number)."""
        if torch.is_tensor(value) and value.dim() == 2:
            return value
        return torch.as_tensor(value, dtype=self.dtype, device=self.device).expand(self.B, self.pops[pop].size)

    def _weights(self, y: dict) -> dict:
        """Effective weights by projection: the plastic ones from y, lesions applied (a
        masked matrix is kept while its weights do not change)."""
        W = {}
        for name, p in self.model.projections.items():
            if p.kind == "pool":
                continue
            w = y.get("~w", {}).get(name)
            w = self.params.weight(p) if w is None else w
            mask = self.alive.get(name)
            if mask is not None:
                hit = self.masked.get(name)
                if hit is None or hit[0] is not w:
                    hit = self.masked[name] = (w, w * mask)
                w = hit[1]
            W[name] = w
        return W

    def field(self, y: dict) -> dict:
        """d/dt of every state variable and plastic weight at y (the scopes stay in `last`).

        In a phase with a steady-state stop (`self.settling`), an example whose moving
        variables satisfy ‖dy/dt‖ ≤ atol + rtol ‖y‖ at the start of a step is settled from
        then on: its rates are 0 and it adds nothing to the shared parameters' rates, so it
        holds its state, as if it had stopped alone (`raw` keeps the rates it had); the
        weights' decay acts until every example has settled."""
        W = self._weights(y)
        scopes = self.last = self._scopes(y, W)
        rates, shared = {}, []
        for name, part in y.items():
            if name == "~w":
                continue
            s, diff = scopes[name], self.pops[name].diff
            rates[name] = {}
            for var, value in part.items():
                r = diff[var](s)
                if var in SHARED and torch.is_tensor(r) and r.dim() == 2:
                    shared.append((name, var, r))
                    continue
                if not torch.is_tensor(r) or r.shape != value.shape:
                    r = torch.as_tensor(r, dtype=self.dtype, device=self.device).expand_as(value)
                rates[name][var] = r
        self.raw = rates
        moving = 1.0
        if self.settling is not None:
            if self.settling["first"]:  # the step's first stage: who has settled
                self.settling["first"] = False
                self.settling["done"] |= self._settled(self.settling["moving"], y, rates)
            moving = (~self.settling["done"]).to(self.dtype)[:, None]
            rates = {n: {v: r * moving if r.dim() == 2 and r.shape[0] == self.B else r for v, r in part.items()}
                     for n, part in rates.items()}
        for name, var, r in shared:  # a parameter of the circuit moves by the batch mean
            rates[name][var] = (r * moving).sum(0) / r.shape[0]
        if "~w" in y:
            eta, gamma = self.constants["eta"], self.constants["gamma"]
            rates["~w"] = {}
            for proj, w in y["~w"].items():
                p = self.model.projections[proj]
                err = self._batch(scopes[p.post][self.model.rules[proj]], p.post) * moving
                decay = gamma * w * (moving.amax() if torch.is_tensor(moving) else 1.0)
                dw = eta * (err.T @ scopes[p.pre][self.model.presynaptic[proj]] / err.shape[0] - decay)
                mask = self.alive.get(proj)
                rates["~w"][proj] = dw if mask is None else dw * mask
        return rates

    def _settled(self, moving: list, y: dict, k: dict) -> torch.Tensor:
        """Per example: ‖dy/dt‖ ≤ atol + rtol ‖y‖ for every moving variable (a bool [batch])."""
        atol, rtol = self.spec.atol, self.spec.rtol
        return torch.stack([k[pop][var].norm(dim=1) <= atol + rtol * y[pop][var].norm(dim=1)
                            for _, pop, var in moving]).all(0)

    def _linear(self, y: dict) -> dict:
        """The coefficient A of each variable of y in its own rate, at the field's last
        evaluation (exponential Euler); the weights' is -η γ."""
        out = {}
        for name, part in y.items():
            if name == "~w":
                out[name] = {proj: -self.constants["eta"] * self.constants["gamma"] for proj in part}
                continue
            linear = self.pops[name].linear
            out[name] = {v: linear[v](self.last[name]) for v in part if v in linear}
        return out

    # ----------------------------------------------------------------- stepping
    def _state(self, which: str) -> dict:
        """The integrated variables: every population's differential equations (biases
        only in the target phase), and the plastic weights in the target phase."""
        y = {}
        for name, cp in self.pops.items():
            part = {v: self.base[name][v] if v in SHARED else self.values[name][v]
                    for v in cp.diff if not self._still(name, v, which)}
            if part:
                y[name] = part
        if which == "target" and self.model.plastic:
            y["~w"] = {proj: self.params.weight(self.model.projections[proj])
                       for proj in self.model.rules if proj not in self.blocked}
        return y

    def _still(self, pop: str, var: str, which: str) -> bool:
        """Whether a built-in variable stands still (all its switches 0, or a bias outside
        the target phase): it is then not integrated, and its rate is not computed."""
        if var in SHARED and which != "target":
            return True
        gates = GATED.get(var)
        return gates is not None and all(not self.base[pop].get(g, 0.0) for g in gates)

    def _store(self, y: dict) -> None:
        for name, part in y.items():
            if name == "~w":
                for proj, w in part.items():
                    p = self.model.projections[proj]
                    (self.params.W if p.kind == "forward" else self.params.V)[p.layer] = w
                continue
            for var, value in part.items():
                if var in SHARED:
                    self._set_shared(name, var, value)
                else:
                    self.values[name][var] = value

    def _set_shared(self, pop: str, var: str, value) -> None:
        """b of layer l is b_l; c of layer l is the bias of g_{l+1}, which predicts layer l."""
        l = self.model.populations[pop].index
        if var == "b":
            self.params.b[l] = value
        else:
            self.params.c[l + 1] = value
        self.base[pop][var] = value

    def _inputs(self, phase: str, step: int | None) -> None:
        """This step's noise samples (zero with `step` None), and a user's white noise."""
        for (p, var, pop), xi in self.xi.items():
            if p == phase:
                self.values[pop][f"noise_{var}"] = xi[:, step] if step is not None else torch.zeros_like(xi[:, 0])
        for name, cp in self.pops.items():
            for v in cp.stochastic:  # Euler-Maruyama: ξ/√dt, so that dt·ξ/√dt = √dt ξ
                self.values[name][v] = torch.randn((self.B, cp.size), generator=self.generator,
                                                   dtype=self.dtype).to(self.device) / math.sqrt(self.spec.dt)

    def _phase(self, phase: str, steps: int, moving: list, sample) -> Phase:
        """Integrate `steps` of dt, sampling every `record_every` steps; `moving` [(layer,
        population, var)] decide steady state (`stop: steady`: each example stops when it has
        settled, see `field`) and the residual.  The host looks whether all have settled
        every `self.look` steps (a device sync; it changes nothing but the cost)."""
        if self.spec.solver == "adaptive":
            return self._adaptive_phase(phase, steps, moving)
        spec, every, look = self.spec, self.spec.record_every, self.look
        y = self._state(phase)
        if spec.stop == "steady" and moving:
            self.settling = {"moving": moving, "first": True,
                             "done": torch.zeros(self.B, dtype=torch.bool, device=self.device)}
            taken = torch.zeros(self.B, dtype=torch.long, device=self.device)
        s = 0
        try:
            while s < steps:
                self._inputs(phase, s)
                first = []

                def field(yy):
                    out = self.field(yy)
                    if not first:
                        first.append((self.last, self.raw))
                    return out

                if self.settling is not None:
                    self.settling["first"] = True
                y_next, _ = self.solver.step(field, y, spec.dt)
                if s % every == 0:
                    sample(*first[0])
                y, s = y_next, s + 1
                if self.settling is not None:
                    taken += ~self.settling["done"]
                    if s % look == 0 and bool(self.settling["done"].all()):
                        break
        finally:
            settling, self.settling = self.settling, None
        self._store(y)
        self._inputs(phase, None)
        k = self.field(y)
        for _ in range((s - 1) // every * every + every, steps, every):  # settled: the state holds
            sample(self.last, k)
        used = int(taken.max()) if settling is not None else s
        return Phase(used, {l: float(k[pop][var].norm(dim=1).max()) for l, pop, var in moving})

    def _adaptive_phase(self, phase: str, steps: int, moving: list) -> Phase:
        """The phase's `steps` × dt with an embedded Runge-Kutta 3(2) pair and a step size per
        example (the local error of each state variable within solver_atol + solver_rtol |y|).
        An example that has finished (or, with `stop: steady`, settled) leaves the batch, so
        it costs nothing more.  The plastic weights and biases change by the quadrature of
        each example's own err ⊗ h_pre along its own trajectory, batch-averaged; the targets
        of the difference relaxation -- the only one allowed with plasticity here -- do not
        read the forward weights, so this is the same ODE as the fixed-step solvers'."""
        spec, solver = self.spec, self.solver
        B, T = self.B, steps * spec.dt
        y = self._state(phase)
        plastic = y.pop("~w", {})
        for part in y.values():
            for v in [v for v in part if v in SHARED]:
                del part[v]
        y = {n: part for n, part in y.items() if part}
        full = self.values
        t = torch.zeros(B, dtype=self.dtype, device=self.device)
        h = torch.full((B, 1), spec.dt, dtype=self.dtype, device=self.device)
        done = torch.zeros(B, dtype=torch.bool, device=self.device)
        taken = torch.zeros(B, dtype=torch.long, device=self.device)
        dW = {proj: torch.zeros_like(w) for proj, w in plastic.items()}
        db = {self.model.projections[proj].post: torch.zeros_like(self.base[self.model.projections[proj].post]["b"])
              for proj in plastic}
        # looking every step (CPU), the examples still moving are gathered (a finished one
        # costs nothing); else all stay, masked, and the host looks every `look` steps
        look = self.look
        compact, rows, it = look == 1, torch.arange(B, device=self.device), 0
        while it % look or not bool(done.all()):
            it += 1
            if compact:
                rows = (~done).nonzero().squeeze(1)
                self.values, self.B = _rows(full, rows, B), len(rows)
            ys, hs = _rows(y, rows, B), h[rows]
            scopes = []

            def field(yy):
                out = self.field(yy)
                scopes.append(self.last)
                return out

            y3, ks, err = solver.step(field, ys, hs)
            ratio = torch.zeros(len(rows), dtype=self.dtype, device=self.device)
            for n, part in err.items():
                for v, e in part.items():
                    scale = spec.solver_atol + spec.solver_rtol * torch.maximum(ys[n][v].abs(), y3[n][v].abs())
                    ratio = torch.maximum(ratio, (e.abs() / scale).amax(1))
            accept = ratio <= 1
            settled = torch.zeros_like(accept)
            if spec.stop == "steady" and moving:
                settled = self._settled(moving, ys, ks[0])
            go = (accept & ~settled & ~done[rows]).to(self.dtype)[:, None]
            for proj in plastic:  # ∫ err ⊗ h_pre dt, each example along its own steps
                p = self.model.projections[proj]
                for bi, sc in zip(solver.b, scopes):
                    if bi:
                        e = self._batch(sc[p.post][self.model.rules[proj]], p.post) * (hs * go * bi)
                        dW[proj] += e.T @ sc[p.pre][self.model.presynaptic[proj]]
                        db[p.post] += e.sum(0)
            for n, part in y.items():
                for v in part:
                    part[v] = part[v].index_copy(0, rows, torch.where(go.bool(), y3[n][v], ys[n][v]))
            t[rows] += hs[:, 0] * go[:, 0]
            taken[rows] += go[:, 0].long()
            done[rows] = done[rows] | settled | (t[rows] >= T * (1 - 1e-12))
            grow = (0.9 * ratio.clamp_min(1e-10) ** (-1 / solver.order)).clamp(0.2, 5.0)
            h[rows] = torch.minimum(hs * grow[:, None], (T - t[rows]).clamp_min(0)[:, None])
        self.values, self.B = full, B
        eta = self.constants["eta"]
        for proj, w in plastic.items():
            mask = self.alive.get(proj)
            change = eta * dW[proj] / B
            y.setdefault("~w", {})[proj] = w + (change if mask is None else change * mask)
            post = self.model.projections[proj].post
            y.setdefault(post, {})["b"] = self.base[post]["b"] + eta * db[post] / B
        self._store(y)
        k = self.field(self._state(phase))
        return Phase(int(taken.max()), {l: float(k[pop][var].norm(dim=1).max()) for l, pop, var in moving})

    def _event(self, event: str) -> None:
        """One event step: couplings from the state, the statements in order, then an Euler
        step of the gated dynamics with the couplings from before the statements."""
        scopes = self._scopes({}, self._weights({}))
        sums = {}
        for c in self.model.couplings:
            receiver = self._receiver(c)
            sums.setdefault(receiver, {})[c.target] = scopes[receiver][c.target]
        for st in self.statements[event]:
            if st.gate is not None and st.gate in self.blocked:
                continue
            f = self.compiled_statements[id(st)]
            if st.scope in self.pops:
                s = scopes[st.scope]
                value = f(s)
                value = self._batch(value, st.scope)
                if st.var in SHARED:
                    value = value.mean(0)
                new = value if st.op == "=" else s[st.var] + value
                if st.var in SHARED:
                    self._set_shared(st.scope, st.var, new)
                else:
                    self.values[st.scope][st.var] = new
                s[st.var] = new
                s.forget()
            else:
                p = self.model.projections[st.scope]
                post = self._batch(f(scopes[p.post]), p.post)
                dw = post.T @ scopes[p.pre][self.model.presynaptic[st.scope]] / post.shape[0]
                mask = self.alive.get(st.scope)
                store = self.params.W if p.kind == "forward" else self.params.V
                store[p.layer] = store[p.layer] + (dw if mask is None else dw * mask)
        y = self._state("event")
        for name, part in y.items():
            s = Scope({**self.base[name], **self.values[name], **sums.get(name, {})}, self.pops[name].sub, {}, {},
                      self, name)
            linear = self.pops[name].linear  # (exponential Euler; empty otherwise)
            for var in part:
                rate = self.pops[name].diff[var](s)
                if var in linear:
                    rate = rate * phi1(linear[var](s) * self.spec.dt)
                part[var] = part[var] + self.spec.dt * rate
        self._store(y)

    # ------------------------------------------------------------- presentation
    def _start(self, x: torch.Tensor, y: torch.Tensor | None, perturbation: Perturbation) -> None:
        """Fresh per-example values: rest (or h0), the stimulus, the label, every gate off."""
        model, B = self.model, x.shape[0]
        self.B = B
        self.blocked = set(perturbation.blocked)
        self.alive = {name: (~mask.bool()).to(self.dtype).to(self.device) for name, mask in perturbation.lesion.items()}
        self.xi = {k: v.to(self.dtype).to(self.device) for k, v in perturbation.xi.items()}
        self.constants["beta"] = perturbation.beta if perturbation.beta is not None else model.spec.target.beta
        self.base, self.values = {}, {}
        for name, cp in self.pops.items():
            l = model.populations[name].index
            base = {g: 0.0 for g in cp.shared}
            base.update(self.constants)
            if "b" in cp.params or "b" in cp.diff:
                base["b"] = self.params.b[l]
            if "c" in cp.params:
                base["c"] = self.params.c[l + 1]
            self.base[name] = base
            self.values[name] = {v: torch.zeros((B, cp.size), dtype=self.dtype, device=self.device)
                                 for v in list(cp.params) + list(cp.diff)
                                 if v not in cp.shared and v not in SHARED and v not in self.into[name]}
            if perturbation.h0 and name in perturbation.h0:
                self.values[name]["h"] = perturbation.h0[name].to(self.values[name]["h"]).clone()
        self.values["input"]["h"] = x
        out = self.values[f"layer{model.L}"]
        if y is not None and "label" in out:
            from torch.nn import functional as F

            y = y.to(self.device)
            out["label"] = (y.to(self.dtype) if y.is_floating_point() else F.one_hot(y, out["label"].shape[1]).to(self.dtype))
        for pop, value in perturbation.clamped("forward", "h").items():
            self.values[pop]["h"] = value.to(x).expand_as(self.values[pop]["h"]).clone()
            if pop != "input":
                self.values[pop]["clamp_h"] = self.values[pop]["h"]
                self.base[pop]["hold_h"] = 1.0

    def _gates(self, **gates) -> None:
        """Set shared switches (fwd, on, on_u, plastic_b, sigma_*) wherever they exist."""
        for base in self.base.values():
            for g, v in gates.items():
                if g in base:
                    base[g] = v

    def _noise(self, perturbation: Perturbation, phase: str) -> None:
        self._gates(sigma_h=0.0, sigma_t=0.0)
        for (var, pop), sigma in perturbation.noisy(phase).items():
            self.base[pop][f"sigma_{var}"] = float(sigma)

    def settle(self, x, steps, h0=None) -> list:
        x = x.flatten(1).to(self.dtype).to(self.device)
        self._start(x, None, Perturbation(h0=h0))
        self._gates(fwd=1.0)
        self._phase("forward", steps, [], lambda s, k: None)
        return [self.values[name]["h"] for name in self.pops]

    def present(self, x, y, record=None, perturbation=None) -> Presentation:
        model, spec = self.model, self.spec
        perturbation = perturbation or Perturbation()
        perturbation.check(model)
        if perturbation.noise and not perturbation.xi:
            perturbation = perturbation.draw(model, x.shape[0], self.generator, self.dtype)
        record = spec.record if record is None else record
        if spec.solver == "adaptive" and (any(record.values()) or perturbation.noise):
            raise ConfigError(f"{model.source}: dynamics.solver: adaptive steps each example on its own grid; recording traces "
                              "(dynamics.record) and noise need a fixed-step solver (euler or rk4)")
        x = x.flatten(1).to(self.dtype).to(self.device)
        self._start(x, y, perturbation)
        sample, traces = self._sampler(record)
        pops = list(self.pops)
        n_f, n_t = spec.steps(spec.forward_phase), spec.steps(spec.target_phase)
        # forward phase
        self._gates(fwd=1.0)
        self._noise(perturbation, "forward")
        fphase = self._phase("forward", n_f, [(l, p, "h") for l, p in enumerate(pops) if l], sample)
        # the events: feedback plasticity, then the targets' onset
        self._gates(fwd=0.0, sigma_h=0.0, sigma_t=0.0)
        for pop, value in perturbation.clamped("target", "h").items():
            self.values[pop]["h"] = value.to(x).expand_as(self.values[pop]["h"]).clone()
        self._event("feedback")
        for pop, value in perturbation.clamped("target", "t").items():
            self.values[pop]["clamp_t"] = value.to(x).expand_as(self.values[pop]["h"]).clone()
            self.base[pop]["hold_t"] = 1.0
        self._event("onset")
        # the target phase, block by block
        self._noise(perturbation, "target")
        self._switch(1.0)
        total, residual = 0, {}
        for steps, switches, moving in model.target_blocks(n_t):
            for (pop, switch), value in switches.items():
                self.base[pop][switch] = value
            ph = self._phase("target", steps, moving, sample)
            total += ph.steps
            residual.update(ph.residual)
        self._noise(Perturbation(), "target")
        sample(self.last, self.field(self._state("target")))  # the final state
        h = [self.values[p]["h"] for p in pops]
        t = [x] + [self.last[p]["tgt"] for p in pops[1:]]
        if model.plastic and spec.plasticity.influence:
            self._influence(t, h)
        self._switch(0.0)
        out = {key: torch.stack(v) for key, v in traces.items()}
        return Presentation(h, t, fphase, Phase(total, residual), out)

    def _sampler(self, record: dict):
        """sample(scopes, rates) appending every recorded variable; and the trace lists."""
        model = self.model
        traces = {(pop, var): [] for pop, vs in record.items() for var in vs}
        names = {key: model.variable(key[0], key[1], "record") for key in traces}
        moving = {}
        for l in model.relaxing:
            pop, var = model.moving(l)
            moving[pop] = var

        def sample(scopes, k):
            for (pop, var), name in names.items():
                if var == "r":  # ‖d/dt‖ of what moves: h in the forward phase, the target's variable after
                    r = k.get(pop, {}).get("h" if self.base[pop].get("fwd") else moving.get(pop))
                    val = r.norm(dim=1, keepdim=True) if r is not None else torch.zeros((self.B, 1), dtype=self.dtype,
                                                                                          device=self.device)
                else:  # a target equals its activity until the onset
                    val = scopes[pop]["h" if var == "t" and self.base[pop].get("fwd") else name]
                    if not torch.is_tensor(val) or val.dim() < 2:
                        val = torch.as_tensor(val, dtype=self.dtype, device=self.device).expand(self.B, self.pops[pop].size)
                traces[(pop, var)].append(val.detach().clone())

        return sample, traces

    def _switch(self, value: float) -> None:
        """The plasticity switches of the forward projections' biases (blocked ones stay off)."""
        for name in self.pops:
            l = self.model.populations[name].index
            if "plastic_b" in self.base[name]:
                self.base[name]["plastic_b"] = 0.0 if f"forward.layer{l}" in self.blocked else value

    def _influence(self, t: list, h: list) -> None:
        """DTP's layer factor (seed 001 §8): each example's phase change of a relaxing layer l
        rescaled by ρ_l = ‖t_top - h_top‖²/‖t_l - h_l‖², applied as the extra (ρ_l - 1)
        times the DTP1 change when the phase ends."""
        model, eta = self.model, self.constants["eta"]
        top = min(l for l in model.targeted if l not in model.relaxing)
        s = ((t[top] - h[top]) ** 2).sum(1, keepdim=True)
        for l in model.relaxing:
            if f"forward.layer{l}" in self.blocked:
                continue
            e = t[l] - h[l]
            rho = s / (e * e).sum(1, keepdim=True).clamp_min(1e-300)
            delta = eta * (rho - 1) * e * self.last[f"layer{l}"]["fac"]
            self.params.W[l] = self.params.W[l] + delta.T @ h[l - 1] / len(delta)
            self._set_shared(f"layer{l}", "b", self.params.b[l] + delta.mean(0))


__all__ = ["TorchEngine", "to_torch", "compile_expression", "Scope"]
