"""The engine contract: what every engine of the continuous-time model does, and the types
it exchanges.  An engine is built from a `Model` and `Parameters`; it presents batches of
examples (forward phase, events, target phase -- see `biotp.dynamics.model`) under a
`Perturbation`, and hands its parameters back.  Engines share these public types and
nothing else: neither imports the other.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import torch

from ..errors import ConfigError


@dataclass
class Parameters:
    """The circuit's learnable quantities, by layer l: forward W[l] [n_l, n_{l-1}] and
    biases b[l] [n_l]; feedback V[l] [n_{l-1}, n_l] of g_l and its bias c[l] [n_{l-1}]."""

    W: dict
    b: dict
    V: dict = field(default_factory=dict)
    c: dict = field(default_factory=dict)

    @classmethod
    def from_network(cls, net, dtype=torch.float64, device=None) -> "Parameters":
        """The initial weights of a fast-path `Network` (the same draw as a discrete run)."""
        conv = lambda p: p.detach().to(dtype=dtype, device=device).clone()  # noqa: E731
        W = {l: conv(m.weight) for l, m in enumerate(net.layers, 1)}
        b = {l: conv(m.bias) if m.bias is not None else torch.zeros(len(m.weight), dtype=dtype, device=device)
             for l, m in enumerate(net.layers, 1)}  # a layer without a bias: b = 0, and it does not learn
        V = {int(k): conv(g.weight) for k, g in net.feedback.items()}
        c = {int(k): conv(g.bias) if g.bias is not None else torch.zeros(len(g.weight), dtype=dtype, device=device)
             for k, g in net.feedback.items()}
        return cls(W, b, V, c)

    def copy(self, dtype=None, device=None) -> "Parameters":
        conv = lambda d: {k: v.detach().to(dtype=dtype or v.dtype, device=device or v.device).clone()  # noqa: E731
                          for k, v in d.items()}
        return Parameters(conv(self.W), conv(self.b), conv(self.V), conv(self.c))

    def weight(self, projection) -> torch.Tensor:
        """The matrix of a `Projection` (forward: W_l, feedback: V_l)."""
        return (self.W if projection.kind == "forward" else self.V)[projection.layer]

    def check(self, model) -> None:
        """Every projection of the model has weights of its shape."""
        for p in model.projections.values():
            if p.kind == "pool":
                continue
            store = self.W if p.kind == "forward" else self.V
            shape = (model.populations[p.post].size, model.populations[p.pre].size)
            if p.layer not in store:
                raise ConfigError(f"projection {p.name}: no weights given; the relaxation "
                                  f"{model.spec.relaxation!r} needs a feedback pathway g_{p.layer} (a learning rule with "
                                  "feedback modules, e.g. algorithm: dtp)")
            if tuple(store[p.layer].shape) != shape:
                raise ConfigError(f"projection {p.name}: weights of shape {tuple(store[p.layer].shape)}, expected {shape}")


@dataclass
class Phase:
    """What one phase of a presentation did."""

    steps: int
    residual: dict  # layer -> max over examples of ‖dy_l/dt‖ (1/s) at the end


@dataclass
class Presentation:
    h: list  # activities h_0..h_L at the end [batch, n_l]
    t: list  # targets t_0..t_L at the end (t_0 = x)
    forward: Phase
    target: Phase
    traces: dict = field(default_factory=dict)  # (population, variable) -> [time, example, neuron]


def check_finite(p: Presentation, params: "Parameters", model, when: str) -> None:
    """Stop on NaN/inf: the first non-finite recorded sample (population, variable, time
    into the presentation), else the final activities and targets, else the parameters --
    named, with `when` (which presentation), in a DivergenceError."""
    from ..errors import DivergenceError

    spec, found = model.spec, None
    for (pop, var), trace in p.traces.items():
        bad = (~torch.isfinite(trace)).flatten(1).any(1).nonzero()
        if len(bad) and (found is None or int(bad[0]) < found[0]):
            found = (int(bad[0]), f"{pop}.{var}")
    if found is not None:
        at = found[0] * spec.record_every * spec.dt
        raise DivergenceError(f"the continuous-time model diverged at {when}: {found[1]} is not finite (NaN/inf) "
                              f"{at:.4g} s into the presentation; check the time constants against dt, or lower "
                              "dynamics.plasticity.eta")
    for var, values in (("h", p.h), ("tgt", p.t)):
        for name, v in zip(model.populations, values):
            if not torch.isfinite(v).all():
                raise DivergenceError(f"the continuous-time model diverged at {when}: {name}.{var} is not finite "
                                      "(NaN/inf) at the end of the presentation; check the time constants against "
                                      "dt, or lower dynamics.plasticity.eta")
    names = {"W": "forward.layer{} weights", "b": "layer{}.b", "V": "feedback.layer{} weights", "c": "layer{}.c"}
    for part, name in names.items():
        for l, w in getattr(params, part).items():
            if not torch.isfinite(w).all():
                raise DivergenceError(f"the continuous-time model diverged at {when}: "
                                      f"{name.format(l - 1 if part == 'c' else l)} not finite (NaN/inf); lower "
                                      "dynamics.plasticity.eta")


@dataclass
class Perturbation:
    """What an experimenter does to one presentation; every entry acts through the equations.

    clamp    {(phase, var, population): value}: `h` held at value during the forward phase
             (population `input` replaces the stimulus) or set as the activity the target
             phase sees; `t` held at value from the onset (the layer's weights then change by
             the step's integral, like the top target's).  value broadcasts to [batch, n].
    noise    {(phase, var, population): σ}: the term σ √(2/(τ dt)) ξ in d var/dt, ξ ~ N(0, 1)
             per step and neuron from `xi` (so a linear population fluctuates with stationary
             standard deviation σ); phase forward or target.
    xi       {(phase, var, population): [batch, steps, n]}: the standard normals (`draw`).
    lesion   {projection: bool mask [post, pre]}: cut synapses carry nothing and do not learn.
    blocked  projections whose plasticity is switched off (their weights do not move).
    beta     the output target's step size for this presentation (default: the circuit's).
    h0       {population: [batch, n]}: the forward phase's initial activities (default: rest).
    """

    clamp: dict = field(default_factory=dict)
    noise: dict = field(default_factory=dict)
    xi: dict = field(default_factory=dict)
    lesion: dict = field(default_factory=dict)
    blocked: frozenset = frozenset()
    beta: float | None = None
    h0: dict | None = None

    def clamped(self, phase: str, var: str) -> dict:
        return {pop: v for (p, v_, pop), v in self.clamp.items() if p == phase and v_ == var}

    def noisy(self, phase: str) -> dict:
        return {(var, pop): s for (p, var, pop), s in self.noise.items() if p == phase}

    def draw(self, model, batch: int, generator: torch.Generator, dtype=torch.float64) -> "Perturbation":
        """A copy with standard normals for every noisy variable, from `generator`."""
        spec = model.spec
        steps = {"forward": spec.steps(spec.forward_phase), "target": spec.steps(spec.target_phase)}
        xi = {key: torch.randn((batch, steps[key[0]], model.populations[key[2]].size), generator=generator,
                               dtype=dtype) for key in sorted(self.noise)}
        return Perturbation(self.clamp, self.noise, xi, self.lesion, self.blocked, self.beta, self.h0)

    def check(self, model) -> None:
        """Every name exists and every intervention is one the model's equations have: a
        clamp needs the switch hold_h / hold_t, noise the σ of its variable."""
        for kind, keys, switch in (("clamp", self.clamp, "hold_{}"), ("add noise to", self.noise, "sigma_{}")):
            for phase, var, pop in keys:
                p = model.population(pop, f"perturbation: {kind} {var}")
                if (kind, phase, var, pop) == ("clamp", "forward", "h", "input"):
                    continue  # the stimulus itself
                if switch.format(var) not in p.variables():
                    what = "target that relaxes" if var == "t" else "activity dynamics"
                    raise ConfigError(f"perturbation: cannot {kind} {var!r} of {pop} in the {phase} phase: the "
                                      f"population has no {what} (a read-out target, or the input)")
        for name in list(self.lesion) + list(self.blocked):
            model.projection(name, "perturbation")


class Engine(ABC):
    """Runs the model; `present` changes the parameters by the model's plasticity."""

    name: str

    @abstractmethod
    def present(self, x: torch.Tensor, y: torch.Tensor, record: dict | None = None,
                perturbation: Perturbation | None = None) -> Presentation:
        """One presentation of the batch x (labels y); `record` {population: [variables]}
        defaults to the model's `dynamics.record`."""

    @abstractmethod
    def settle(self, x: torch.Tensor, steps: int, h0: dict | None = None) -> list:
        """Only forward dynamics for `steps` (no events, no plasticity): [h_0..h_L]."""

    @abstractmethod
    def parameters(self) -> Parameters:
        """A copy of the current parameters."""

    @abstractmethod
    def set_parameters(self, params: Parameters) -> None:
        ...


ENGINES: dict[str, str] = {"torch": "biotp.engines.torch:TorchEngine", "brian2": "biotp.engines.brian2:Brian2Engine"}


def engine_class(name: str) -> type[Engine]:
    """The engine registered as `name`."""
    import importlib

    if name not in ENGINES:
        raise ConfigError(f"engine {name!r}: expected one of {', '.join(ENGINES)}")
    module, cls = ENGINES[name].split(":")
    return getattr(importlib.import_module(module), cls)
