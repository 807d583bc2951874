"""What the NWB export reads from a run file: its kind, each point's timeline on the session
time axis, and the traces left on disk as h5py datasets (read piecewise when written).

A `biotp simulate` file is one point whose trials are the stream's examples, one after
another; a `biotp run` file has one point per sweep point, laid end to end on the session
time axis (each starts from the same initial network; see `Point.offset`)."""

from __future__ import annotations

import json
import math
import re
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import yaml

from ..errors import ConfigError, RunFileError
from ..runs import Run, attributes

EXPECTED = "a run file of `biotp simulate` (kind 'simulate') or `biotp run` (kind 'protocol')"
MADE_BY = {"train": "biotp train", "continuous": "biotp simulate --epochs", "compare": "biotp compare"}
REQUIRED = ("kind", "created", "circuit_yaml", "command", "biotp_version")

MEANING = {"h": "activity", "t": "target (the activity h until the target onset)", "u": "decoder input",
           "r": "residual: the norm ‖dy/dt‖ over the population of its moving variable's rate (h in the forward "
                "phase, the target after)"}


@dataclass
class Trace:
    """One recorded variable: [time, example, neuron] on disk, `times` within a trial."""

    population: str
    variable: str
    data: h5py.Dataset
    times: np.ndarray
    unit: str
    description: str
    shift: float = 0.0  # where `times` start within a trial (s): the target phase's residual starts late


@dataclass
class Point:
    """One simulated experiment: its trials on the session time axis and its results group."""

    index: int
    key: str  # the point's group under /points ("" for a simulate file)
    label: str
    params: dict
    group: h5py.Group
    circuit: object  # biotp.circuit.Circuit
    protocol: object | None  # biotp.protocols.Protocol (None: a simulate stream)
    n_trials: int
    batch: int  # examples presented side by side in one trial
    trial_time: float  # T: trial k occupies [onset(k), onset(k) + T)
    recorded: np.ndarray  # the trials whose traces were kept, in order
    offset: float = 0.0  # session time of trial 0 (s)
    prefix: str = ""  # prepended to the names of this point's NWB objects in a sweep
    model: object = None  # biotp.dynamics.model.Model of the point's circuit

    @property
    def forward_phase(self) -> float:
        return self.circuit.dynamics.forward_phase

    @property
    def presentation(self) -> float:
        return self.circuit.dynamics.forward_phase + self.circuit.dynamics.target_phase

    @property
    def duration(self) -> float:
        return self.n_trials * self.trial_time

    def onsets(self, trials) -> np.ndarray:
        """Session times (s) at which the given trials start."""
        return self.offset + np.asarray(trials, dtype=float) * self.trial_time

    def timeline(self):
        """The protocol's Timeline (phases and interventions per trial); None for a stream."""
        from ..protocols.timeline import Timeline

        return Timeline(self.protocol, self.trial_time) if self.protocol is not None else None


@dataclass
class Source:
    """A run file open for export: root attributes and its points."""

    path: Path
    file: h5py.File
    attrs: dict
    points: list[Point]

    @property
    def kind(self) -> str:
        return self.attrs["kind"]

    @property
    def circuit(self):
        return self.points[0].circuit

    def identifier(self) -> str:
        """The same run file always gives the same NWB identifier."""
        key = "\n".join(str(self.attrs[k]) for k in ("kind", "created", "command", "seed", "circuit_yaml")
                        if k in self.attrs)
        return str(uuid.uuid5(uuid.NAMESPACE_URL, "biotp:" + key))


def read_source(path: Path, f: h5py.File) -> Source:
    """The export's view of the open run file `f`; RunFileError if it is not a simulate or
    protocol run file, or its contents disagree with its own configuration."""
    attrs = attributes(f)
    kind = attrs.get("kind")
    if kind is None:
        raise RunFileError(f"{path}: not a biotp run file (no root attribute 'kind'); expected {EXPECTED}")
    if kind not in ("simulate", "protocol"):
        made = f" (written by `{MADE_BY[kind]}`)" if kind in MADE_BY else ""
        raise RunFileError(f"{path}: a run file of kind {kind!r}{made}, which has no trials to export; "
                           f"expected {EXPECTED}")
    for key in REQUIRED:
        if key not in attrs:
            raise RunFileError(f"{path}: root attribute {key!r} is missing; expected {EXPECTED}")
    points = _simulate_point(path, f, attrs) if kind == "simulate" else _protocol_points(path, f, attrs)
    offset = 0.0
    for pt in points:
        pt.offset, offset = offset, offset + pt.duration
        pt.prefix = f"{pt.key}_" if len(points) > 1 else ""
        pt.model = _model(pt)
    return Source(path, f, attrs, points)


# ------------------------------------------------------------------ the points


def _simulate_point(path: Path, f: h5py.File, attrs: dict) -> list[Point]:
    circuit = Run(path, attrs, {}).circuit
    if circuit.dynamics is None:
        circuit = circuit.with_updates("dynamics={}")
    n = int(dataset(path, f, "summary/examples")[()])
    P = circuit.dynamics.forward_phase + circuit.dynamics.target_phase
    return [Point(0, "", circuit.name, {}, f, circuit, None, n, 1, P, np.arange(n))]


def _protocol_points(path: Path, f: h5py.File, attrs: dict) -> list[Point]:
    """The points the file holds, each with the protocol and circuit it ran: the sweep is
    expanded again from the file's protocol YAML, over the file's (resolved) circuit."""
    from ..protocols.runner import _recorded_trials
    from ..protocols.schema import parse_protocol
    from ..protocols.sweep import points
    from ..protocols.timeline import trial_time

    if attrs.get("engine") == "discrete":
        raise RunFileError(f"{path}: a protocol run on engine 'discrete' (the fast path) has no trials or "
                           f"traces to export; expected {EXPECTED} on engine torch or brian2")
    if "protocol_yaml" not in attrs:
        raise RunFileError(f"{path}: root attribute 'protocol_yaml' is missing; expected {EXPECTED}")
    if "points" not in f or not len(f["points"]):
        raise RunFileError(f"{path}: group /points is missing or empty; expected {EXPECTED} with a finished point")
    data = yaml.safe_load(attrs["protocol_yaml"])
    with tempfile.TemporaryDirectory() as tmp:  # the sweep resolves each point's circuit from a file
        circuit_file = Path(tmp) / "circuit.yaml"
        circuit_file.write_text(attrs["circuit_yaml"])
        data["circuit"] = str(circuit_file)
        resolved = {pt.key: pt for pt in points(parse_protocol(data, f"{path}:/protocol_yaml"))}
    out = []
    for key in sorted(f["points"]):
        if key not in resolved:
            raise RunFileError(f"{path}: group /points/{key} is not a point of the file's protocol "
                               f"(expected {', '.join(resolved)})")
        pt = resolved[key]
        p, spec = pt.protocol, pt.circuit.dynamics
        recorded = np.array(sorted(_recorded_trials(p) & set(range(p.trials))), dtype=int)
        out.append(Point(pt.index, key, pt.label, pt.params, f["points"][key], pt.circuit, p, p.trials,
                         p.stimuli.batch, trial_time(spec, p.stimuli), recorded))
    return out


def dataset(path: Path, f: h5py.Group, key: str) -> h5py.Dataset:
    """The dataset `key` of group `f`; RunFileError naming it if the file lacks it."""
    item = f.get(key)
    if not isinstance(item, h5py.Dataset):
        raise RunFileError(f"{path}: dataset {f.name.rstrip('/')}/{key} is missing; expected {EXPECTED}")
    return item


# ------------------------------------------------------------------ the traces


def traces(source: Source, pt: Point) -> list[Trace]:
    """The point's recorded variables, checked against its timeline: one column per
    recorded trial and example, one row per sample of a trial."""
    out = []
    group = pt.group.get("traces", {})
    for pop in group:
        for var in group[pop]:
            ds = group[pop][var]
            _check_columns(source.path, ds, pt)
            unit = _unit(pt, pop, var, attributes(ds).get("unit", ""))
            out.append(Trace(pop, var, ds, _times(source.path, ds, pt), unit, describe(pt, pop, var)))
    return out


def residuals(source: Source, pt: Point) -> list[Trace]:
    """The per-layer residuals ‖dy_l/dt‖ of a protocol point, split at the target onset."""
    out = []
    group = pt.group.get("residual", {})
    for phase in ("forward", "target"):
        if phase not in group:
            continue
        ds = group[phase]
        attrs = attributes(ds)
        layers = ", ".join(f"layer{int(l)}" for l in attrs.get("layers", []))
        times = np.asarray(attrs.get("times", []), dtype=float)
        if len(times) != ds.shape[0]:
            raise RunFileError(f"{source.path}: {ds.name} has {ds.shape[0]} samples but its attribute 'times' "
                               f"{len(times)}; expected one time per sample")
        _check_columns(source.path, ds, pt)
        description = (f"Settling residual of the {phase} phase: ‖dy_l/dt‖ (norm over the layer of the rate of "
                       f"its moving variable), one column per layer ({layers}).")
        out.append(Trace("residual", phase, ds, times, si_unit(attrs.get("unit", "1/s")), description,
                         pt.forward_phase if phase == "target" else 0.0))
    return out


def _times(path: Path, ds: h5py.Dataset, pt: Point) -> np.ndarray:
    attrs = attributes(ds)
    if "times" not in attrs:
        raise RunFileError(f"{path}: {ds.name} has no attribute 'times'; expected the sample times within a trial")
    times = np.asarray(attrs["times"], dtype=float)
    if len(times) != ds.shape[0] or not math.isclose(times[-1], pt.presentation, rel_tol=1e-9, abs_tol=1e-12):
        raise RunFileError(f"{path}: {ds.name}: {ds.shape[0]} samples ending at {times[-1]:.6g} s, but the "
                           f"circuit's phases last {pt.presentation:.6g} s; expected samples over one presentation")
    if "trials" in attrs and not np.array_equal(np.asarray(attrs["trials"]), pt.recorded):
        raise RunFileError(f"{path}: {ds.name}: attribute 'trials' {list(attrs['trials'])} differs from the "
                           f"protocol's recorded trials {list(pt.recorded)}")
    return times


def _check_columns(path: Path, ds: h5py.Dataset, pt: Point) -> None:
    expected = len(pt.recorded) * pt.batch
    if ds.ndim != 3 or ds.shape[1] != expected:
        raise RunFileError(f"{path}: {ds.name} has shape {list(ds.shape)}; expected [time, {expected} examples "
                           f"({len(pt.recorded)} recorded trials x {pt.batch}), neuron]")


# ------------------------------------------------------------------ equations and units


def _model(pt: Point):
    """The point's continuous-time model (its populations' equations, their units)."""
    from ..dynamics.model import build_model

    return build_model(pt.circuit, _input_size(pt))


def _input_size(pt: Point) -> int:
    """The input population's size: from the first weights or input traces when the file has
    them, else the dataset's (it sizes only the input population, whose equation is `h : 1`)."""
    from ..data import DATASETS

    W1 = pt.group.get("weights/W1")
    if W1 is not None:
        return int(W1.shape[1])
    if "traces/input/h" in pt.group:
        return int(pt.group["traces/input/h"].shape[-1])
    d = pt.circuit.data
    return d.synthetic.n_inputs if d.dataset == "synthetic" else math.prod(DATASETS[d.dataset].input_shape)


def definitions(equations: str) -> dict[str, tuple[str, str]]:
    """name -> (its line, its unit) for every name brian2 equations define."""
    out = {}
    for line in equations.splitlines():
        lhs, colon, unit = line.rpartition(":")
        m = re.match(r"\s*(?:d(\w+)/dt|(\w+))\s*(?:=|$)", lhs)
        if colon and m:
            out[m.group(1) or m.group(2)] = (line.strip(), re.sub(r"\(.*\)", "", unit).strip())
    return out


def _lines(defs: dict, name: str) -> list[str]:
    """The line defining `name`, and that of its rate if it is a state variable."""
    if name not in defs:
        return []
    line = defs[name][0]
    rate = re.match(rf"d{name}/dt\s*=\s*(\w+)\s*:", line)
    return [line] + ([defs[rate.group(1)][0]] if rate and rate.group(1) in defs else [])


def _resolved(var: str) -> str:
    from ..dynamics.spec import ALIASES

    return ALIASES.get(var, var)


def _unit(pt: Point, pop: str, var: str, fallback: str) -> str:
    """The unit the model's equations declare (`Model.unit`), else the file's."""
    try:
        return pt.model.unit(pop, var)
    except ConfigError:  # a variable the model does not know: the run file's word
        return si_unit(fallback or "n.a.")


def _equations(pt: Point, pop: str) -> str:
    return pt.model.populations[pop].equations if pop in pt.model.populations else ""


def describe(pt: Point, pop: str, var: str) -> str:
    defs = definitions(_equations(pt, pop))
    lines = _lines(defs, "h") + _lines(defs, "tgt") if var == "r" else _lines(defs, _resolved(var))
    what = MEANING.get(var, "user-defined variable")
    text = f"Population {pop}, variable {var} ({what}) of biotp's continuous-time model"
    if pop == "input":
        text += "; the input population holds the presented stimulus"
    if lines:
        text += ". Equations (brian2 syntax): " + "; ".join(lines)
    return text + "."


# brian2 writes units by name; NWB readers expect SI symbols
_SYMBOLS = {"second": "s", "volt": "V", "amp": "A", "ampere": "A", "siemens": "S", "farad": "F", "ohm": "ohm",
            "hertz": "Hz", "metre": "m", "meter": "m", "kilogram": "kg", "gram": "g", "mole": "mol", "kelvin": "K",
            "candela": "cd", "radian": "rad", "coulomb": "C", "joule": "J", "watt": "W", "newton": "N"}


def si_unit(text: str) -> str:
    """A brian2 unit text in SI symbols ('1/second' -> '1/s'); '1' is dimensionless."""
    return re.sub(r"[A-Za-z]+", lambda m: _SYMBOLS.get(m.group(0), m.group(0)), str(text).strip()) or "n.a."


# ------------------------------------------------------------------ the presented examples


def presented(source: Source, pt: Point) -> dict[str, np.ndarray]:
    """{'index', 'label'}: each trial's examples [trial, batch] as indices into the dataset
    split they came from, and their labels (/stream of a simulate file, /points/pNNN/stimuli
    of a protocol point); only those the file has, since older files have neither."""
    group = pt.group.get("stream" if pt.protocol is None else "stimuli", {})
    out = {}
    for name in ("index", "label"):
        if name not in group:
            continue
        ds = group[name]
        if ds.size != pt.n_trials * pt.batch:
            raise RunFileError(f"{source.path}: {ds.name} has shape {list(ds.shape)}; expected {pt.n_trials} "
                               f"trials x {pt.batch} examples")
        out[name] = np.asarray(ds[()], dtype=np.int64).reshape(pt.n_trials, pt.batch)
    return out


# ------------------------------------------------------------------ per-trial protocol values


def intervention_text(index: int, iv) -> str:
    """'1 beta value=0.3 (during all)': an intervention and its parameters, no braces."""
    params = iv.model_dump(mode="json", exclude={"kind", "phases", "window", "during"})
    return f"{index} {iv.kind} " + " ".join(f"{k}={json.dumps(v)}" for k, v in params.items()) + \
        f" (during {iv.during})"


def beta_in_force(pt: Point, active) -> float:
    """β of the output target on a trial: the last active beta intervention's, else the circuit's."""
    return next((iv.value for _, iv in reversed(active) if iv.kind == "beta"), pt.circuit.dynamics.target.beta)


__all__ = ["EXPECTED", "Point", "Source", "Trace", "dataset", "presented", "read_source", "residuals", "traces"]
