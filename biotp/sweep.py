"""`biotp sweep`: hyperparameter searches over any circuit field, one Optuna study per rule.

A sweep file names a circuit, the rules, the seeds, an epoch budget and a search space over
circuit fields by key path (e.g. `optimizer.lr`), and per rule the fields it fixes (`fixed`;
a sweep without `search` trains that one configuration per rule over its seeds, the second
stage of a search: `biotp sweep SEARCH.yaml --report --best-to SEEDS.yaml` writes it).  A
*configuration* is one point of the space; each configuration runs once per seed, and each
(configuration, seed) is one Optuna trial writing an ordinary `biotp train` run file,
`<out>/<rule>/trial-<number>.h5` (the path is the trial's user attr `run`).  The first
seed's trial leads: the other seeds run once it completes, so a pruned configuration costs
one run, not one per seed.

Only the driver process creates trials (`biotp sweep` holds `<out>/sweep.lock`); workers
train, report each epoch's objective to the study and ask whether to stop.  What work is
left is derived from the study alone, so a sweep killed anywhere resumes by running the same
command: a RUNNING trial left behind is replaced by a new trial with the same parameters and
run file (which resumes from its checkpoint), and only then marked FAIL with the user attr
`replaced_by`; a (configuration, seed) is never run by two live trials.  A pruned trial's
run file ends at the epoch before the one that stopped it (the study holds that epoch's value).
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import fcntl
import itertools
import math
import os
import shlex
import sqlite3
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import yaml
from pydantic import Field, StrictBool, StrictFloat, StrictInt
from pydantic import StrictStr, ValidationError, field_validator, model_validator

from .circuit import Circuit, algorithm_names, load_circuit
from .config import (BiotpError, ConfigError, Float, Int, Name, NonNegativeInt, PositiveInt, Spec, format_errors,
                     read_yaml)

# ---------------------------------------------------------------------------- schema


Number, Count, Natural = Float, PositiveInt, NonNegativeInt  # strict: YAML's `true` is not 1
Choice = StrictBool | StrictInt | StrictFloat | StrictStr | None  # what Optuna stores as a categorical value
DISTRIBUTIONS = ("uniform", "log_uniform", "categorical")


class Param(Spec):
    """One searched field: exactly one of `uniform: [low, high]`, `log_uniform: [low, high]`,
    `categorical: [choices]`.  `points` spreads a range over that many grid values (grid sampler
    only); `rules` restricts the field to some rules (default: every rule whose circuit has it)."""

    uniform: tuple[Number, Number] | None = None
    log_uniform: tuple[Number, Number] | None = None
    categorical: list[Choice] | None = Field(None, min_length=1)
    points: Annotated[Int, Field(ge=2)] | None = None
    rules: list[str] | None = Field(None, min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data):
        """Named here: under a dict of key paths the shared formatter cannot list the keys."""
        unknown = [k for k in data if k not in cls.model_fields] if isinstance(data, dict) else []
        if unknown:
            raise ValueError(f"unknown key {unknown[0]!r}; expected one of: {', '.join(cls.model_fields)}")
        return data

    @model_validator(mode="after")
    def _one_distribution(self):
        given = [d for d in DISTRIBUTIONS if getattr(self, d) is not None]
        if len(given) != 1:
            raise ValueError(f"expected exactly one of {', '.join(DISTRIBUTIONS)}; got {', '.join(given) or 'none'}")
        bounds = self.uniform or self.log_uniform
        if bounds is not None and not bounds[0] < bounds[1]:
            raise ValueError(f"empty or inverted range: expected low < high; got [{bounds[0]}, {bounds[1]}]")
        if self.log_uniform is not None and self.log_uniform[0] <= 0:
            raise ValueError(f"log_uniform needs low > 0; got [{self.log_uniform[0]}, {self.log_uniform[1]}]")
        if self.categorical is not None and len({repr(c) for c in self.categorical}) < len(self.categorical):
            raise ValueError(f"categorical values repeat; expected distinct values, got {self.categorical}")
        if self.points is not None and self.categorical is not None:
            raise ValueError("points spreads a range; a categorical lists its values already")
        return self

    @field_validator("rules")
    @classmethod
    def _known_rules(cls, rules):
        return _check_rules(rules)

    def grid(self) -> list:
        """The values a grid search visits."""
        if self.categorical is not None:
            return list(self.categorical)
        low, high = self.uniform or self.log_uniform
        spread = np.geomspace if self.log_uniform else np.linspace
        return [float(v) for v in spread(low, high, self.points)]

    def distribution(self, grid: bool):
        import optuna.distributions as d

        if grid or self.categorical is not None:
            return d.CategoricalDistribution(self.grid())
        low, high = self.uniform or self.log_uniform
        return d.FloatDistribution(low, high, log=self.log_uniform is not None)


def _check_rules(rules):
    known = algorithm_names()
    for rule in rules:
        if rule not in known:
            raise ValueError(f"unknown rule {rule!r}; expected one of {', '.join(sorted(known))}")
    return rules


class Pruner(Spec):
    """`median`: stop a trial whose objective at an epoch is worse than the median of earlier
    trials at that epoch, once `startup_trials` trials finished and after `warmup_epochs`.
    `successive_halving`: keep the best 1/`reduction_factor` at epochs min_epochs·rf^k."""

    name: Literal["median", "successive_halving", "none"]
    startup_trials: Natural = 5
    warmup_epochs: Natural = 0
    min_epochs: Count = 1
    reduction_factor: Annotated[Int, Field(ge=2)] = 3

    def build(self):
        import optuna.pruners as p

        if self.name == "median":
            return p.MedianPruner(n_startup_trials=self.startup_trials, n_warmup_steps=self.warmup_epochs)
        if self.name == "successive_halving":
            return p.SuccessiveHalvingPruner(min_resource=self.min_epochs, reduction_factor=self.reduction_factor)
        return p.NopPruner()


class Search(Spec):
    sampler: Literal["grid", "random", "tpe"] = "tpe"
    trials: Count | None = Field(None, description="configurations per rule (random, tpe); a grid runs all of its points")
    seed: Natural = Field(0, description="the sampler's seed")
    pruner: Pruner | None = Field(None, description="default: median for random and tpe, none for grid")
    space: dict[str, Param] = Field(min_length=1)

    @model_validator(mode="after")
    def _budget(self):
        if self.sampler != "grid" and self.trials is None:
            raise ValueError(f"a {self.sampler} search needs `trials`, the number of configurations per rule")
        if self.sampler == "grid" and self.trials is not None:
            raise ValueError(f"a grid runs all of its points; got trials: {self.trials}, expected no `trials`")
        for path, param in self.space.items():
            if self.sampler == "grid" and param.categorical is None and param.points is None:
                raise ValueError(f"space.{path}: a grid needs categorical values or `points` along the range")
            if self.sampler != "grid" and param.points is not None:
                raise ValueError(f"space.{path}: points applies to the grid sampler; this search is {self.sampler}")
        return self

    def pruning(self) -> Pruner:
        return self.pruner or Pruner(name="none" if self.sampler == "grid" else "median")


class Objective(Spec):
    """The per-epoch metric minimised (or maximised), at its best epoch or the final one."""

    metric: Literal["val_error", "val_mse", "train_loss", "train_error"] = "val_error"
    at: Literal["best", "final"] = "best"
    direction: Literal["minimize", "maximize"] = "minimize"

    def value(self, metrics: dict) -> float:
        values = np.asarray(metrics[self.metric], dtype=float)
        if self.at == "final":
            return float(values[-1])
        return float(np.nanmin(values) if self.direction == "minimize" else np.nanmax(values))


class SweepSpec(Spec):
    name: Name | None = Field(None, description="study names and output directory; default: the file's stem")
    circuit: str = Field(description="circuit YAML, relative to the sweep file")
    rules: list[str] = Field(min_length=1)
    seeds: list[Natural] = Field([0], min_length=1)
    epochs: Count
    limit: Count | None = Field(None, description="data.limit: train/test examples used")
    objective: Objective = Objective()
    fixed: dict[str, Any] = Field({}, description="per rule, circuit fields by key path set in "
                                                 "every trial of the rule (e.g. a search's best configuration)")
    search: Search | None = Field(None, description="default: none, one configuration per rule (the circuit "
                                                    "with its `fixed` fields)")
    out: str | None = Field(None, description="output directory, relative to the working directory; "
                                               "default runs/sweeps/<name>")

    @field_validator("rules")
    @classmethod
    def _known_rules(cls, rules):
        return _check_rules(rules)

    @model_validator(mode="after")
    def _fixed_rules(self):
        # checked here, not by the field's type: pydantic's messages would drop the rule from the
        # key path (rule names are union tags there)
        for rule, fields in self.fixed.items():
            if rule not in self.rules:
                raise ValueError(f"fixed.{rule}: not among the sweep's rules {self.rules}")
            if not isinstance(fields, dict):
                raise ValueError(f"fixed.{rule}: expected a mapping of key paths to values; got {fields!r}")
            for key, value in fields.items():
                if not isinstance(value, (bool, int, float, str, type(None))):
                    raise ValueError(f"fixed.{rule}.{key}: expected one number, string or boolean; got {value!r}")
        return self

    @field_validator("seeds")
    @classmethod
    def _distinct(cls, seeds):
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds repeat; expected distinct seeds, got {seeds}")
        return seeds


# ------------------------------------------------------------------------ the plan


@dataclass
class Sweep:
    """A validated sweep: the spec, and per rule its base circuit and the fields searched."""

    spec: SweepSpec
    source: str
    name: str
    out: Path
    circuits: dict[str, Circuit]  # rule -> circuit with the rule, budget and limit applied
    spaces: dict[str, dict[str, Param]]  # rule -> key path -> param

    @property
    def search(self) -> Search:
        """The search; without one, a grid of the single configuration `fixed` makes."""
        return self.spec.search or Search.model_construct(sampler="grid", trials=None, seed=0,
                                                          pruner=Pruner(name="none"), space={})

    def study_name(self, rule: str) -> str:
        return f"{self.name}-{rule}"

    def distributions(self, rule: str) -> dict:
        grid = self.search.sampler == "grid"
        return {path: param.distribution(grid) for path, param in self.spaces[rule].items()}

    def grid(self, rule: str) -> list[dict]:
        """Every configuration of a grid search, in file order."""
        paths = list(self.spaces[rule])
        return [dict(zip(paths, values)) for values in itertools.product(*(self.spaces[rule][p].grid() for p in paths))]

    def configurations(self, rule: str) -> int:
        return len(self.grid(rule)) if self.search.sampler == "grid" else self.search.trials

    def trial_circuit(self, rule: str, params: dict, seed: int) -> Circuit:
        return configure(self.circuits[rule], {**params, "seed": seed})

    def train_command(self, rule: str, params: dict, seed: int, run: Path) -> str:
        """The `biotp train` command reproducing a trial (recorded in its run file): the fields
        the sweep fixes for the rule, then those searched."""
        fields = {**self.spec.fixed.get(rule, {}), **params}
        sets = [f"--set={path}={_yaml_value(value)}" for path, value in fields.items()]
        if self.spec.limit is not None:
            sets.append(f"--set=data.limit={self.spec.limit}")
        return shlex.join(["biotp", "train", str(self.circuits[rule].source), "--algorithm", rule, *sets,
                           "--seed", str(seed), "--epochs", str(self.spec.epochs), "--out", str(run)])


def _yaml_value(value: Any) -> str:
    """A value as `--set` parses it back (YAML: 1e-05 alone would be a string)."""
    return yaml.safe_dump(value, default_flow_style=True, width=math.inf).removesuffix("\n...\n").strip()


def configure(circuit: Circuit, params: dict) -> Circuit:
    """`circuit` with `key.path: value` fields set through `Circuit.with_updates`, as `--set` does.
    A path through a list (`optimizer.betas.1`) sets the whole list, so elements left at their
    defaults are kept."""
    for path, value in params.items():
        keys = path.split(".")
        node: Any = circuit.model_dump(mode="json")
        for i, key in enumerate(keys[:-1]):
            node = node[int(key)] if isinstance(node, list) else node[key]
            if node is None:  # an optional block left out: `--set` creates it
                break
            if isinstance(node, list):
                whole = _replaced(node, keys[i + 1:], value)
                path, value = ".".join(keys[: i + 1]), whole
                break
        circuit = circuit.with_updates(f"{path}={_yaml_value(value)}")
    return circuit


def _replaced(node: Any, keys: list[str], value: Any) -> Any:
    """A copy of nested lists/dicts `node` with the element at `keys` set to `value`."""
    if not keys:
        return value
    key = int(keys[0]) if isinstance(node, list) else keys[0]
    copy = list(node) if isinstance(node, list) else dict(node)
    copy[key] = _replaced(node[key], keys[1:], value)
    return copy


def _has_field(circuit: Circuit, path: str) -> bool:
    node: Any = circuit.model_dump(mode="json")
    keys = path.split(".")
    for i, key in enumerate(keys):
        if node is None:  # an optional block left out (data.augment): has it the field by default?
            try:
                return _has_field(circuit.with_updates(f"{'.'.join(keys[:i])}={{}}"), path)
            except ConfigError:
                return False
        if isinstance(node, list) and key.isdigit() and int(key) < len(node):
            node = node[int(key)]
        elif isinstance(node, dict) and key in node:
            node = node[key]
        else:
            return False
    return True


def load_sweep(path: str | Path, out: str | Path | None = None) -> Sweep:
    """Read and check a sweep file: its schema, its circuit, and that every searched field
    exists in the circuit of each rule it applies to and accepts every value searched."""
    path = Path(path)
    data = read_yaml(path, "sweep")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sweep keys at the top level, got {type(data).__name__}")
    try:
        spec = SweepSpec.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_errors(err, str(path), root=SweepSpec)) from None
    circuit_path = path.parent / spec.circuit
    if not circuit_path.exists():
        raise ConfigError(f"{path}: circuit: no such file {str(circuit_path)!r} (relative to the sweep file)")
    base = load_circuit(circuit_path)
    budget = {"schedule.epochs": spec.epochs, **({"data.limit": spec.limit} if spec.limit is not None else {})}
    circuits = {rule: configure(base.with_algorithm(rule), budget) for rule in spec.rules}
    for rule, fields in spec.fixed.items():
        for key, value in fields.items():
            if not _has_field(circuits[rule], key):
                raise ConfigError(f"{path}: fixed.{rule}.{key}: the circuit {circuit_path} has no field {key!r} "
                                  f"under rule {rule!r}; expected a key path such as optimizer.lr")
            try:
                circuits[rule] = configure(circuits[rule], {key: value})
            except ConfigError as err:
                raise ConfigError(f"{path}: fixed.{rule}.{key}: value {value!r} does not fit: {err}") from None
    for rule, circuit in circuits.items():
        if spec.objective.metric.startswith("train") and not circuit.schedule.eval_train:
            raise ConfigError(f"{path}: objective.metric: {spec.objective.metric} is not recorded: the circuit "
                              f"{circuit_path} has schedule.eval_train: false (rule {rule!r}); expected val_error, "
                              f"or eval_train: true")
    spaces: dict[str, dict[str, Param]] = {rule: {} for rule in spec.rules}
    for key, param in (spec.search.space if spec.search else {}).items():
        where = f"{path}: search.space.{key}"
        having = [rule for rule in spec.rules if _has_field(circuits[rule], key)]
        for rule in param.rules or []:
            if rule not in spec.rules:
                raise ConfigError(f"{where}: rules: {rule!r} is not among the sweep's rules {spec.rules}")
            if rule not in having:
                raise ConfigError(f"{where}: the circuit {circuit_path} has no field {key!r} under rule {rule!r}")
        if not having:
            raise ConfigError(f"{where}: the circuit {circuit_path} has no field {key!r} under any of the rules "
                              f"{', '.join(spec.rules)}; expected a key path such as optimizer.lr")
        for rule in param.rules or having:
            for value in _probe_values(param):
                try:
                    configure(circuits[rule], {key: value})
                except ConfigError as err:
                    raise ConfigError(f"{where}: value {value!r} does not fit rule {rule!r}: {err}") from None
            spaces[rule][key] = param
    name = spec.name or path.stem
    return Sweep(spec, str(path), name, Path(out or spec.out or Path("runs") / "sweeps" / name), circuits, spaces)


def _probe_values(param: Param) -> list:
    """The values that must validate: the ends of a range, each categorical value."""
    bounds = param.uniform or param.log_uniform
    return list(bounds) if bounds is not None else list(param.categorical)


# ---------------------------------------------------------------------- the trials

# user attrs of a trial
RUN, CONFIG, SEED, RULE, REPLACED_BY, ABANDONED, ERROR = "run", "config", "seed", "rule", "replaced_by", "abandoned", "error"


def run_file_of(attrs: dict, study, out: Path) -> Path:
    """A trial's run file where its sweep directory is now: the study records it under the
    directory the study was made in (study attr `out`), and a sweep directory may since have
    been moved, copied from a cluster, or archived (`archive`)."""
    run, made = Path(attrs[RUN]), study.user_attrs.get("out")
    return out.resolve() / run.relative_to(made) if made and run.is_relative_to(made) else run


def storage_for(url: str):
    """An Optuna storage; SQLite waits for the lock instead of failing when workers write at once."""
    import optuna

    import sqlalchemy

    kwargs = {"connect_args": {"timeout": 120}} if url.startswith("sqlite") else None
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
    except (sqlalchemy.exc.SQLAlchemyError, ImportError, ValueError) as err:
        raise BiotpError(f"--storage {url}: cannot open the study database ({str(err).splitlines()[0]})") from None


@dataclass(frozen=True)
class TrialTask:
    """Everything a worker needs to run one trial (picklable, for processes and Dask)."""

    storage: str
    study: str
    trial_id: int
    circuit: Circuit
    run: str
    command: str
    objective: Objective
    pruner: Pruner
    threads: int | None = None
    threads_per_host: dict = field(default_factory=dict)
    data_dir: str | None = None


class _Stop(Exception):
    def __init__(self, state: str):
        self.state = state


def run_trial(task: TrialTask) -> dict:
    """Train one trial (resuming its run file if there is one), reporting the objective's
    metric each epoch; returns {state: complete|pruned|abandoned, value, epochs}."""
    import optuna
    import torch

    from .runs import open_run
    from .training import train

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    torch.set_num_threads(task.threads or _dask_threads(task.threads_per_host))
    storage = storage_for(task.storage)
    study = optuna.load_study(study_name=task.study, storage=storage, pruner=task.pruner.build())
    trial = optuna.trial.Trial(study, task.trial_id)
    metric, pruning = task.objective.metric, task.pruner.name != "none"

    def report(row: dict) -> None:
        if storage.get_trial(task.trial_id).state != optuna.trial.TrialState.RUNNING:
            raise _Stop("abandoned")  # a restarted sweep replaced this trial: leave the run file to it
        trial.report(float(row[metric]), int(row["epoch"]))
        if pruning and trial.should_prune():
            raise _Stop("pruned")

    run, resume = Path(task.run), None
    try:
        if run.exists():
            previous = open_run(run)
            done = previous.metrics
            for i in range(len(done.get("epoch", []))):
                report({k: v[i] for k, v in done.items()})
            resume = run if _last_epoch(previous) < task.circuit.schedule.epochs else None
        if resume is not None or not run.exists():
            train(None if resume else task.circuit, out=run, resume=resume, data_dir=task.data_dir,
                  device="cpu", progress=False, command=task.command, log=report)
    except _Stop as stop:
        return {"state": stop.state}
    metrics = open_run(run).metrics
    return {"state": "complete", "value": task.objective.value(metrics), "epochs": int(metrics["epoch"][-1])}


def _last_epoch(run) -> int:
    """The epoch of the run file's checkpoint (an epoch without evaluation has no metrics row)."""
    return int(np.asarray(run.checkpoint["epoch"])) if "checkpoint" in run.groups else 0


def _dask_threads(threads_per_host: dict) -> int:
    """Torch threads for a task on a Dask worker: the host's cores shared by all task slots on it."""
    from distributed import get_worker

    host = get_worker().address.rsplit(":", 1)[0].split("://")[-1]
    return max(1, len(os.sched_getaffinity(0)) // max(1, threads_per_host.get(host, 1)))


# ---------------------------------------------------------------------- the driver


@dataclass
class _Study:
    rule: str
    study: Any
    distributions: dict


class Driver:
    """Creates every trial of a sweep, hands them to workers and records their results."""

    def __init__(self, sweep: Sweep, storage: str | None = None, data_dir=None, log=print):
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.sweep, self.data_dir, self.log = sweep, data_dir, log
        sweep.out.mkdir(parents=True, exist_ok=True)
        self.storage_url = storage or default_storage(sweep)
        self.storage = storage_for(self.storage_url)
        self.studies = {}
        for rule in sweep.spec.rules:
            study = optuna.create_study(storage=self.storage, study_name=sweep.study_name(rule),
                                        sampler=self._sampler(rule, 0), direction=sweep.spec.objective.direction,
                                        load_if_exists=True)
            _check_same_sweep(study, sweep)
            self.studies[rule] = _Study(rule, study, sweep.distributions(rule))
        self.mine: dict[int, Any] = {}  # trial id -> Trial run by this process

    # -------------------------------------------------------------- what is left
    def next_trial(self, s: _Study):
        """A RUNNING trial for the next unit of work of rule `s.rule`, or None when it has none."""
        from optuna.trial import TrialState

        while True:
            trials = s.study.get_trials(deepcopy=False)
            done = {_key(t) for t in trials if _settled(t) or t._trial_id in self.mine}
            if any(t.state == TrialState.WAITING for t in trials):  # study.ask pops these first
                trial = s.study.ask(s.distributions)  # enqueued by a sweep killed before it took the trial
                if _key(trial) in done:
                    trial.set_user_attr(ABANDONED, "duplicate of a settled trial")
                    s.study.tell(trial, state=TrialState.FAIL)
                    continue
                self._set_up(s, trial, trial.user_attrs)
                return trial
            stale = [t for t in trials if t.state == TrialState.RUNNING and t._trial_id not in self.mine]
            for t in stale:
                if RUN not in t.user_attrs or _key(t) in done:  # killed before it was set up, or already settled
                    self._fail(t, ABANDONED, "left by an interrupted sweep")
                    continue
                replacement = self._create(s, t.params, {**t.user_attrs, "resumes": t.number})
                for other in stale:  # every stale trial of the unit, now that its work has a live trial
                    if _key(other) == _key(t):
                        self._fail(other, REPLACED_BY, replacement.number)
                return replacement
            return self._sibling(s, trials, done) or self._lead(s, trials)

    def _sibling(self, s: _Study, trials, done):
        """The next seed of a configuration whose first seed completed."""
        from optuna.trial import TrialState

        first = self.sweep.spec.seeds[0]
        for t in trials:
            if t.state == TrialState.COMPLETE and t.user_attrs.get(SEED) == first:
                for seed in self.sweep.spec.seeds[1:]:
                    if (t.user_attrs[CONFIG], seed) not in done:
                        return self._create(s, t.params, {CONFIG: t.user_attrs[CONFIG], SEED: seed})
        return None

    def _lead(self, s: _Study, trials):
        """A new configuration (sampled, or the next grid point) at the first seed."""
        configs = {t.user_attrs[CONFIG]: t.params for t in trials if RUN in t.user_attrs}
        if len(configs) >= self.sweep.configurations(s.rule):
            return None
        if self.sweep.search.sampler == "grid":
            params = next(p for p in self.sweep.grid(s.rule) if p not in configs.values())
            s.study.enqueue_trial(params)
        s.study.sampler = self._sampler(s.rule, len(configs))
        trial = s.study.ask(s.distributions)
        self._set_up(s, trial, {CONFIG: trial.number, SEED: self.sweep.spec.seeds[0]})
        return trial

    def _sampler(self, rule: str, config: int):
        """The sampler that draws configuration `config` of `rule`, seeded by (search seed, rule,
        configuration): a sweep stopped and run again draws what one uninterrupted run draws,
        where one sampler per process would replay its first draws after every restart."""
        import optuna

        search = self.sweep.search
        seed = int(np.random.SeedSequence([search.seed, self.sweep.spec.rules.index(rule), config]).generate_state(1)[0])
        return {"tpe": optuna.samplers.TPESampler, "random": optuna.samplers.RandomSampler,
                "grid": optuna.samplers.RandomSampler}[search.sampler](seed=seed)

    def _create(self, s: _Study, params: dict, attrs: dict):
        """A trial with fixed parameters: enqueued with its user attrs, then taken at once."""
        s.study.enqueue_trial(params, user_attrs=attrs)
        trial = s.study.ask(s.distributions)
        self._set_up(s, trial, attrs)
        return trial

    def _set_up(self, s: _Study, trial, attrs: dict) -> None:
        """Record the trial's unit of work; its own run file unless it resumes another trial's."""
        run = attrs.get(RUN) or str((self.sweep.out / s.rule / f"trial-{trial.number:04d}.h5").resolve())
        for k, v in {**attrs, RULE: s.rule, RUN: run}.items():  # `run` last: a trial without it is abandoned
            trial.set_user_attr(k, v)

    def _fail(self, frozen, attr: str, value) -> None:
        from optuna.trial import TrialState

        self.storage.set_trial_user_attr(frozen._trial_id, attr, value)
        self.storage.set_trial_state_values(frozen._trial_id, state=TrialState.FAIL)

    # -------------------------------------------------------------------- running
    def task(self, s: _Study, trial, threads: int | None, threads_per_host: dict) -> TrialTask:
        attrs, params = trial.user_attrs, trial.params
        seed, run = attrs[SEED], run_file_of(attrs, s.study, self.sweep.out)
        return TrialTask(
            storage=self.storage_url, study=s.study.study_name, trial_id=trial._trial_id,
            circuit=self.sweep.trial_circuit(s.rule, params, seed), run=str(run),
            command=self.sweep.train_command(s.rule, params, seed, run),
            objective=self.sweep.spec.objective, pruner=self.sweep.search.pruning(),
            threads=threads, threads_per_host=threads_per_host,
            data_dir=None if self.data_dir is None else str(self.data_dir))

    def run(self, executor, slots: int, threads: int | None = None, threads_per_host: dict | None = None) -> None:
        """Keep `slots` trials running until no rule has work left."""
        from optuna.trial import TrialState

        running: dict[Any, tuple[_Study, Any]] = {}
        exhausted: set[str] = set()
        order = itertools.cycle(self.studies.values())
        while True:
            while len(running) < slots and len(exhausted) < len(self.studies):
                s = next(order)
                if s.rule in exhausted:
                    continue
                trial = self.next_trial(s)
                if trial is None:
                    exhausted.add(s.rule)
                    continue
                self.mine[trial._trial_id] = trial
                running[executor.submit(run_trial, self.task(s, trial, threads, threads_per_host or {}))] = (s, trial)
            if not running:
                return
            finished, _ = concurrent.futures.wait(running, return_when=concurrent.futures.FIRST_COMPLETED)
            for future in finished:
                s, trial = running.pop(future)
                exhausted.discard(s.rule)  # a completed lead opens its other seeds
                try:
                    result = future.result()
                except concurrent.futures.BrokenExecutor:
                    raise BiotpError(f"{self.sweep.source}: a worker process died (out of memory, or killed) in "
                                     f"{s.rule} trial {trial.number}; run the same command again to resume") from None
                except BiotpError as err:  # e.g. divergence: the configuration failed, the sweep goes on
                    trial.set_user_attr(ERROR, str(err))
                    s.study.tell(trial, state=TrialState.FAIL)
                    result = {"state": f"failed: {err}"}
                else:
                    if result["state"] == "complete":
                        s.study.tell(trial, result["value"])
                    elif result["state"] == "pruned":
                        s.study.tell(trial, state=TrialState.PRUNED)
                self.mine.pop(trial._trial_id)
                self.log(_describe(s.rule, trial, result, self.sweep.spec.objective.metric))


def _check_same_sweep(study, sweep: Sweep) -> None:
    """A study continues only the sweep that made it: trials of another space, budget or
    objective would be mixed into one ranking.  Only `search.trials` may grow."""
    made = study.user_attrs.get("sweep")
    spec = sweep.spec.model_dump(mode="json", exclude={"name", "out"} | ({"fixed"} if not sweep.spec.fixed else set()))
    if spec["search"] is not None:
        spec["search"].pop("trials")
    if made is None:
        study.set_user_attr("sweep", spec)
        study.set_user_attr("out", str(sweep.out.resolve()))
        return
    changed = [k for k in sorted(set(made) | set(spec)) if made.get(k) != spec.get(k)]
    made_search, search = made.get("search") or {}, spec["search"] or {}
    changed += [f"search.{k}" for k in sorted(set(made_search) | set(search)) if made_search.get(k) != search.get(k)]
    if changed:
        raise ConfigError(f"{sweep.source}: the study {study.study_name!r} in {study.user_attrs.get('out')} was made "
                          f"by a sweep with other {', '.join(c for c in changed if c != 'search')}; only search.trials "
                          f"may change between runs; expected the same file, or another `out` (or `name`)")


def _key(trial) -> tuple:
    return trial.user_attrs.get(CONFIG), trial.user_attrs.get(SEED)


def _settled(trial) -> bool:
    """Finished for good: complete, pruned, or failed on its own (not replaced, not abandoned)."""
    from optuna.trial import TrialState

    if trial.state == TrialState.FAIL:
        return REPLACED_BY not in trial.user_attrs and ABANDONED not in trial.user_attrs
    return trial.state in (TrialState.COMPLETE, TrialState.PRUNED)


def _describe(rule: str, trial, result: dict, metric: str) -> str:
    params = f"; {_format_params(trial.params)}" if trial.params else ""
    outcome = f"{metric} {result['value']:.4f}" if result["state"] == "complete" else result["state"]
    return f"{rule} trial {trial.number} (config {trial.user_attrs[CONFIG]}, seed {trial.user_attrs[SEED]}{params}): {outcome}"


def _format_params(params: dict) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def default_storage(sweep: Sweep) -> str:
    return f"sqlite:///{(sweep.out / 'study.db').resolve()}"


class _Lock:
    """One driver per sweep directory: the lock dies with its process, even on SIGKILL."""

    def __init__(self, out: Path):
        self.path = out / "sweep.lock"

    def __enter__(self):
        self.fh = open(self.path, "a+")
        try:
            fcntl.flock(self.fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.fh.close()
            raise BiotpError(f"{self.path}: another `biotp sweep` is running on this directory") from None
        return self

    def __exit__(self, *exc):
        fcntl.flock(self.fh, fcntl.LOCK_UN)
        self.fh.close()


def local_cores() -> int:
    return len(os.sched_getaffinity(0))


def run_sweep(sweep: Sweep, *, workers: int | None = None, dask: str | None = None, storage: str | None = None,
              data_dir=None, executor: concurrent.futures.Executor | None = None, threads: int | None = None,
              log=print) -> None:
    """Run (or resume) every trial of `sweep`: in `workers` local processes (default one per
    core, each with `threads` torch threads, default cores/workers), or on the Dask cluster at
    `dask`.  An `executor` of local processes (e.g. shared by several sweeps) gets `workers`
    trials at a time."""
    sweep.out.mkdir(parents=True, exist_ok=True)
    with _Lock(sweep.out):
        driver = Driver(sweep, storage=storage, data_dir=data_dir, log=log)
        if dask is not None:
            from distributed import Client

            try:
                client = Client(dask, timeout=30)
            except OSError as err:
                raise BiotpError(f"--dask {dask}: cannot reach the Dask scheduler ({err})") from None
            with client:
                per_host: dict[str, int] = {}
                for info in client.scheduler_info(n_workers=-1)["workers"].values():
                    per_host[info["host"]] = per_host.get(info["host"], 0) + info["nthreads"]
                driver.run(client.get_executor(pure=False), slots=max(1, sum(per_host.values())),
                           threads_per_host=per_host)
            return
        import multiprocessing

        workers = workers or local_cores()
        threads = threads or max(1, local_cores() // workers)
        if executor is not None:
            driver.run(executor, slots=workers, threads=threads)
            return
        # spawn, not fork: a forked copy of a process that has run torch can hang in its thread pool
        with concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            driver.run(pool, slots=workers, threads=threads)


# ---------------------------------------------------------------------- the report


@dataclass
class RuleResult:
    """The best configuration of one rule and its errors over seeds (errors as fractions)."""

    rule: str
    config: int | None
    params: dict
    seeds: list[int]
    runs: list[Path]
    objective: list[float]
    final_test: list[float]
    best_val_test: list[float]
    complete: bool  # every seed of the sweep done; else the seeds finished so far
    final_train: list[float] = field(default_factory=list)  # nan where not recorded (eval_train: false)

    @staticmethod
    def mean_std(values: list[float]) -> tuple[float, float]:
        """Mean and sample standard deviation (ddof 1; nan from a single seed)."""
        v = np.asarray(values, dtype=float)
        return (float(v.mean()), float(v.std(ddof=1))) if len(v) > 1 else (float(v.mean()) if len(v) else math.nan, math.nan)


@dataclass
class SweepReport:
    sweep: Sweep
    results: dict[str, RuleResult]
    figures: list[Path]

    def markdown(self) -> str:
        metric = self.sweep.spec.objective.metric
        lines = [f"| rule | seeds | {metric} ({self.sweep.spec.objective.at}) | final train error (%) "
                 f"| final test error (%) | test error at best val (%) | best configuration |",
                 "|---|---|---|---|---|---|---|"]
        for r in self.results.values():
            cells = [_pm(r.objective, 1), _pm(r.final_train, 100), _pm(r.final_test, 100), _pm(r.best_val_test, 100)]
            params = _format_params(r.params) or ("(the circuit's own)" if r.runs else "(none complete)")
            seeds = f"{len(r.runs)}" if r.complete else f"{len(r.runs)} of {len(self.sweep.spec.seeds)} so far"
            lines.append(f"| {r.rule} | {seeds} | {' | '.join(cells)} | {params} |")
        lines.append("")
        lines.append("mean ± sample s.d. over seeds of the configuration with the best mean objective; "
                     "best: test error (%) at the epoch of best validation error")
        lines += [f"best: {r.rule} {_pm(r.best_val_test, 100, sep='±')}" for r in self.results.values()]
        return "\n".join(lines)


def _pm(values: list[float], scale: float, sep: str = " ± ") -> str:
    if len(values) and np.isnan(values).all():
        return "–"  # not recorded
    mean, std = RuleResult.mean_std(values)
    return f"{mean * scale:.4g}{sep}{std * scale:.2g}"


def best_of(sweep: Sweep, rule: str, study) -> RuleResult:
    """The configuration whose seeds all completed with the best mean objective; while none has,
    the best of those with the most seeds completed (`complete` False)."""
    from optuna.trial import TrialState

    from .runs import open_run

    by_config: dict[int, list] = {}
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        by_config.setdefault(t.user_attrs[CONFIG], []).append(t)
    if not by_config:
        return RuleResult(rule, None, {}, [], [], [], [], [], False)
    most = max(len(ts) for ts in by_config.values())
    candidates = {c: ts for c, ts in by_config.items() if len(ts) == most}
    sign = 1 if sweep.spec.objective.direction == "minimize" else -1
    config = min(candidates, key=lambda c: (sign * np.mean([t.value for t in candidates[c]]), c))
    trials = sorted(candidates[config], key=lambda t: sweep.spec.seeds.index(t.user_attrs[SEED]))
    runs = [run_file_of(t.user_attrs, study, sweep.out) for t in trials]
    finals, at_best, train = [], [], []
    for run in runs:
        m = open_run(run).metrics
        finals.append(float(m["test_error"][-1]))
        at_best.append(float(m["test_error"][int(np.nanargmin(m["val_error"]))]))
        train.append(float(m["train_error"][-1]) if "train_error" in m else math.nan)
    params = {**sweep.spec.fixed.get(rule, {}), **trials[0].params}
    seeds = [t.user_attrs[SEED] for t in trials]
    return RuleResult(rule, config, params, seeds, runs, [t.value for t in trials], finals, at_best,
                      complete=set(seeds) == set(sweep.spec.seeds), final_train=train)


def report(sweep: Sweep, storage: str | None = None, figures: bool = True) -> SweepReport:
    """Best configuration per rule, errors over seeds, and figures in the sweep directory."""
    studies = load_studies(sweep, storage)
    results = {rule: best_of(sweep, rule, study) for rule, study in studies.items()}
    paths = _figures(sweep, studies, results) if figures else []
    out = SweepReport(sweep, results, paths)
    (sweep.out / "report.md").write_text(out.markdown() + "\n")
    return out


def write_best(sweep: Sweep, result: SweepReport, path: str | Path, seeds: list[int], epochs: int | None = None) -> Path:
    """Write the sweep that trains each rule's best configuration of `result` (with the fields
    the search fixed) over `seeds` for `epochs` (default: the circuit's own), on all the data:
    the second stage of a search.  Values are written exactly; an existing file is kept."""
    path = Path(path)
    if path.exists():
        raise BiotpError(f"--best-to {path}: the file exists; remove it or choose another path")
    unfinished = [r.rule for r in result.results.values() if not r.complete]
    if unfinished:
        raise BiotpError(f"{sweep.source}: no configuration of {', '.join(unfinished)} has completed all its seeds; "
                         f"run `biotp sweep {sweep.source}` until one has")
    circuit = Path(sweep.source).parent / sweep.spec.circuit
    epochs = epochs or load_circuit(circuit).schedule.epochs
    objective = sweep.spec.objective
    best = ", ".join(f"{r.rule} {objective.metric} {np.mean(r.objective):.4g}" for r in result.results.values())
    header = [*textwrap.wrap(f"The best configuration per rule of {sweep.source} ({objective.metric} at its "
                             f"{objective.at} epoch over seeds {sweep.spec.seeds}, epochs: {sweep.spec.epochs}; {best}), "
                             f"trained over seeds {seeds} for {epochs} epochs on all the data.  Written by", 96),
              f"  biotp sweep {sweep.source} --report --best-to {path} --seeds {','.join(map(str, seeds))} "
              f"--epochs {epochs}", "Run it (again to resume), and summarise it:",
              f"  biotp sweep {path} --data-dir DATA", f"  biotp sweep {path} --report"]
    spec = {"circuit": os.path.relpath(circuit.resolve(), path.resolve().parent), "rules": list(result.results),
            "seeds": list(seeds), "epochs": epochs, "objective": objective.model_dump(mode="json"),
            "fixed": {r.rule: r.params for r in result.results.values() if r.params}}
    text = "".join(f"# {line}\n" for line in header) + yaml.safe_dump(spec, sort_keys=False, width=120, default_flow_style=None)
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_name(path.name + ".tmp")
    scratch.write_text(text)
    os.replace(scratch, path)
    load_sweep(path)  # what was written reads back
    return path


def load_studies(sweep: Sweep, storage: str | None = None) -> dict:
    """{rule: its Optuna study} (read only); a sweep never run is an error naming the command."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = storage or default_storage(sweep)
    missing = f"{sweep.source}: no study of this sweep in {url}; run `biotp sweep {sweep.source}` first"
    if storage is None and not (sweep.out / "study.db").exists():
        raise BiotpError(missing)
    studies, opened = {}, storage_for(url)
    for rule in sweep.spec.rules:
        try:
            studies[rule] = optuna.load_study(study_name=sweep.study_name(rule), storage=opened)
        except KeyError:
            raise BiotpError(missing) from None
    return studies


def archive(sweep: Sweep, dest: str | Path, storage: str | None = None) -> dict[str, int]:
    """Copy the sweep to `dest`: its studies (an SQLite study.db, whatever storage the sweep
    used) and its finished trials' run files without their checkpoints — the compact record of
    a sweep to keep or commit, read as the sweep's directory (`--out DEST`) by `--report`,
    `biotp inspect DEST/study.db` and analysis/reproduce_tables.py.  A trial still running is
    copied as it stands, without its run file: the sweep run on `dest` replaces it, as it
    replaces a killed sweep's, and trains it from the start.  An existing `dest` is replaced
    only by a newer record of the same sweep (every trial it holds finished, finished the same
    way).  Returns {rule: run files copied}; `dest` is written beside and renamed into place."""
    import shutil

    import optuna
    from optuna.trial import TrialState

    from .runs import copy_record

    dest = Path(dest)
    if dest.resolve().is_relative_to(sweep.out.resolve()):
        raise BiotpError(f"--archive {dest}: inside the sweep's own directory {sweep.out}; expected another directory")
    kept = _archived(sweep, dest) if dest.exists() else {}
    studies, source = load_studies(sweep, storage), storage_for(storage or default_storage(sweep))
    scratch, old = (dest.with_name(f"{dest.name}.{what}-{os.getpid()}") for what in ("tmp", "old"))
    shutil.rmtree(scratch, ignore_errors=True)
    copied = {}
    try:
        scratch.mkdir(parents=True)
        target = storage_for(f"sqlite:///{(scratch / 'study.db').resolve()}")
        for rule, study in studies.items():
            optuna.copy_study(from_study_name=study.study_name, from_storage=source, to_storage=target)
            copied[rule], trials = 0, optuna.load_study(study_name=study.study_name, storage=target).get_trials(deepcopy=False)
            lost = sorted(set(kept.get(rule, {}).items()) - {(t.number, (t.state.name, t.value)) for t in trials})
            if lost:
                raise BiotpError(f"--archive {dest}: holds {rule} trial {lost[0][0]} ({lost[0][1][0].lower()}), which the "
                                 f"sweep's study {'no longer has' if lost[0][0] >= len(trials) else 'has otherwise'}; "
                                 f"expected a newer record of the same study, or a new directory")
            for t in trials:
                if t.state in (TrialState.COMPLETE, TrialState.PRUNED):
                    run = run_file_of(t.user_attrs, study, sweep.out)
                    copy_record(run, scratch / rule / run.name)
                    copied[rule] += 1
        target.engine.dispose()
        if dest.exists():
            os.rename(dest, old)
        os.rename(scratch, dest)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException as err:
        shutil.rmtree(scratch, ignore_errors=True)
        if isinstance(err, OSError):
            raise BiotpError(f"--archive {dest}: cannot write {err.filename or dest} ({err.strerror or err}); "
                             f"expected a writable place") from None
        raise
    return copied


def _archived(sweep: Sweep, dest: Path) -> dict[str, dict[int, tuple]]:
    """{rule: {trial number: (state, value)}} of the finished trials of an earlier `archive` of
    `sweep` at `dest`; anything else there is an error (it is not overwritten)."""
    import optuna

    if not (dest / "study.db").is_file():
        raise BiotpError(f"--archive {dest}: exists and holds no study.db; expected a new directory or an earlier "
                         f"--archive of {sweep.source}")
    (storage, names), kept = open_study_db(dest / "study.db"), {}
    missing = [sweep.study_name(rule) for rule in sweep.spec.rules if sweep.study_name(rule) not in names]
    if missing:
        raise BiotpError(f"--archive {dest}: exists and is not a record of {sweep.source} (its study.db has no study "
                         f"{missing[0]!r}); expected a new directory or an earlier --archive of this sweep")
    for rule in sweep.spec.rules:
        study = optuna.load_study(study_name=sweep.study_name(rule), storage=storage)
        kept[rule] = {t.number: (t.state.name, t.value) for t in study.get_trials(deepcopy=False) if _settled(t)}
    storage.engine.dispose()
    return kept


def open_study_db(path: Path):
    """(storage, study names) of a sweep's SQLite study.db; a file that is not one is a
    BiotpError, and is left as it was (Optuna would add its tables to any SQLite file)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path.resolve()}?mode=ro", uri=True)) as db:
            tables = {row[0] for row in db.execute("select name from sqlite_master where type = 'table'")}
    except sqlite3.DatabaseError as err:
        raise BiotpError(f"{path}: not a readable SQLite database ({err}); expected a sweep's study.db") from None
    storage = storage_for(f"sqlite:///{path.resolve()}") if "studies" in tables else None
    names = optuna.study.get_all_study_names(storage) if storage else []
    if not names:
        raise BiotpError(f"{path}: an SQLite database with no Optuna study in it; expected a sweep's study.db")
    return storage, names


def describe_storage(path: str | Path) -> str:
    """`biotp inspect study.db`: every study a sweep's SQLite storage holds (one per rule), each
    trial's state, seed, configuration, objective value and run file, and each configuration's
    values — read from the storage alone, without the sweep file (whose `--report` gives the
    mean ± s.d. over seeds)."""
    import optuna

    from .runs import aligned

    path = Path(path)
    storage, names = open_study_db(path)
    lines = [f"{path}: the Optuna studies of a sweep, one per rule; `biotp sweep SWEEP.yaml --report` "
             f"summarises them over seeds"]
    for name in names:
        study = optuna.load_study(study_name=name, storage=storage)
        objective, trials = study.user_attrs.get("sweep", {}).get("objective", {}), study.get_trials(deepcopy=False)
        counts = collections.Counter(t.state.name.lower() for t in trials)
        lines += ["", f"study {name} ({objective.get('direction', study.direction.name.lower())} "
                      f"{objective.get('metric', 'the objective')} at {objective.get('at', '?')}; output "
                      f"{study.user_attrs.get('out', '?')}): {len(trials)} trial{'s' * (len(trials) != 1)}"
                      + "".join(f", {n} {state}" for state, n in sorted(counts.items()))]
        if not trials:
            continue
        out, configs = study.user_attrs.get("out"), {}  # runs are shown relative to the sweep's output
        rows = [["trial", "state", "seed", "config", "value", "run", "note"]]
        for t in trials:
            run, a = t.user_attrs.get(RUN, ""), t.user_attrs
            note = (f"resumed by trial {a[REPLACED_BY]}" if REPLACED_BY in a else a.get(ABANDONED)
                    or (f"error: {a[ERROR]}" if ERROR in a else ""))
            configs.setdefault(a.get(CONFIG), t.params)
            rows.append([str(t.number), t.state.name.lower(), str(a.get(SEED, "")), str(a.get(CONFIG, "")),
                         "" if t.value is None else f"{t.value:.4g}",
                         str(Path(run).relative_to(out)) if out and run and Path(run).is_relative_to(out) else run, note])
        lines.append(aligned(rows, left=(1, 5, 6)))
        lines += [f"config {c}: {_format_params(params) or '(nothing searched)'}" for c, params in configs.items()]
    return "\n".join(lines)


def _figures(sweep: Sweep, studies: dict, results: dict[str, RuleResult]) -> list[Path]:
    """Optimisation history, validation curves of the best configurations, their training and
    test curves over seeds side by side, parameter importance."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.trial import TrialState

    import h5py

    from .plots.curves import curves_over_seeds

    metric, paths = sweep.spec.objective.metric, []
    fig, axes = plt.subplots(1, len(studies), figsize=(4.5 * len(studies), 3.5), squeeze=False)
    for ax, (rule, study) in zip(axes[0], studies.items()):
        done = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
        pruned = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.PRUNED and t.intermediate_values]
        ax.plot([t.number for t in done], [t.value for t in done], "o", ms=4, label="complete")
        ax.plot([t.number for t in pruned], [t.intermediate_values[max(t.intermediate_values)] for t in pruned],
                "x", ms=4, label="pruned (last report)")
        if done:
            best = (np.minimum if sweep.spec.objective.direction == "minimize" else np.maximum).accumulate([t.value for t in done])
            ax.step([t.number for t in done], best, where="post", label="best so far")
        ax.set(title=f"{sweep.name}: {rule}", xlabel="trial", ylabel=f"{metric} ({sweep.spec.objective.at})")
        ax.legend(fontsize=7)
    paths.append(_save(fig, sweep.out / "history.png"))
    with contextlib.ExitStack() as stack:  # the best runs' files, open for both figures (only /metrics is read)
        runs = {r.rule: [stack.enter_context(h5py.File(run, "r")) for run in r.runs] for r in results.values()}
        fig, axes = plt.subplots(1, len(results), figsize=(4.5 * len(results), 3.5), squeeze=False)
        for ax, r in zip(axes[0], results.values()):
            for f, seed in zip(runs[r.rule], r.seeds):
                ax.plot(f["metrics/epoch"][()], f["metrics"][metric][()], label=f"seed {seed}")
            ax.set(title=f"{r.rule}: best configuration", xlabel="epoch", ylabel=metric)
            if r.runs:
                ax.legend(fontsize=7)
        paths.append(_save(fig, sweep.out / "validation.png"))
        if any(runs.values()):
            paths.append(_save(curves_over_seeds(runs), sweep.out / "curves.png"))
    importances = {}
    for rule, study in studies.items():
        complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
        if len(sweep.spaces[rule]) > 1 and len(complete) >= 4:
            import optuna

            importances[rule] = optuna.importance.get_param_importances(study)
    if importances:
        fig, axes = plt.subplots(1, len(importances), figsize=(4.5 * len(importances), 3), squeeze=False)
        for ax, (rule, imp) in zip(axes[0], importances.items()):
            ax.barh(list(imp), list(imp.values()))
            ax.set(title=f"{rule}: parameter importance (fANOVA)", xlabel="share of objective variance")
        paths.append(_save(fig, sweep.out / "importance.png"))
    return paths


def _save(fig, path: Path) -> Path:
    if fig.get_layout_engine() is None:  # biotp.plots' figures come laid out
        fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path
