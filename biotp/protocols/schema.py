"""The protocol file's schema: validated specs of stimuli, phases, interventions,
recordings, evaluation and sweeps (see the `biotp.protocols` docstring)."""

from __future__ import annotations

from itertools import product
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import Field, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, ValidationError
from pydantic import model_validator

from ..circuit import Spec, apply_assignment, format_errors, read_yaml
from ..dynamics.units import Time
from ..errors import ConfigError

ENGINES = ("torch", "brian2", "discrete")


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

    populations: dict[str, list[str]] = Field(default_factory=dict, description="checked against the model")
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
    """An experiment on a circuit (see the `biotp.protocols` docstring)."""

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
        if self.reference == "discrete" and (self.engine == "discrete" or self.interventions):
            raise ValueError("reference: discrete needs a continuous engine (torch or brian2) and no interventions")
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
