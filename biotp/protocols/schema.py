"""The protocol file's schema: validated specs of stimuli, phases, interventions,
recordings, evaluation and sweeps (see the `biotp.protocols` docstring)."""

from __future__ import annotations

import json
from itertools import product
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import Field
from pydantic import model_validator

from ..config import (Bool, Document, Float, Name, NonNegativeFloat, NonNegativeInt, PositiveFloat,
                      PositiveInt, Spec, apply_assignment, load_yaml, validate)
from ..config.units import Duration, PositiveTime

ENGINES = ("torch", "brian2", "discrete")


class StimulusSpec(Spec):
    """Which examples are presented, and for how long."""

    split: Literal["train", "val", "test"] = "train"
    count: PositiveInt | None = Field(None, description="number of trials (default: the phases' sum, else 100)")
    order: Literal["shuffled", "sequential"] = "shuffled"
    batch: PositiveInt = Field(1, description="examples presented side by side in one trial (torch)")
    forward_phase: Duration | None = Field(None, description="overrides dynamics.forward_phase")
    target_phase: Duration | None = Field(None, description="overrides dynamics.target_phase")
    inter_trial: Duration | None = Field(None, description="blank input between trials; none: each trial starts from "
                                                           "rest")


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
    window: tuple[Duration, Duration] | None = None
    during: Literal["forward", "target", "all"] = "all"


class Clamp(_Intervention):
    """Hold a population's activity `h` or target `t` at `value` (a number, one per neuron,
    or `label`: the one-hot label)."""

    kind: Literal["clamp"]
    population: str
    variable: Literal["h", "t"] = "t"
    value: Union[Float, list[Float], Literal["label"]]


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

    populations: dict[str, list[str]] = Field(default_factory=dict, description="checked against the model")
    every: PositiveTime | None = None
    trials: Union[NonNegativeInt, list[NonNegativeInt]] = 10
    residual: Bool = False


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
        if self.points is not None and not self.points:
            raise ValueError("points is empty; expected at least one point {key: value}")
        if self.grid is not None and not self.grid:
            raise ValueError("grid is empty; expected at least one key with its values")
        for key, values in (self.grid or {}).items():
            if not values:
                raise ValueError(f"grid {key} is empty; expected at least one value")
        return self

    def expand(self) -> list[dict[str, Any]]:
        if self.points is not None:
            return [dict(p) for p in self.points]
        keys = list(self.grid)
        return [dict(zip(keys, values)) for values in product(*(self.grid[k] for k in keys))]


FIGURES = ("sweep", "phases", "settling", "reference", "rules")
METRIC = r"^(train|val|test|reference_test)_(error|loss)$"  # the evaluated columns a sweep figure can show


class FigureSpec(Spec):
    """The protocol's summary figure, the one it exists for (`biotp plot RUN.h5` writes it as
    <stem>-summary.png):

      sweep      the final value of `metric` against the swept value `x`, mean and ±1 s.d.
                 over seeds (a `seed` sweep key) or repeated points as error bars
      phases     test error, loss and ‖ΔW_l‖ against trial; phase boundaries labelled,
                 the windows where interventions act shaded
      settling   recorded traces with the forward→target switch marked; the residual
                 ‖dy_l/dt‖ on a log scale
      reference  the continuous model's and the discrete reference's test error, and the
                 angle between their updates per layer
      rules      every rule against BP: test error, and the angle to BP's update per layer

    Without a `figure` key the kind is inferred (see `Protocol.summary_figure`)."""

    kind: Literal[FIGURES]  # type: ignore[valid-type]
    x: str | None = Field(None, description="sweep: the swept key on the x axis (default: the one that varies)")
    xlabel: str | None = Field(None, description="sweep: the x axis' name (default: the key); units are added")
    xscale: Literal["linear", "log"] = "linear"
    metric: str = Field("test_error", pattern=METRIC, description="sweep: the evaluated column, its last row per point")


class Protocol(Spec):
    """An experiment on a circuit (see the `biotp.protocols` docstring)."""

    name: Name = "protocol"
    description: str = ""
    circuit: str = Field(description="circuit YAML, relative to the protocol file")
    overrides: list[str] = Field(default_factory=list, description="circuit key.path=value assignments")
    engine: Literal[ENGINES] = "torch"  # type: ignore[valid-type]
    codegen: Literal["numpy", "cython"] = "numpy"
    device: str = "cpu"
    seed: Annotated[int, Field(ge=0, le=2**32 - 1)] | None = None
    stimuli: StimulusSpec = StimulusSpec()
    phases: list[PhaseSpec] = Field(default_factory=list)
    interventions: list[Intervention] = Field(default_factory=list)
    record: RecordSpec = RecordSpec()
    evaluate: EvaluateSpec = EvaluateSpec()
    reference: Literal["none", "discrete"] = "none"
    epochs: PositiveInt | None = Field(None, description="engine discrete: epochs (default: the circuit's)")
    track_angles: Bool = Field(False, description="engine discrete: angle to BP per layer each epoch")
    sweep: SweepSpec | None = None
    figure: FigureSpec | None = Field(None, description="the summary figure (inferred when absent)")
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
        if self.reference == "discrete" and (self.engine == "discrete" or self.interventions):
            raise ValueError("reference: discrete needs a continuous engine (torch or brian2) and no interventions")
        if self.figure is not None:
            self._check_figure(self.figure)
        return self

    def _check_figure(self, fig: FigureSpec) -> None:
        """The figure asks only for what the protocol produces."""
        needs = {"sweep": (self.sweep is not None, "a `sweep`"),
                 "phases": (bool(self.phases), "`phases`"),
                 "settling": (self.engine != "discrete" and (self.record.residual or bool(self.record.populations)),
                              "recorded traces or `record.residual: true` on a continuous engine"),
                 "reference": (self.reference == "discrete", "`reference: discrete`"),
                 "rules": ("circuit.algorithm.name" in self.swept_keys(), "a sweep over `circuit.algorithm.name`")}
        ok, what = needs[fig.kind]
        if not ok:
            raise ValueError(f"figure.kind: {fig.kind} needs {what} in the protocol")
        if fig.kind == "sweep":
            keys = self.swept_keys()
            if fig.x is not None and fig.x not in keys:
                raise ValueError(f"figure.x: {fig.x!r} is not a sweep key; expected one of {', '.join(keys) or 'none'}")
            if fig.x is None and len(self.varying_keys()) != 1:
                raise ValueError(f"figure.x: give the swept key to plot against; the sweep varies "
                                 f"{', '.join(self.varying_keys()) or 'nothing'} (keys that move together count once)")

    def swept_keys(self) -> list[str]:
        """Every key the sweep sets, in order."""
        if self.sweep is None:
            return []
        return list(dict.fromkeys(k for point in self.sweep.expand() for k in point))

    def varying_keys(self) -> list[str]:
        """The swept keys that change between points, seeds aside, keeping one of each group of
        keys that always hold equal values (noise_robustness sets both layers' sigma alike)."""
        expanded = self.sweep.expand() if self.sweep is not None else []
        columns: dict[str, list] = {}
        for key in self.swept_keys():
            if key == "seed":
                continue
            values = [json.dumps(point.get(key), sort_keys=True) for point in expanded]
            if len(set(values)) > 1 and values not in columns.values():
                columns[key] = values
        return list(columns)

    def summary_figure(self) -> FigureSpec | None:
        """The figure this protocol exists for: its `figure`, else inferred -- a discrete
        reference, a sweep over rules, a sweep over one field, phases, recorded settling --
        or None when none fits."""
        if self.figure is not None:
            if self.figure.kind == "sweep" and self.figure.x is None:
                return self.figure.model_copy(update={"x": self.varying_keys()[0]})
            return self.figure
        if self.reference == "discrete":
            return FigureSpec(kind="reference")
        if "circuit.algorithm.name" in self.swept_keys():
            return FigureSpec(kind="rules")
        if len(self.varying_keys()) == 1:
            return FigureSpec(kind="sweep", x=self.varying_keys()[0])
        if self.phases:
            return FigureSpec(kind="phases")
        if self.engine != "discrete" and (self.record.residual or self.record.populations):
            return FigureSpec(kind="settling")
        return None

    @property
    def trials(self) -> int:
        """The number of trials: the phases' sum, else `stimuli.count` (default 100)."""
        if self.phases:
            return sum(p.trials for p in self.phases)
        return self.stimuli.count or 100

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json", exclude={"figure"} if self.figure is None else None),
                              sort_keys=False)


def parse_protocol(data: Any, source: str = "<protocol>", document: Document | None = None) -> Protocol:
    return validate(Protocol, data, source, "protocol", document=document, tags=KINDS)


def load_protocol(path: str | Path, overrides=()) -> Protocol:
    """Read a protocol YAML file and apply `key.path=value` overrides (protocol keys, or
    `circuit.<path>` for the circuit)."""
    document = load_yaml(Path(path), "protocol")
    data = document.data
    if isinstance(data, dict):
        data.pop("source", None)
        _assign(data, overrides, str(path), document)
    return parse_protocol(data, str(path), document)


def _assign(data: dict, assignments, source: str, document: Document | None = None) -> None:
    for item in assignments:
        key, _, value = item.partition("=")
        if key.strip().startswith("circuit."):
            data.setdefault("overrides", []).append(f"{key.strip().removeprefix('circuit.')}={value}")
        else:
            loc = apply_assignment(data, item, source)
            if document is not None:
                document.forget(loc)
