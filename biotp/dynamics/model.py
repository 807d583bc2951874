"""The continuous-time model of a circuit: populations, projections, equations -- pure data.

`build_model(circuit)` reads the network and the `dynamics:` block and returns a `Model`:

  populations   `input` (the clamped stimulus x), `layer1`..`layerL`, each with its brian2
                equation text (`biotp.dynamics.equations` for the catalogue) plus the user's
                own (`dynamics.populations`), checked for units by brian2 when built
  projections   `forward.layer<l>` (W_l: layer l-1 -> l), `feedback.layer<l>` (V_l of g_l:
                layer l -> l-1), `pool.layer<L>` (the output's own all-to-all pool for softmax)
  couplings     summed variables: what each population receives through a projection
  rules         the plastic projections and their postsynaptic factor `err`
  statements    the events between phases (feedback plasticity, the targets' onset)

Engines compile this description (`biotp.engines`): brian2 into NeuronGroups and Synapses,
torch into batched tensor code.  Names are resolved here once: a misnamed population,
projection or variable is a `ConfigError` listing those that exist.

The timeline of one presentation, in steps of dt:
  forward phase   `forward_phase` steps, fwd = 1 (activities settle, targets and weights still)
  feedback event  one step: feedback plasticity (statements with event "feedback")
  onset event     one step: targets take their initial values, the top target steps, and
                  the weights change by the step's integral (statements with event "onset")
  target phase    `target_phase` steps, on = 1 (one block of layers at a time when layerwise),
                  plastic = 1
In the event steps every gate is 0, so the built-in dynamics stand still.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

from ..errors import ConfigError
from . import equations as E

# The engines set the switches (shared variables fwd, on, on_u, plastic_b, plastic_c, hold_h,
# hold_t, sigma_h, sigma_t) and provide noise_h, noise_t: N(0, 1) per step and neuron (0 unless
# a perturbation draws them).
HOOKS = ("I_h", "I_t")
SHARED = ("b", "c")
RATE = {"h": "hdot", "tgt": "tdot", "u": "udot"}  # the subexpression d var/dt of each built-in variable
# the switches of each built-in variable's dynamics: with all of them 0 it stands still
GATED = {"h": ("fwd", "sigma_h"), "tgt": ("on", "sigma_t"), "u": ("on_u",), "b": ("plastic_b",)}  # per-neuron parameters of the circuit, the same for every example


@dataclass(frozen=True)
class Population:
    name: str
    index: int  # 0 = input, l = layer l
    size: int
    activation: str | None
    equations: str  # brian2 syntax, units
    parameters: dict = field(default_factory=dict)  # user constants: name -> (SI value, unit text)

    def variables(self) -> list[str]:
        """Every name the equations define (state variables, subexpressions, parameters)."""
        return [m.group(1) or m.group(2) for m in _DEFINED.finditer(self.equations)]


_DEFINED = re.compile(r"^\s*(?:d(\w+)/dt|(\w+))\s*(?:=|:)", re.M)


@dataclass(frozen=True)
class Projection:
    """Weights from `pre` to `post` (w[post, pre]); `pool` projections are unweighted and
    all-to-all within one population."""

    name: str
    pre: str
    post: str
    kind: str  # forward | feedback | pool
    layer: int  # l of W_l or V_l


@dataclass
class Model:
    spec: object  # the DynamicsSpec
    loss: str
    populations: dict[str, Population]
    projections: dict[str, Projection]
    couplings: list[E.Coupling]
    rules: dict[str, str]  # plastic projection -> the postsynaptic factor (variable of post)
    statements: list[E.Statement]
    relaxing: list[int]  # layers whose targets relax, top-down
    targeted: list[int]  # layers with a target: the relaxing ones, the top and above
    constants: dict  # shared parameters: name -> (SI value, unit text)
    source: str = "<circuit>"  # the circuit file, for error messages
    # projection -> the presynaptic variable its plasticity multiplies: h, or in the
    # potential form the rate f(h) of a layer (`rate`)
    presynaptic: dict = field(default_factory=dict)

    @property
    def L(self) -> int:
        return len(self.populations) - 1

    @property
    def sizes(self) -> list[int]:
        return [p.size for p in self.populations.values()]

    @property
    def plastic(self) -> bool:
        return self.spec.plasticity.rule != "none"

    def moving(self, l: int) -> tuple[str, str]:
        """(population, variable) whose relaxation makes layer l's target: its own tgt, or
        the decoder input u in the layer above (inverse_input)."""
        if self.spec.relaxation == "inverse_input":
            return f"layer{l + 1}", "u"
        return f"layer{l}", "tgt"

    def target_blocks(self, steps: int) -> list[tuple[int, dict, list]]:
        """The target phase as blocks relaxing in turn -- all layers at once (`parallel`) or
        one at a time from the top (`layerwise`), the last block taking any remainder:
        [(steps, {(population, switch): 0 or 1}, [(layer, population, variable) moving])]."""
        blocks = ([self.relaxing] if self.spec.schedule == "parallel" else [[l] for l in self.relaxing]) or [[]]
        out = []
        for i, block in enumerate(blocks):
            n = steps // len(blocks) + (steps % len(blocks) if i == len(blocks) - 1 else 0)
            switches = {}
            for l in self.relaxing:
                pop, var = self.moving(l)
                switches[(pop, "on_u" if var == "u" else "on")] = 1.0 if l in block else 0.0
            out.append((n, switches, [(l, *self.moving(l)) for l in block]))
        return out

    # --------------------------------------------------------------- names, checked
    def population(self, name: str, where: str = "population") -> Population:
        if name not in self.populations:
            raise ConfigError(f"{where}: no population {name!r}; the circuit's populations are "
                              f"{', '.join(self.populations)}")
        return self.populations[name]

    def projection(self, name: str, where: str = "projection") -> Projection:
        if name not in self.projections:
            names = [n for n, p in self.projections.items() if p.kind != "pool"]
            raise ConfigError(f"{where}: no projection {name!r}; the circuit's projections are {', '.join(names)}")
        return self.projections[name]

    def variable(self, population: str, var: str, where: str = "variable") -> str:
        """The equations' name of `var` in `population` (t -> tgt; r is the residual)."""
        from .spec import ALIASES

        pop = self.population(population, where)
        name = ALIASES.get(var, var)
        known = pop.variables()
        if var != "r" and name not in known:
            raise ConfigError(f"{where}: population {population!r} has no variable {var!r}; its variables are "
                              f"{', '.join(sorted(known))} (t for tgt, r for the residual)")
        return name


    def unit(self, population: str, var: str) -> str:
        """The SI unit of a recorded variable as its equations declare it ('1' dimensionless,
        '1/s' a rate, else brian2's symbol); `r`, the residual ‖dy/dt‖, is a rate."""
        from brian2 import Equations, get_unit, second

        if var == "r":
            return "1/s"
        dim = Equations(self.population(population).equations)[self.variable(population, var)].dim
        if dim.is_dimensionless:
            return "1"
        return "1/s" if dim == (1 / second).dim else str(get_unit(dim))


# ------------------------------------------------------------------------- building


def layer_name(l: int) -> str:
    return "input" if l == 0 else f"layer{l}"


def check_layers(circuit) -> list:
    """The circuit's layers, if the continuous-time model can have them (dense, an
    activation with a continuous form, identity transmission); else ConfigError."""
    where = circuit.source or "<circuit>"
    layers = circuit.network.expanded()
    for i, layer in enumerate(layers):
        kind = getattr(layer, "type", "dense")
        if kind != "dense":
            raise ConfigError(f"{where}: network.layers: layer {i + 1} is {kind!r}; the continuous-time model has "
                              "dense populations only (expected type: dense; train other layers with `biotp train`)")
        if layer.activation not in E.ACTIVATION:
            raise ConfigError(f"{where}: network.layers: layer {i + 1} has activation {layer.activation!r}, which has "
                              f"no continuous-time form; expected one of {', '.join(E.ACTIVATION)}")
        if layer.transmit != "identity":
            raise ConfigError(f"{where}: network.layers: layer {i + 1} has transmit: {layer.transmit}, which the "
                              "continuous-time model does not have; expected transmit: identity (train such "
                              "networks with `biotp train`)")
    return layers


def build_model(circuit, input_size: int) -> Model:
    """The model of `circuit` (its `dynamics:` block; defaults if absent) on inputs of
    `input_size`; raises ConfigError for what the continuous-time model cannot express."""
    from .spec import DynamicsSpec

    spec = circuit.dynamics or DynamicsSpec()
    where = circuit.source or "<circuit>"
    layers = check_layers(circuit)
    L = len(layers)
    acts = [None] + [layer.activation for layer in layers]
    # g_l predicts the layer below: its rate through its activation, or (potential form) its
    # potential, linearly by default
    below = (lambda l: "linear") if spec.form == "potential" else (lambda l: acts[l - 1])
    dec = [None, None] + [circuit.feedback.activation or below(l) or "linear" for l in range(2, L + 1)]
    for l in range(2, L + 1):
        if dec[l] not in E.ACTIVATION:
            raise ConfigError(f"{where}: feedback.activation {dec[l]!r} has no continuous-time form; expected one "
                              f"of {', '.join(E.ACTIVATION)}")
    sizes = [input_size] + [layer.size for layer in layers]
    return Builder(spec, circuit.loss, acts, dec, sizes, where, [None] + [layer.bias for layer in layers]).build()


class Builder:
    """Assembles the equations, couplings, rules and statements of one model."""

    def __init__(self, spec, loss, acts, dec, sizes, where, biases):
        self.spec, self.loss, self.acts, self.dec, self.sizes, self.where = spec, loss, acts, dec, sizes, where
        self.biases = biases  # biases[l]: whether layer l has a (learning) bias; without, b stays 0
        self.L = L = len(sizes) - 1
        mode = spec.target.mode
        self.top = L - 1 if mode == "gradient_step" else L
        if self.top < 1:
            raise ConfigError(f"{where}: dynamics.target.mode: gradient_step needs at least two layers")
        self.relaxing = list(range(self.top - 1, 0, -1))
        self.lines = {l: [] for l in range(L + 1)}  # equation lines per population
        self.couplings: dict[tuple[int, str], E.Coupling] = {}
        self.statements: list[E.Statement] = []
        self.rules: dict[str, str] = {}
        self.onsets: dict[int, str] = {}  # relaxing layer -> t_l at the onset
        self.potential = spec.form == "potential"
        if self.potential:
            self.check_potential()

    # small helpers -----------------------------------------------------------
    def eq(self, l: int, *lines: str) -> None:
        for line in lines:
            if line not in self.lines[l]:
                self.lines[l].append(line)

    def couple(self, receiver: int, coupling: E.Coupling) -> None:
        self.couplings.setdefault((receiver, coupling.target), coupling)
        dim = "1/second" if coupling.target == "vudot" else "1"
        self.eq(receiver, f"{coupling.target} : {dim}")

    def fwd(self, l: int) -> str:
        return f"forward.layer{l}"

    def out(self, l: int) -> str:
        """What population l sends through its synapses: h, or in the potential form a
        layer's rate f(h) (the input's h is the stimulus itself)."""
        return "rate" if self.potential and l > 0 else "h"

    def check_potential(self) -> None:
        """What the potential form has (seed 001's DTP in continuous time), others refused."""
        spec, why = self.spec, None
        if spec.relaxation != "difference":
            why = f"relaxation {spec.relaxation!r}: the potential form relaxes targets by the difference rule"
        elif spec.target.mode != "nudged":
            why = f"target.mode {spec.target.mode!r}: the potential form nudges the output, t_L = h_L - β ∂L/∂h_L"
        elif spec.feedback_plasticity.rule == "inverse_loss" or spec.plasticity.influence:
            why = "feedback_plasticity inverse_loss and plasticity.influence are rate-form only"
        if why:
            raise ConfigError(f"{self.where}: dynamics.form: potential: {why}")

    def fb(self, l: int) -> str:
        return f"feedback.layer{l}"

    # the pieces --------------------------------------------------------------
    def build(self) -> Model:
        spec, L = self.spec, self.L
        self.eq(0, "h : 1")
        if self.potential:
            for l in range(1, L + 1):
                self.eq(l, f"rate = {E.act(self.acts[l], 'h')} : 1", f"rate_t = {E.act(self.acts[l], 'tgt')} : 1")
        for l in range(1, L + 1):
            self.forward(l)
        for l in self.relaxing:
            self.relaxation(l)
        for l in range(1, L + 1):
            if l not in self.relaxing:
                self.eq(l, "tgt : 1", "tdot = 0 * Hz : 1/second")
        self.top_targets()
        if spec.plasticity.rule != "none":
            for l in range(1, L + 1):
                self.plasticity(l)
        if spec.feedback_plasticity.rule == "decoder":
            for l in range(2, L + 1):
                self.decoder(l)
        populations = {}
        for l in range(L + 1):
            user = spec.populations.get(layer_name(l))
            populations[layer_name(l)] = self.population(l, user)
        unknown = sorted(set(spec.populations) - set(populations))
        if unknown:
            raise ConfigError(f"{self.where}: dynamics.populations: no population {unknown[0]!r}; the circuit's "
                              f"populations are {', '.join(populations)}")
        projections = {}
        for l in range(1, L + 1):
            projections[self.fwd(l)] = Projection(self.fwd(l), layer_name(l - 1), layer_name(l), "forward", l)
        used = {c.projection for c in self.couplings.values()} | {s.scope for s in self.statements}
        for l in range(2, L + 1):  # the feedback pathways g_l the equations use
            if self.fb(l) in used:
                projections[self.fb(l)] = Projection(self.fb(l), layer_name(l), layer_name(l - 1), "feedback", l)
        if self.loss == "cross_entropy":
            projections[f"pool.layer{L}"] = Projection(f"pool.layer{L}", layer_name(L), layer_name(L), "pool", L)
        constants = {"tau_f": (spec.tau_f, "second"), "tau_t": (spec.tau_t, "second"),
                     "eta": (spec.plasticity.eta, "1"), "gamma": (spec.plasticity.gamma, "Hz"),
                     "beta": (spec.target.beta, "1"), "beta_fb": (spec.feedback_plasticity.beta, "1")}
        presynaptic = {name: self.out(p.layer - 1 if p.kind == "forward" else p.layer)
                       for name, p in projections.items() if p.kind != "pool"}
        model = Model(spec, self.loss, populations, projections, list(self.couplings.values()), self.rules,
                      sorted(self.statements, key=lambda s: (s.event, s.order)), self.relaxing,
                      list(range(1, L + 1)), constants, self.where, presynaptic)
        self.check_record(model)
        from .units import check_units

        check_units(model, self.where)
        return model

    def forward(self, l: int) -> None:
        """τ_f dh/dt = -h + F(a + b + I_h) (gated), a = W_l h_{l-1}; in the potential form
        τ_f dh/dt = -h + a + b + I_h, a = W_l F(h_{l-1})."""
        drive = "a + b + I_h" if self.potential else E.act(self.acts[l], "a + b + I_h")
        self.eq(l, "dh/dt = hdot : 1",
                f"hdot = fwd * (1 - hold_h) * (-h + {drive}) / tau_f"
                f" + sigma_h * sqrt(2 / (tau_f * dt)) * noise_h : 1/second",
                "b : 1", "I_h = 0 : 1", "fwd : 1 (shared)", "hold_h : 1 (shared)", "clamp_h : 1",
                "sigma_h : 1 (shared)", "noise_h : 1")
        self.couple(l, E.Coupling("a", self.fwd(l), self.out(l - 1)))

    def relaxation(self, l: int) -> None:
        """Layer l's target relaxes by the registered relaxation (`equations.RELAXATIONS`)."""
        up = l + 1
        r = E.RELAXATIONS[self.spec.relaxation](self.acts[up], self.dec[up])
        self.eq(l, *r.lines)
        self.eq(up, *r.up_lines)
        for receiver, c in r.couplings:
            projection = self.fwd(up) if c.projection == "forward" else self.fb(up)
            if self.potential:  # g reads the rates of the layer above: f(t), f(h)
                c = replace(c, source={"tgt": "rate_t", "h": "rate"}[c.source])
            self.couple(l if receiver == "self" else up, replace(c, projection=projection))
        if r.relaxes_tgt:  # a relaxing target starts at its onset value (or its clamp)
            self.statements.append(E.Statement("onset", 5, layer_name(l), "tgt", "=",
                                               f"hold_t * clamp_t + (1 - hold_t) * {r.onset}"))
        for var, expr in r.up_onset:
            self.statements.append(E.Statement("onset", 5, layer_name(up), var, "=", expr))
        self.onsets[l] = r.onset

    def top_targets(self) -> None:
        """The output's loss gradient and the top target's step at the onset: nudged t_L =
        h_L - β ∂L/∂h_L (seed 001 eq. target-prop), clamped t_L = the label, or
        gradient_step t_{L-1} = h_{L-1} - β ∂L/∂h_{L-1} (seed 002 eq. 3.7, η̂ = β) with t_L
        nudged as well (so that W_L learns the output loss, as in the fast path's DTP)."""
        L, mode = self.L, self.spec.target.mode
        if self.potential:  # ∂L/∂h through the output's rate
            grad = re.sub(r"\bh\b", "rate", E.LOSS_GRADIENT[self.loss])
            self.eq(L, "label : 1", f"dL = ({grad}) * {E.slope(self.acts[L], 'rate')} : 1")
        else:
            self.eq(L, "label : 1", f"dL = {E.LOSS_GRADIENT[self.loss]} : 1")
        if self.loss == "cross_entropy":
            self.couple(L, E.Coupling("zsum", f"pool.layer{L}", f"exp({self.out(L)})", weighted=False))
        steps = {L: "label" if mode == "clamped" else "h - beta * dL"}
        if mode == "gradient_step":
            self.eq(L, f"dLa = dL * {E.slope(self.acts[L], 'h')} : 1")
            self.couple(L - 1, E.Coupling("gL", self.fwd(L), "dLa", direction="pre", stage=1))
            steps[L - 1] = "h - beta * gL"
        for l, value in steps.items():
            self.eq(l, "hold_t : 1 (shared)", "clamp_t : 1")
            self.statements.append(E.Statement("onset", 5, layer_name(l), "tgt", "=",
                                               f"hold_t * clamp_t + (1 - hold_t) * ({value})"))

    def plasticity(self, l: int) -> None:
        """err_l, the rule's postsynaptic factor, and the onset step's integral."""
        rule, F = self.spec.plasticity.rule, self.acts[l]
        if rule == "dtp":  # (the potential's own error: the slope is 1)
            fac = "1" if self.potential else E.slope(F, "h")
        else:
            fac = "1 / (nin + 1)" if self.potential else f"{E.INVERSE_SLOPE[F].format(y='h')} / (nin + 1)"
            self.couple(l, E.Coupling("nin", self.fwd(l), f"{self.out(l - 1)}**2", weighted=False))
        self.eq(l, f"fac = {fac} : 1", "err = tdot_mean * fac : 1/second")
        if self.biases[l]:
            self.lines[l].remove("b : 1")  # the bias learns: db/dt = plastic_b η err
            self.eq(l, "plastic_b : 1 (shared)", "db/dt = plastic_b * eta * err : 1")
        self.rules[self.fwd(l)] = "err"
        start = self.onsets.get(l, "tgt")  # t_l after the onset: a read-out target's value there
        if start == "h":
            start = "tgt"  # (or its clamp)
        self.eq(l, "step : 1")
        self.statements += [E.Statement("onset", 6, layer_name(l), "step", "=", f"eta * ({start} - h) * fac"),
                            E.Statement("onset", 7, self.fwd(l), "w", "+=", "step", self.fwd(l))]
        if self.biases[l]:
            self.statements.append(E.Statement("onset", 7, layer_name(l), "b", "+=", "step", self.fwd(l)))

    def decoder(self, l: int) -> None:
        """Seed 001's decoder rule on g_l, after the forward phase (see FeedbackPlasticitySpec)."""
        below = l - 1
        self.eq(below, "c : 1", "dec : 1", "plastic_c : 1 (shared)")
        self.couple(below, E.Coupling("vh", self.fb(l), self.out(l)))
        self.couple(below, E.Coupling("nfb", self.fb(l), f"{self.out(l)}**2", weighted=False))
        self.statements += [
            E.Statement("feedback", 5, layer_name(below), "dec", "=",
                        f"beta_fb * (h - {E.act(self.dec[l], 'vh + c')}) / (nfb + 1)"),
            E.Statement("feedback", 6, self.fb(l), "w", "+=", "dec", self.fb(l)),
            E.Statement("feedback", 6, layer_name(below), "c", "+=", "dec", self.fb(l)),
        ]

    def population(self, l: int, user) -> Population:
        """Layer l's equation text: the built-in lines, then the user's (which may redefine
        the hooks I_h, I_t and add variables)."""
        lines = list(self.lines[l])
        params = {}
        if user is not None:
            if l == 0:
                raise ConfigError(f"{self.where}: dynamics.populations.input: the input population is clamped to "
                                  "the stimulus; add equations to layer1..layerN")
            user_lines = [ln.strip() for ln in user.equations.splitlines() if ln.strip() and not ln.strip().startswith("#")]
            builtin = {m.group(1) or m.group(2) for m in _DEFINED.finditer("\n".join(lines))}
            for ln in user_lines:
                m = _DEFINED.match(ln)
                if m is None:
                    raise ConfigError(f"{self.where}: dynamics.populations.{layer_name(l)}.equations: cannot read "
                                      f"{ln!r}; expected brian2's syntax, e.g. 'dA/dt = (h - A) / tau_a : 1'")
                name = m.group(1) or m.group(2)
                if name in HOOKS:
                    lines = [x for x in lines if not x.startswith(f"{name} = 0 ")]
                elif name in builtin:
                    raise ConfigError(f"{self.where}: dynamics.populations.{layer_name(l)}.equations: {ln!r} "
                                      f"redefines the built-in variable {name!r}; add a term through I_h or I_t, or "
                                      "a new variable")
                lines.append(ln)
            from .units import parse_parameter

            for name, value in user.parameters.items():
                params[name] = parse_parameter(value, f"{self.where}: dynamics.populations.{layer_name(l)}.parameters.{name}")
        if self.fwd(l) in self.rules:
            lines.append(self.step_rate(lines))
        return Population(layer_name(l), l, self.sizes[l], self.acts[l], "\n".join(lines), params)

    def step_rate(self, lines: list) -> str:
        """`tdot_mean`, the target's rate as the plasticity integrates it: tdot, or with
        exponential Euler the step's mean rate exprel(A dt) tdot (A, the coefficient of tgt in
        tdot), so that the weights move by η Δtgt ⊗ fac ⊗ h_prev each step, exactly as the
        target they read -- both rules' err are linear in tdot -- at any dt."""
        if self.spec.solver != "exponential_euler" or "dtgt/dt = tdot : 1" not in lines:
            return "tdot_mean = tdot : 1/second"
        import sympy
        from brian2 import Equations
        from brian2.parsing.sympytools import str_to_sympy, sympy_to_str

        try:
            rate = dict(Equations("\n".join(lines)).get_substituted_expressions())["tgt"]
        except Exception:  # noqa: BLE001 (a user's line brian2 cannot read: check_units names it)
            return "tdot_mean = tdot : 1/second"
        A = sympy.diff(str_to_sympy(rate.code), sympy.Symbol("tgt", real=True))
        if A == 0:  # (the gradient relaxation: tgt enters through couplings only)
            return "tdot_mean = tdot : 1/second"
        return f"tdot_mean = exprel(({sympy_to_str(A)}) * dt) * tdot : 1/second"

    def check_record(self, model: Model) -> None:
        for pop, variables in self.spec.record.items():
            for var in variables:
                model.variable(pop, var, f"{self.where}: dynamics.record.{pop}")
