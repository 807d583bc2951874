"""Protocols: neuroscience-style experiments on a circuit, run by `biotp run PROTOCOL`.

A protocol names a circuit (with overrides) and sets out what the experimenter does:

  stimuli        which examples (split, count, order), how many side by side per trial
                 (`batch`), the presentation (forward and target phase) and inter-trial times
  phases         named blocks of consecutive trials (baseline, lesion, recovery, ...)
  interventions  clamp, silence, lesion, block_plasticity, noise, beta -- each active in a
                 window: named phases, a protocol-time window, and the part of each trial
                 (`during`: forward, target or all)
  record         populations and variables to trace, sampling interval, which trials
  evaluate       error on held-out data every N trials
  reference      `discrete`: run the discrete rule the settled dynamics compute beside the
                 continuous one, from the same weights, on the same examples
  sweep          a grid or list of parameter values; each point is one group of the file
  engine         torch or brian2 (the continuous model), or discrete (the fast path)

Trial k occupies protocol time [k T, (k+1) T), T = forward + target phase + inter-trial.
The run file (HDF5, written atomically after every point, resumed point by point):

  /                     attrs: kind "protocol", protocol_yaml, circuit_yaml, engine, seed, ...
  /points/pNNN          attrs: params (JSON of the sweep values), label
      metrics/<name>    one row per evaluation: trial, time (s), phase, test_error, test_loss,
                        dW_layer<l> (‖ΔW_l‖ since the previous row), [angle_layer<l>, distance_layer<l>, reference_test_error] (continuous),
                        or the per-epoch columns of a train run (engine discrete)
      traces/<pop>/<var>  [time, example, neuron] of the recorded trials; attrs times (s,
                        within a trial), trials
      residual/<phase>  [time, example, layer] ‖dy_l/dt‖ (1/s); attrs times, layers
      weights/W<l>      forward weights at the end
      summary/<name>    scalars
"""

from __future__ import annotations

import argparse
import json
import shlex
import time as clock
from dataclasses import dataclass
from itertools import product
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import numpy as np
import torch
import yaml
from pydantic import Field, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, ValidationError
from pydantic import model_validator

from .circuit import Circuit, Spec, apply_assignment, format_errors, load_circuit, read_yaml
from .dynamics.spec import VARIABLES
from .dynamics.units import Time
from .errors import BiotpError, ConfigError, DivergenceError
from .runs import ATTRS, Leaf, open_run, run_attrs, write_run

ENGINES = ("torch", "brian2", "discrete")


# ----------------------------------------------------------------------------- schema


class StimulusSpec(Spec):
    """Which examples are presented, and for how long."""

    split: Literal["train", "val", "test"] = "train"
    count: PositiveInt | None = Field(None, description="number of trials (default: the phases' sum, else 100)")
    order: Literal["shuffled", "sequential"] = "shuffled"
    batch: PositiveInt = Field(1, description="examples presented side by side in one trial (torch)")
    forward_phase: Time | None = Field(None, description="overrides dynamics.forward_phase")
    target_phase: Time | None = Field(None, description="overrides dynamics.target_phase")
    inter_trial: Time | None = Field(None, description="blank input between trials; none: each trial starts from rest")


class PhaseSpec(Spec):
    """A named block of consecutive trials."""

    name: str
    trials: PositiveInt


class _Intervention(Spec):
    """When an intervention acts: in the named `phases` (default all) and inside the
    protocol-time `window` [start, stop) (default always), during the `forward` phase,
    the `target` phase or `all` of each trial it covers.  A trial is covered when its
    onset lies in the window."""

    phases: list[str] | None = None
    window: tuple[Time, Time] | None = None
    during: Literal["forward", "target", "all"] = "all"


class Clamp(_Intervention):
    """Hold a population's activity `h` or target `t` at `value` (a number, one per neuron,
    or `label`: the one-hot label)."""

    kind: Literal["clamp"]
    population: str
    variable: Literal["h", "t"] = "t"
    value: Union[float, list[float], Literal["label"]]


class Silence(_Intervention):
    """Hold a population's activity and target at zero (optogenetic silencing)."""

    kind: Literal["silence"]
    population: str


class Lesion(_Intervention):
    """Cut a projection: `forward.layer<l>` (W_l, into layer l) or `feedback.layer<l>` (g_l's
    weights V_l, from layer l down to l-1).  A random `fraction` of its synapses (seeded)
    carries zero while the lesion lasts; afterwards they carry their old weights again."""

    kind: Literal["lesion"]
    projection: str
    fraction: Annotated[float, Field(gt=0, le=1)] = 1.0


class BlockPlasticity(_Intervention):
    """No weight of the named projections changes (`all`: every projection)."""

    kind: Literal["block_plasticity"]
    projections: Union[Literal["all"], list[str]] = "all"


class Noise(_Intervention):
    """White noise into a population's activity `h` or target `t`, scaled so that a linear
    population fluctuates around its fixed point with standard deviation `sigma`."""

    kind: Literal["noise"]
    population: str
    variable: Literal["h", "t"] = "t"
    sigma: NonNegativeFloat


class Beta(_Intervention):
    """Set the output target's step size β (dynamics.target.beta)."""

    kind: Literal["beta"]
    value: PositiveFloat


Intervention = Annotated[Union[Clamp, Silence, Lesion, BlockPlasticity, Noise, Beta], Field(discriminator="kind")]
KINDS = ("clamp", "silence", "lesion", "block_plasticity", "noise", "beta")


class RecordSpec(Spec):
    """Traces to keep: {population: [variables]}, sampled every `every`, for the first
    `trials` trials (a number) or the listed trial indices.  `residual` records
    ‖dy_l/dt‖ of every layer (torch engine)."""

    populations: dict[str, list[Literal[VARIABLES]]] = Field(default_factory=dict)  # type: ignore[valid-type]
    every: Time | None = None
    trials: Union[NonNegativeInt, list[NonNegativeInt]] = 10
    residual: bool = False


class EvaluateSpec(Spec):
    """Error on `count` examples of `split` (all if unset) before the first trial, every
    `every` trials (default: only at the end) and after the last."""

    every: PositiveInt | None = None
    split: Literal["train", "val", "test"] = "test"
    count: PositiveInt | None = None


class SweepSpec(Spec):
    """Parameters to vary: a `grid` {key: [values]} (every combination) or a list of
    `points` [{key: value}].  Keys `circuit.<path>` set circuit fields (`circuit.algorithm.name`
    switches the rule, keeping shared hyperparameters); other keys set protocol fields."""

    grid: dict[str, list[Any]] | None = None
    points: list[dict[str, Any]] | None = None

    @model_validator(mode="after")
    def _one(self):
        if (self.grid is None) == (self.points is None):
            raise ValueError("give exactly one of `grid` or `points`")
        return self

    def expand(self) -> list[dict[str, Any]]:
        if self.points is not None:
            return [dict(p) for p in self.points]
        keys = list(self.grid)
        return [dict(zip(keys, values)) for values in product(*(self.grid[k] for k in keys))]


class Protocol(Spec):
    """An experiment on a circuit (see the module docstring)."""

    name: str = "protocol"
    description: str = ""
    circuit: str = Field(description="circuit YAML, relative to the protocol file")
    overrides: list[str] = Field(default_factory=list, description="circuit key.path=value assignments")
    engine: Literal[ENGINES] = "torch"  # type: ignore[valid-type]
    codegen: Literal["numpy", "cython"] = "numpy"
    device: str = "cpu"
    seed: NonNegativeInt | None = None
    stimuli: StimulusSpec = StimulusSpec()
    phases: list[PhaseSpec] = Field(default_factory=list)
    interventions: list[Intervention] = Field(default_factory=list)
    record: RecordSpec = RecordSpec()
    evaluate: EvaluateSpec = EvaluateSpec()
    reference: Literal["none", "discrete"] = "none"
    epochs: PositiveInt | None = Field(None, description="engine discrete: epochs (default: the circuit's)")
    track_angles: bool = Field(False, description="engine discrete: angle to BP per layer each epoch")
    sweep: SweepSpec | None = None
    source: str | None = Field(None, exclude=True)

    @model_validator(mode="after")
    def _consistent(self):
        names = [p.name for p in self.phases]
        if len(set(names)) != len(names):
            raise ValueError(f"phases: names must be unique, got {names}")
        if self.phases and self.stimuli.count not in (None, self.trials):
            raise ValueError(f"stimuli.count = {self.stimuli.count} but the phases add up to {self.trials} trials")
        for i, iv in enumerate(self.interventions):
            for name in iv.phases or []:
                if name not in names:
                    raise ValueError(f"interventions.{i}.phases: unknown phase {name!r}; the protocol's phases are {names}")
            if iv.window is not None and iv.window[1] <= iv.window[0]:
                raise ValueError(f"interventions.{i}.window: stop {iv.window[1]} s must follow start {iv.window[0]} s")
        if self.engine == "discrete":
            used = [k for k in ("interventions", "phases", "reference") if getattr(self, k) not in ([], "none")]
            if used or self.record.populations:
                raise ValueError(f"engine discrete trains with the fast path: {', '.join(used or ['record'])} "
                                 "need the torch or brian2 engine")
        if self.reference == "discrete" and (self.engine != "torch" or self.interventions):
            raise ValueError("reference: discrete needs engine torch and no interventions")
        if self.engine == "brian2":
            within = [f"interventions.{i} ({iv.kind})" for i, iv in enumerate(self.interventions)
                      if iv.kind in ("clamp", "silence", "noise")]
            if within or self.stimuli.inter_trial is not None or self.record.residual:
                raise ValueError("the brian2 engine runs lesions, plasticity blocks and β changes; "
                                 f"{', '.join(within) or 'inter_trial / record.residual'} need engine torch")
        return self

    @property
    def trials(self) -> int:
        """The number of trials: the phases' sum, else `stimuli.count` (default 100)."""
        if self.phases:
            return sum(p.trials for p in self.phases)
        return self.stimuli.count or 100

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def parse_protocol(data: Any, source: str = "<protocol>") -> Protocol:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of protocol keys at the top level, got {type(data).__name__}")
    try:
        return Protocol.model_validate({**data, "source": source})
    except ValidationError as err:
        raise ConfigError(format_errors(err, source, Protocol, KINDS)) from None


def load_protocol(path: str | Path, overrides=()) -> Protocol:
    """Read a protocol YAML file and apply `key.path=value` overrides (protocol keys, or
    `circuit.<path>` for the circuit)."""
    data = read_yaml(Path(path), "protocol")
    if isinstance(data, dict):
        data.pop("source", None)
        _assign(data, overrides, str(path))
    return parse_protocol(data, str(path))


def _assign(data: dict, assignments, source: str) -> None:
    for item in assignments:
        key, _, value = item.partition("=")
        if key.strip().startswith("circuit."):
            data.setdefault("overrides", []).append(f"{key.strip().removeprefix('circuit.')}={value}")
        else:
            apply_assignment(data, item, source)


# ---------------------------------------------------------------------------- runner


@dataclass
class Point:
    """One sweep point: its parameters, resolved protocol and circuit."""

    index: int
    params: dict
    protocol: Protocol
    circuit: Circuit

    @property
    def key(self) -> str:
        return f"p{self.index:03d}"

    @property
    def label(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.params.items()) or self.protocol.name


def points(protocol: Protocol) -> list[Point]:
    """The sweep's points, each with its protocol and circuit resolved."""
    source = protocol.source or "<protocol>"
    base = protocol.model_dump(mode="json", exclude_unset=True)
    out = []
    for i, params in enumerate(protocol.sweep.expand() if protocol.sweep else [{}]):
        data = json.loads(json.dumps(base))
        data.pop("sweep", None)
        algorithm = None
        for key, value in params.items():
            if key == "circuit.algorithm.name":
                algorithm = value
                continue
            _assign(data, [f"{key}={json.dumps(value)}"], f"{source}: sweep {key}")
        p = parse_protocol(data, source)
        out.append(Point(i, params, p, _circuit_of(p, algorithm)))
    return out


def _circuit_of(p: Protocol, algorithm: str | None) -> Circuit:
    path = Path(p.circuit)
    if not path.is_absolute() and p.source and not path.exists():
        path = Path(p.source).parent / path
    overrides = list(p.overrides)
    if p.seed is not None:
        overrides.append(f"seed={p.seed}")
    if p.engine != "discrete":  # the protocol's timing, applied with the overrides: validated together
        for key in ("forward_phase", "target_phase"):
            if getattr(p.stimuli, key) is not None:
                overrides.append(f"dynamics.{key}={getattr(p.stimuli, key)!r} s")
        if p.record.every is not None:
            overrides.append(f"dynamics.record_dt={p.record.every!r} s")
    circuit = load_circuit(path, overrides)
    if algorithm is not None:
        circuit = circuit.with_algorithm(algorithm)
    if p.engine == "discrete":
        return circuit
    if circuit.dynamics is None:
        circuit = circuit.with_updates("dynamics={}")
    return circuit.with_updates(f"dynamics.record={json.dumps(_recorded_variables(p, circuit))}")


def _recorded_variables(p: Protocol, circuit: Circuit) -> dict:
    record = {pop: list(vs) for pop, vs in p.record.populations.items()}
    if p.record.residual:
        for l in range(1, len(circuit.network.expanded()) + 1):
            record.setdefault(f"layer{l}", [])
            if "r" not in record[f"layer{l}"]:
                record[f"layer{l}"].append("r")
    return record


def run_protocol(protocol: Protocol | str | Path, *, out: str | Path | None = None, overrides=(), data_dir=None,
                 progress: bool = True, command: str | None = None) -> "ProtocolRun":
    """Run every point of `protocol` and write them to the run file `out` (atomically after
    each point).  An existing `out` written by the same protocol is resumed: its finished
    points are kept, the rest are run."""
    if not isinstance(protocol, Protocol):
        protocol = load_protocol(protocol, overrides)
    elif overrides:
        data = protocol.model_dump(mode="json", exclude_unset=True)
        _assign(data, overrides, protocol.source or "<protocol>")
        protocol = parse_protocol(data, protocol.source or "<protocol>")
    pts = points(protocol)
    attrs = run_attrs(pts[0].circuit, command, kind="protocol", protocol_yaml=protocol.to_yaml(),
                      protocol=protocol.name, engine=protocol.engine)
    tree: dict = {"points": {}}
    if out is not None and Path(out).exists():
        previous = open_run(out)
        if previous.attrs.get("protocol_yaml") != attrs["protocol_yaml"]:
            raise BiotpError(f"{out}: exists and holds another protocol (or other settings); "
                             "choose another --out or remove the file")
        tree["points"] = previous.groups.get("points", {})
    for pt in pts:
        if pt.key in tree["points"]:
            continue
        if progress:
            print(f"[{protocol.name}] point {pt.index + 1}/{len(pts)}: {pt.label}", flush=True)
        tree["points"][pt.key] = {ATTRS: {"params": json.dumps(pt.params), "label": pt.label},
                                  **_run_point(pt, data_dir, progress)}
        if out is not None:
            write_run(out, attrs, tree)
    return ProtocolRun(protocol, pts, tree["points"], Path(out) if out is not None else None)


@dataclass
class ProtocolRun:
    protocol: Protocol
    points: list[Point]
    groups: dict  # point key -> nested mapping (see the module docstring)
    path: Path | None

    def metrics(self, point: int = 0) -> dict:
        return self.groups[self.points[point].key].get("metrics", {})

    def summary_text(self) -> str:
        lines = [f"protocol {self.protocol.name} ({self.protocol.engine}): {len(self.points)} point(s)"]
        for pt in self.points:
            m = self.groups[pt.key].get("metrics", {})
            err = m.get("test_error", [np.nan])
            ref = m.get("reference_test_error")
            extra = f"  discrete reference {100 * ref[-1]:.2f}%" if ref is not None else ""
            angles = [k for k in m if k.startswith("angle_")]
            extra += "".join(f"  {k} {np.nanmean(m[k]):.1f}°" for k in angles)
            lines.append(f"  {pt.label}: error {100 * err[0]:.2f}% -> {100 * err[-1]:.2f}%{extra}")
        if self.path:
            lines.append(f"run file: {self.path}")
        return "\n".join(lines)


def _run_point(pt: Point, data_dir, progress: bool) -> dict:
    if pt.protocol.engine == "discrete":
        from .training import train

        metrics = train(pt.circuit, epochs=pt.protocol.epochs, data_dir=data_dir, device=pt.protocol.device,
                        track_angles=pt.protocol.track_angles, progress=progress)
        return {"metrics": metrics}
    return ContinuousRun(pt, data_dir).run(progress)


class ContinuousRun:
    """One point on the torch or brian2 engine: trials, interventions, recordings."""

    def __init__(self, pt: Point, data_dir):
        from . import data as D
        from .algorithms.base import Loss
        from .dynamics import model as M
        from .network import Network
        from .simulation import _device

        self.pt, p, c = pt, pt.protocol, pt.circuit
        self.spec = c.dynamics
        self.device = _device(p.device) if p.engine == "torch" else torch.device("cpu")
        self.dtype = torch.float64 if p.engine == "brian2" else getattr(torch, self.spec.dtype)
        d = c.data
        splits = D.load(d.dataset, data_dir=data_dir, val_split=d.val_split, seed=c.seed, limit=d.limit,
                        synthetic=d.synthetic.model_dump())
        stim = getattr(splits, p.stimuli.split)
        n = p.trials * p.stimuli.batch
        g = torch.Generator().manual_seed(c.seed)
        order = torch.randperm(len(stim.y), generator=g) if p.stimuli.order == "shuffled" else torch.arange(len(stim.y))
        order = order.repeat(-(-n // len(order)))[:n]  # cycle through the split when count exceeds it
        self.x, self.y = self._to(stim.x[order]), stim.y[order].to(self.device)
        ev = getattr(splits, p.evaluate.split)
        self.ex, self.ey = self._to(ev.x[: p.evaluate.count]), ev.y[: p.evaluate.count].to(self.device)
        net = Network(c, self.x.shape[1], with_feedback=True, seed=c.seed)
        self.M, self.model = M, M.build_model(self.spec, net)
        self.loss = Loss(c.loss, c.network.expanded()[-1].size)
        self.generator = torch.Generator().manual_seed(c.seed)
        weights = M.Weights.of(net, self.dtype, self.device)
        if p.engine == "brian2":
            from .engines.brian2 import Brian2Engine

            self.engine = Brian2Engine(self.model, weights, self.loss, generator=self.generator, codegen=p.codegen)
        else:
            from .engines.torch import TorchEngine

            self.engine = TorchEngine(self.model, weights, self.loss, generator=self.generator)
        self.trial_time = self.spec.forward_phase + self.spec.target_phase + (p.stimuli.inter_trial or 0.0)
        self.phase_of = [ph.name for ph in p.phases for _ in range(ph.trials)] or ["all"] * p.trials
        self._check_names()
        self.masks = {}  # lesion index -> (kind, l, mask of cut synapses)
        mask_gen = torch.Generator().manual_seed(c.seed + 7919)
        for i, iv in enumerate(p.interventions):
            if iv.kind == "lesion":
                kind, l = self._projection(iv.projection, f"interventions.{i}.projection")
                shape = getattr(self.engine.w, kind)[l].shape
                self.masks[i] = (kind, l, torch.rand(shape, generator=mask_gen).to(self.device) < iv.fraction)
        self.saved = {}  # lesion index -> the cut synapses' weights, restored when it ends

    def _to(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1).to(self.device, self.dtype)

    # ------------------------------------------------------------ names, errors
    def _where(self, key: str) -> str:
        return f"{self.pt.protocol.source or '<protocol>'}: {key}"

    def _population(self, name: str, key: str, allow_input: bool = False) -> int:
        L = self.model.L
        valid = (["input"] if allow_input else []) + [f"layer{l}" for l in range(1, L + 1)]
        if name not in valid:
            raise ConfigError(f"{self._where(key)}: unknown population {name!r}; expected one of {', '.join(valid)}")
        return 0 if name == "input" else int(name.removeprefix("layer"))

    def _projection(self, name: str, key: str) -> tuple[str, int]:
        L = self.model.L
        valid = [f"forward.layer{l}" for l in range(1, L + 1)] + [f"feedback.layer{l}" for l in range(2, L + 1)
                                                                    if self.engine.w.V[l] is not None]
        if name not in valid:
            raise ConfigError(f"{self._where(key)}: unknown projection {name!r}; expected one of {', '.join(valid)}")
        kind, layer = name.split(".")
        return ("W" if kind == "forward" else "V"), int(layer.removeprefix("layer"))

    def _check_names(self):
        p = self.pt.protocol
        for i, iv in enumerate(p.interventions):
            if iv.kind in ("clamp", "silence", "noise"):
                l = self._population(iv.population, f"interventions.{i}.population", iv.kind == "clamp")
                if getattr(iv, "variable", "h") == "t" and iv.kind == "noise" and l not in self.model.relaxing:
                    raise ConfigError(f"{self._where(f'interventions.{i}.population')}: noise on the target of "
                                      f"{iv.population}: only relaxing targets move (layers "
                                      f"{', '.join(f'layer{k}' for k in sorted(self.model.relaxing))})")
            if iv.kind == "block_plasticity" and iv.projections != "all":
                for j, name in enumerate(iv.projections):
                    self._projection(name, f"interventions.{i}.projections.{j}")
        for pop in p.record.populations:
            self._population(pop, f"record.populations.{pop}", True)

    # ------------------------------------------------------------ interventions
    def active(self, k: int) -> list[tuple[int, Any]]:
        onset = k * self.trial_time
        out = []
        for i, iv in enumerate(self.pt.protocol.interventions):
            if iv.phases is not None and self.phase_of[k] not in iv.phases:
                continue
            if iv.window is not None and not (iv.window[0] <= onset + 1e-12 < iv.window[1]):
                continue
            out.append((i, iv))
        return out

    def perturbation(self, active, y: torch.Tensor, h0):
        from .engines.torch import Perturbation

        clamp, noise = {}, {}
        for _, iv in active:
            phases = ("forward", "target") if iv.during == "all" else (iv.during,)
            l = self._population(iv.population, "population", True) if hasattr(iv, "population") else None
            if iv.kind == "silence":
                for ph in phases:
                    clamp[(ph, "h", l)] = torch.zeros((), dtype=self.dtype, device=self.device)
                clamp[("target", "t", l)] = torch.zeros((), dtype=self.dtype, device=self.device)
            elif iv.kind == "clamp":
                if iv.value == "label":
                    value = self.loss.optimum(y, self.dtype).to(self.device)
                else:
                    value = torch.as_tensor(iv.value, dtype=self.dtype, device=self.device)
                for ph in phases if iv.variable == "h" else ("target",):
                    clamp[(ph, iv.variable, l)] = value
            elif iv.kind == "noise":
                for ph in phases if iv.variable == "h" else ("target",):
                    noise[(ph, iv.variable, l)] = iv.sigma
        cut = {(kind, l): mask for i, (kind, l, mask) in self.masks.items() if i in self.saved}
        return Perturbation(clamp, noise, h0, cut)

    def _lesions(self, active) -> None:
        """Cut the active lesions' synapses; give back those of lesions that ended."""
        now = {i for i, iv in active if iv.kind == "lesion"}
        for i, (kind, l, mask) in self.masks.items():
            W = getattr(self.engine.w, kind)[l]
            if i in now:
                if i not in self.saved:
                    self.saved[i] = W[mask].clone()
                self.engine.set_weight(kind, l, W.masked_fill(mask, 0.0))
            elif i in self.saved:
                W = W.clone()
                W[mask] = self.saved.pop(i)
                self.engine.set_weight(kind, l, W)

    def _blocked(self, active) -> list[tuple[str, int]]:
        out = []
        for _, iv in active:
            if iv.kind == "block_plasticity":
                names = iv.projections if iv.projections != "all" else \
                    [f"forward.layer{l}" for l in range(1, self.model.L + 1)] + \
                    [f"feedback.layer{l}" for l in range(2, self.model.L + 1) if self.engine.w.V[l] is not None]
                out += [self._projection(n, "projections") for n in names]
        return out

    def _beta(self, active) -> None:
        beta = next((iv.value for _, iv in reversed(active) if iv.kind == "beta"), self.spec.target.beta)
        if self.model.spec.target.beta != beta:
            target = self.spec.target.model_copy(update={"beta": beta})
            self.model.spec = self.engine.spec = self.model.spec.model_copy(update={"target": target})

    # ------------------------------------------------------------------- run
    def evaluate(self, w) -> tuple[float, float]:
        from .simulation import settled_error

        return settled_error(self.model, w, self.loss, self.ex, self.ey)

    def run(self, progress: bool) -> dict:
        p, M, model, L = self.pt.protocol, self.M, self.model, self.model.L
        B, n_trials = p.stimuli.batch, p.trials
        recorded = set(range(min(p.record.trials, n_trials))) if isinstance(p.record.trials, int) else set(p.record.trials)
        every = p.evaluate.every or n_trials
        ref = None
        if p.reference == "discrete":
            ref = M.Weights([None if W is None else W.clone() for W in self.engine.w.W], self.engine.w.b,
                            [None if V is None else V.clone() for V in self.engine.w.V], self.engine.w.c)
        metrics: dict[str, list] = {}
        pending: dict[str, list] = {}

        last = [None] + [W.clone() for W in self.engine.w.W[1:]]

        def log(k):
            err, lossv = self.evaluate(self.engine.w)
            row = {"trial": k, "time": k * self.trial_time, "phase": self._phase_index(k - 1 if k else 0),
                   "test_error": err, "test_loss": lossv}
            for l in range(1, L + 1):  # how much each layer learnt since the last evaluation
                row[f"dW_layer{l}"] = float((self.engine.w.W[l] - last[l]).norm())
                last[l] = self.engine.w.W[l].clone()
            if ref is not None:
                row["reference_test_error"] = self.evaluate(ref)[0]
                for l in range(1, L + 1):  # nan where no update was compared (the first row)
                    for name in (f"angle_layer{l}", f"distance_layer{l}"):
                        vals = pending.pop(name, [])
                        row[name] = float(np.mean(vals)) if vals else np.nan
            for name, v in row.items():
                metrics.setdefault(name, []).append(v)

        traces: dict = {}
        h_last = None
        start = clock.perf_counter()
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=n_trials, unit="trial", desc=self.pt.label, leave=False)
        log(0)
        for k in range(n_trials):
            xb, yb = self.x[k * B : (k + 1) * B], self.y[k * B : (k + 1) * B]
            act = self.active(k)
            self._lesions(act)
            self._beta(act)
            blocked = self._blocked(act)
            before = {(kind, l): getattr(self.engine.w, kind)[l].clone() for kind, l in blocked}
            if ref is not None:
                W0 = [None] + [W.clone() for W in self.engine.w.W[1:]]
                dW_ref_here = self._reference_update(self._copy(self.engine.w), xb, yb)
            record = {pop: vs for pop, vs in self.spec.record.items()} if k in recorded else {}
            perturb = self.perturbation(act, yb, h_last)
            pres = self.engine.present(xb, yb, record, perturb)
            for (kind, l), W in before.items():
                self.engine.set_weight(kind, l, W)
            for i, (kind, l, mask) in self.masks.items():  # cut synapses stay cut: no plasticity on them
                if i in self.saved:
                    self.engine.set_weight(kind, l, getattr(self.engine.w, kind)[l].masked_fill(mask, 0.0))
            self._check_finite(k)
            if ref is not None:
                for l, dref in dW_ref_here.items():
                    dcont = self.engine.w.W[l] - W0[l]
                    pending.setdefault(f"angle_layer{l}", []).append(_angle(dcont, dref))
                    pending.setdefault(f"distance_layer{l}", []).append(
                        float((dcont - dref).norm() / dref.norm().clamp_min(1e-30)))
                self._reference_step(ref, xb, yb)
            for key, arr in pres.traces.items() if k in recorded else ():
                traces.setdefault(key, []).append(arr.detach().cpu().numpy())
            if p.stimuli.inter_trial is not None:
                h_last = self._inter_trial(pres.h)
            if (k + 1) % every == 0 or k + 1 == n_trials:
                log(k + 1)
            if bar is not None:
                bar.update()
        if bar is not None:
            bar.close()
        wall = clock.perf_counter() - start
        return self._tree(metrics, traces, recorded, wall)

    def _phase_index(self, k: int) -> int:
        names = [ph.name for ph in self.pt.protocol.phases]
        return names.index(self.phase_of[k]) if names else 0

    @staticmethod
    def _copy(w):
        from .dynamics.model import Weights

        return Weights(*[[None if v is None else v.clone() for v in part] for part in (w.W, w.b, w.V, w.c)])

    def _reference_update(self, w, x, y) -> dict:
        """The discrete rule's ΔW from weights `w` (a copy): feedback plasticity on the
        settled activities with the engine's next random draws, then DTP targets and DTP1."""
        M = self.M
        g = torch.Generator().set_state(self.generator.get_state())
        M.update_feedback(self.model, M.settled_forward(self.model, w, x), w, g)
        return M.discrete_update(self.model, w, x, y, self.loss)

    def _reference_step(self, ref, x, y) -> None:
        """Advance the discrete reference trajectory by one trial."""
        for l, dW in self._reference_update(ref, x, y).items():
            ref.W[l] = ref.W[l] + dW

    def _inter_trial(self, h: list) -> list:
        """The blank interval: input off, activities relax from where the trial left them."""
        from .engines.torch import Perturbation

        n = self.spec.steps(self.pt.protocol.stimuli.inter_trial)
        eng = self.engine
        eng.perturb = Perturbation(h0=[None] + [v.clone() for v in h[1:]])
        try:
            settled, _ = eng.forward_phase(torch.zeros_like(h[0]), steps=n)
        finally:
            eng.perturb = type(eng.perturb)()
        return [None] + settled[1:]

    def _check_finite(self, k: int) -> None:
        for kind, name in (("W", "forward"), ("V", "feedback")):
            for l, W in enumerate(getattr(self.engine.w, kind)):
                if W is not None and not torch.isfinite(W).all():
                    raise DivergenceError(f"{self.pt.label}: diverged at trial {k} (time {k * self.trial_time:.4g} s): "
                                          f"{name}.layer{l} weights are not finite (NaN/inf); lower the plasticity rate")

    def _tree(self, metrics, traces, recorded, wall) -> dict:
        spec, L = self.spec, self.model.L
        n_f, n_t = spec.steps(spec.forward_phase), spec.steps(spec.target_phase)
        times = np.arange(0, n_f + n_t + 1, spec.record_every) * spec.dt
        trials = np.array(sorted(recorded & set(range(self.pt.protocol.trials))))
        tree: dict = {"metrics": {k: np.asarray(v, dtype=float) for k, v in metrics.items()}}
        tr: dict = {}
        residual = {}
        for (pop, var), parts in traces.items():
            arr = np.concatenate(parts, axis=1)
            if var == "r":
                residual[int(pop.removeprefix("layer"))] = arr[..., 0]
                if pop not in self.pt.protocol.record.populations or var not in self.pt.protocol.record.populations[pop]:
                    continue
            tr.setdefault(pop, {})[var] = Leaf(arr, {"times": times, "trials": trials, "time_unit": "s", "unit": "1",
                                                     "dims": "time, example, neuron"})
        if tr:
            tree["traces"] = tr
        if residual:
            stack = np.stack([residual[l] for l in sorted(residual)], axis=-1)  # [time, example, layer]
            split = n_f // spec.record_every
            layers = np.array(sorted(residual))
            tree["residual"] = {
                "forward": Leaf(stack[:split], {"times": times[:split], "layers": layers, "unit": "1/s"}),
                "target": Leaf(stack[split:], {"times": times[split:] - times[split], "layers": layers, "unit": "1/s"}),
            }
        tree["weights"] = {f"W{l}": self.engine.w.W[l].detach().cpu().numpy() for l in range(1, L + 1)}
        m = tree["metrics"]
        tree["summary"] = {"wall_time": np.asarray(wall), "trials": np.asarray(self.pt.protocol.trials),
                           "final_test_error": np.asarray(m["test_error"][-1])}
        return tree


def _angle(a: torch.Tensor, b: torch.Tensor) -> float:
    """Angle (degrees) between two weight changes, flattened."""
    a, b = a.flatten().double(), b.flatten().double()
    cos = (a @ b) / (a.norm() * b.norm()).clamp_min(1e-300)
    return float(torch.rad2deg(torch.arccos(cos.clamp(-1, 1))))


# -------------------------------------------------------------------------------- CLI


def add_run_parser(subparsers) -> argparse.ArgumentParser:
    """Register `biotp run` on an argparse subparsers object."""
    p = subparsers.add_parser(
        "run", help="run a protocol: stimuli, interventions, recordings, sweeps",
        description="Run the experiment a PROTOCOL file describes (see protocols/) and write every sweep point to "
                    "one HDF5 file.  An existing output written by the same protocol is resumed point by point.",
        epilog="examples:\n  biotp run protocols/settle.yaml\n"
               "  biotp run protocols/feedback_lesion.yaml --set stimuli.count=200 --out runs/lesion.h5\n"
               "  biotp run protocols/settle_time_sweep.yaml --set circuit.dynamics.tau_t='1 ms'",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("protocol", help="protocol YAML file")
    p.add_argument("--out", metavar="RUN.h5", help="run file (default runs/<protocol name>.h5)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                   help="override a protocol field (stimuli.count=20) or, prefixed circuit., a circuit field "
                        "(circuit.dynamics.tau_t='1 ms'); repeatable")
    p.add_argument("--data-dir", help="dataset directory")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=cmd_run)
    return p


def cmd_run(args) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    protocol = load_protocol(args.protocol, args.overrides)
    out = args.out or f"runs/{protocol.name}.h5"
    argv = getattr(args, "argv", None)
    run = run_protocol(protocol, out=out, data_dir=args.data_dir, progress=not args.quiet,
                       command=shlex.join(["biotp", *argv]) if argv else None)
    print(run.summary_text())
    return 0
