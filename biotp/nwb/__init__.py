"""NWB export: a run file of `biotp simulate` or `biotp run` as a Neurodata Without Borders
file (`biotp export RUN.h5 --nwb OUT.nwb`, or `--nwb` on those two commands).

Session time: trial k of a point starts at offset + k T (T: forward + target phase, plus a
protocol's inter-trial blank); a simulate stream's examples are trials one after another
(examples presented side by side, independent without plasticity, are laid out in turn); a
sweep's points follow each other, each from the same initial network.

  /acquisition/<pop>_<var>    TimeSeries of each recorded variable, the recorded trials one
                              after another: row k·n + j is sample j of the k-th recorded
                              trial (n samples per trial); columns [example,] neuron.  Back to
                              biotp's [time, example, neuron]:
                                data.reshape(trials, n, batch, neurons).swapaxes(0, 1).reshape(n, -1, neurons)
  /stimulus/input_h           the presented inputs, when the input population was recorded
  /intervals/trials           start/stop, target_onset_time, presentation_stop_time,
                              presentation_index, example_index and label (the dataset
                              index and label of the presented example; [trial, example]
                              with batch > 1), recorded; simulate: settling steps and
                              residuals; protocol: point, phase, beta, interventions
  /intervals/phases           a protocol's phases; /intervals/interventions their windows
  /processing/evaluation      evaluations (one row per evaluation; simulate: before/after) and
                              summary tables
  /processing/settling        residual_forward, residual_target (protocols recording residuals)
  /processing/weights         forward.layer<l>: the weights at the end of each point
  general                     notes: root attributes and the circuit YAML; protocol: the
                              protocol YAML; source_script: the command; was_generated_by
In a sweep every per-point name starts with the point's key (p001_layer1_h).  Run files
written before /stream (simulate) and /points/pNNN/stimuli (protocol) existed do not name the
presented examples: their export has no example_index or label column.  The presented images
themselves are exported only as the input population's trace: record `input: [h]`.
"""

from __future__ import annotations

import datetime
from pathlib import Path

import numpy as np

from ..errors import BiotpError, RunFileError
from ..runs import atomic_output, attributes, run_file, version
from .source import (EXPECTED, Point, Source, Trace, beta_in_force, dataset, intervention_text, presented,
                     read_source, residuals, traces)

# run-file dataset -> trials column: the presented examples, when the run file names them
PRESENTED = {"index": ("example_index", "index of the presented example in the dataset split it was drawn from "
                                        "(general/stimulus_notes names dataset and split)"),
             "label": ("label", "label of the presented example")}
SYNTHETIC_CONSTRUCT = "http://purl.obolibrary.org/obo/NCBITaxon_32630"  # NCBI taxonomy: "synthetic construct"


def check_output(out: str | Path, force: bool = False, run: str | Path | None = None) -> Path:
    """The NWB output path, refused (before any work) if it exists without `force` or would
    replace the run file being exported."""
    out = Path(out)
    if run is not None and out.resolve() == Path(run).resolve():
        raise BiotpError(f"{out}: is the run file being exported; choose another output path")
    if out.exists() and not force:
        raise BiotpError(f"{out}: exists; choose another path or pass --force to overwrite it")
    return out


def export_nwb(run: str | Path, out: str | Path, *, force: bool = False) -> Path:
    """Write the run file `run` (of `biotp simulate` or `biotp run`) as the NWB file `out`,
    atomically; traces are copied piecewise, chunked and gzip-compressed.  RunFileError if
    `run` is not such a file."""
    from pynwb import NWBHDF5IO

    run, out = Path(run), check_output(out, force, run)
    with run_file(run, EXPECTED) as f:
        source = read_source(run, f)
        nwbfile = _nwbfile(source)
        with atomic_output(out, keep_suffix=True) as tmp:
            with NWBHDF5IO(str(tmp), "w") as io:
                io.write(nwbfile)
    return out


# ------------------------------------------------------------------ metadata


def _nwbfile(source: Source):
    from pynwb import NWBFile
    from pynwb.file import Subject

    a, circuit = source.attrs, source.circuit
    try:
        start = datetime.datetime.fromisoformat(a["created"])
    except ValueError:
        raise RunFileError(f"{source.path}: root attribute 'created' is {a['created']!r}; expected an ISO 8601 "
                           "time") from None
    if start.tzinfo is None:
        start = start.replace(tzinfo=datetime.timezone.utc)
    pts = source.points
    n_trials = sum(pt.n_trials for pt in pts)
    if source.kind == "simulate":
        what = (f"biotp simulate: circuit {circuit.name!r} ({a.get('backend', '?')} engine), a stream of "
                f"{n_trials} examples")
        described = circuit.description
    else:
        p = pts[0].protocol
        what = (f"biotp run: protocol {p.name!r} on circuit {circuit.name!r} ({a.get('engine', '?')} engine), "
                f"{len(pts)} point(s), {n_trials} trials")
        described = f"{p.description} (circuit: {circuit.description})" if p.description else circuit.description
    root = "\n".join(f"{k}: {v}" for k, v in a.items() if not str(k).endswith("_yaml"))
    subject = Subject(
        subject_id=f"{circuit.name}-seed{a.get('seed', circuit.seed)}", species=SYNTHETIC_CONSTRUCT, sex="O",
        age="P0D", age__reference="birth",
        description=f"Simulated data: no animal. The subject is biotp's continuous-time model of circuit "
                    f"{circuit.name!r}, initialised from seed {a.get('seed', circuit.seed)} when the session "
                    "started (age P0D); species is NCBI's 'synthetic construct', sex 'O' (not applicable).")
    nwbfile = NWBFile(
        session_description=what, identifier=source.identifier(), session_start_time=start,
        session_id=source.path.stem, experiment_description=described or what,
        keywords=["simulation", "target propagation", "biotp", source.kind],
        notes=f"Simulated with biotp (target-propagation circuits). Root attributes of the run file "
              f"{source.path.name}:\n{root}\n\ncircuit YAML:\n{a['circuit_yaml']}",
        protocol=a.get("protocol_yaml"),
        source_script=a["command"], source_script_file_name="biotp",
        was_generated_by=[["biotp", str(a["biotp_version"])], ["biotp (NWB export)", version()]],
        data_collection=_layout_note(source), stimulus_notes=_stimulus_note(source),
        subject=subject, trials=_trials(source))
    for table in (_phases(source), _interventions(source)):
        if table is not None:
            nwbfile.add_time_intervals(table)
    for pt in pts:
        _add_point(nwbfile, source, pt)
    return nwbfile


def _layout_note(source: Source) -> str:
    spec = source.points[0].circuit.dynamics
    return (f"Continuous-time simulation sampled every {spec.record_every * spec.dt:.6g} s. "
            "Each trace TimeSeries holds the recorded trials one after another: row k*n + j is sample j (of n per "
            "trial) of the k-th recorded trial, at session time onset + j*sampling interval; the trials table "
            "says which trials were recorded. Trials follow each other on the session time axis"
            + (", sweep points one after another, each from the same initial network." if len(source.points) > 1
               else ".") + " Exported by biotp " + version() + ".")


def _stimulus_note(source: Source) -> str:
    pt = source.points[0]
    d = pt.circuit.data
    index = pt.group.get("stream/index")
    if pt.protocol is None and index is not None and attributes(index).get("split") == "given":
        which = f"a stream of {pt.n_trials} examples passed to biotp.simulate (example_index: their position)"
    elif pt.protocol is None:
        which = f"a stream of {pt.n_trials} shuffled training examples of {d.dataset}, one per trial"
    else:
        s = pt.protocol.stimuli
        which = f"{s.order} examples of the {s.split} split of {d.dataset}, {s.batch} side by side per trial"
    return (f"Stimuli: {which}; each is clamped on the input population for the forward and the target phase. "
            "The presented inputs are under /stimulus when the input population was recorded. The trials "
            "table's example_index (when present) indexes that split as biotp.data.load returns it with the "
            "circuit's data.val_split, data.limit and seed.")


# ------------------------------------------------------------------ intervals


def _table(cls, name: str, description: str, columns: list[tuple[str, str, object]]):
    """A DynamicTable (or TimeIntervals) built column by column: [(name, description, data)]."""
    from hdmf.common import VectorData

    return cls(name=name, description=description,
               columns=[VectorData(name=n, description=d, data=np.asarray(v)) for n, d, v in columns])


def _trials(source: Source):
    from pynwb.epoch import TimeIntervals

    columns: dict[str, tuple[str, list]] = {}

    def add(name: str, description: str, values) -> None:
        columns.setdefault(name, (description, []))[1].append(np.asarray(values))

    shown = [presented(source, pt) for pt in source.points]
    width = max(pt.batch for pt in source.points)
    for i, pt in enumerate(source.points):
        k = np.arange(pt.n_trials)
        onset = pt.onsets(k)
        add("start_time", "trial onset (s): the forward phase starts", onset)
        add("stop_time", "end of the trial (s), after the target phase and any inter-trial blank",
            onset + pt.trial_time)
        add("target_onset_time", "end of the forward phase: the targets' onset and the target phase (s)",
            onset + pt.forward_phase)
        add("presentation_stop_time", "end of the target phase (s); the input is blank from here to stop_time",
            onset + pt.presentation)
        add("presentation_index", "index of the trial's first example in presentation order (the trial shows "
                                  "examples presentation_index ... presentation_index + batch - 1)", k * pt.batch)
        for name, (column, description) in PRESENTED.items():
            if all(name in s for s in shown):  # older run files: no such column
                values = np.pad(shown[i][name], ((0, 0), (0, width - pt.batch)), constant_values=-1)
                add(column, description + (f" ([trial, example]: {width} per trial, -1 past a point's batch)"
                                           if width > 1 else ""), values if width > 1 else values[:, 0])
        add("recorded", "whether the trial's traces were recorded", np.isin(k, pt.recorded))
        if pt.protocol is None:
            _settling_columns(source, pt, add)
        else:
            _protocol_columns(pt, add)
    return _table(TimeIntervals, "trials", f"{source.kind} trials, in session time order",
                  [(n, d, np.concatenate(v)) for n, (d, v) in columns.items()])


def _settling_columns(source: Source, pt: Point, add) -> None:
    """A simulate stream's per-example settling statistics (/settling)."""
    n_layers = pt.model.L
    text = {"forward_steps": "integration steps of the forward phase",
            "target_steps": "integration steps of the target phase",
            "forward_residual": f"‖dy_l/dt‖ (1/s) per layer l = 1..{n_layers} at the end of the forward phase",
            "target_residual": f"‖dy_l/dt‖ (1/s) per layer l = 1..{n_layers} at the end of the target phase"}
    for name, description in text.items():
        values = dataset(source.path, pt.group, f"settling/{name}")[()]
        if len(values) != pt.n_trials:
            raise RunFileError(f"{source.path}: /settling/{name} has {len(values)} rows; expected one per example "
                               f"({pt.n_trials}, /summary/examples)")
        add(name, description, values)


def _protocol_columns(pt: Point, add) -> None:
    timeline = pt.timeline()
    k = range(pt.n_trials)
    active = [timeline.active(i) for i in k]
    add("point", "index of the sweep point (0 without a sweep)", np.full(pt.n_trials, pt.index))
    add("phase", "name of the protocol phase the trial belongs to ('all' without phases)",
        np.array([timeline.phase_of[i] for i in k], dtype=object))
    add("beta", "β of the output target in force (a beta intervention's, else dynamics.target.beta; "
                "unused by a clamped target)", np.array([beta_in_force(pt, a) for a in active], dtype=float))
    add("interventions", "interventions acting on the trial: index, kind, parameters (and the part of the "
                         "trial); empty if none",
        np.array(["; ".join(intervention_text(i, iv) for i, iv in a) for a in active], dtype=object))


def _phases(source: Source):
    from pynwb.epoch import TimeIntervals

    rows = []
    for pt in source.points:
        if pt.protocol is None:
            continue
        first = 0
        for ph in pt.protocol.phases:
            rows.append((pt.onsets(first), pt.onsets(first + ph.trials), ph.name, pt.index, ph.trials))
            first += ph.trials
    if not rows:
        return None
    start, stop, name, point, n = zip(*rows)
    return _table(TimeIntervals, "phases", "the protocol's phases: named blocks of consecutive trials",
                  [("start_time", "onset of the phase's first trial (s)", start),
                   ("stop_time", "end of the phase's last trial (s)", stop),
                   ("phase", "the phase's name", np.array(name, dtype=object)),
                   ("point", "index of the sweep point", point), ("trials", "number of trials", n)])


def _interventions(source: Source):
    """One row per run of consecutive trials an intervention acts on."""
    from pynwb.epoch import TimeIntervals

    rows = []
    for pt in source.points:
        if pt.protocol is None or not pt.protocol.interventions:
            continue
        timeline = pt.timeline()
        active = [{i for i, _ in timeline.active(k)} for k in range(pt.n_trials)]
        for i, iv in enumerate(pt.protocol.interventions):
            covered = np.array([i in trial for trial in active], dtype=int)
            edges = np.diff(np.concatenate([[0], covered, [0]]))
            for first, end in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)):
                rows.append((pt.onsets(first), pt.onsets(end), i, iv.kind, intervention_text(i, iv), iv.during,
                             pt.index))
    if not rows:
        return None
    rows.sort(key=lambda r: (r[6], r[0], r[2]))
    start, stop, index, kind, text, during, point = zip(*rows)
    return _table(TimeIntervals, "interventions", "windows of consecutive trials each intervention acts on "
                  "(during: the part of each trial)",
                  [("start_time", "onset of the first trial covered (s)", start),
                   ("stop_time", "end of the last trial covered (s)", stop),
                   ("intervention", "index in the protocol's interventions", index),
                   ("kind", "clamp, silence, lesion, block_plasticity, noise or beta", np.array(kind, dtype=object)),
                   ("parameters", "the intervention with its parameters", np.array(text, dtype=object)),
                   ("during", "forward, target or all of each trial", np.array(during, dtype=object)),
                   ("point", "index of the sweep point", point)])


# ------------------------------------------------------------------ a point's data


def _add_point(nwbfile, source: Source, pt: Point) -> None:
    linked: dict = {}  # series with the same time axis share one timestamps dataset
    for tr in traces(source, pt):
        series = _series(pt, tr, f"{pt.prefix}{tr.population}_{tr.variable}", linked)
        (nwbfile.add_stimulus if tr.population == "input" else nwbfile.add_acquisition)(series)
    residual = residuals(source, pt)
    if residual:
        module = _module(nwbfile, "settling", "how the populations settle: residuals per layer")
        for tr in residual:
            module.add(_series(pt, tr, f"{pt.prefix}residual_{tr.variable}", linked))
    module = _module(nwbfile, "evaluation", "held-out error and loss, weight changes and angles over trials")
    module.add(_evaluations(source, pt))
    if "summary" in pt.group:
        module.add(_summary(pt))
    if "weights" in pt.group:
        module = _module(nwbfile, "weights", "synaptic weights w[post, pre] by projection")
        for table in _weights(source, pt):
            module.add(table)


def _module(nwbfile, name: str, description: str):
    return nwbfile.processing[name] if name in nwbfile.processing else \
        nwbfile.create_processing_module(name=name, description=description)


def _series(pt: Point, tr: Trace, name: str, linked: dict):
    """A trace as a TimeSeries on the session time axis: starting_time and rate when its
    samples are evenly spaced, else timestamps (linked to an earlier series with the same)."""
    from hdmf.backends.hdf5.h5_utils import H5DataIO
    from pynwb import TimeSeries

    stamps = (pt.onsets(pt.recorded)[:, None] + tr.shift + tr.times[None, :]).ravel()
    steps = np.unique(np.diff(stamps).round(9))
    if len(stamps) > 2 and len(steps) == 1 and steps[0] > 0:
        axis = {"starting_time": float(stamps[0]), "rate": 1.0 / float(steps[0])}
    else:
        axis = {"timestamps": linked.get(stamps.tobytes())
                or H5DataIO(stamps, compression="gzip", compression_opts=4)}
    series = TimeSeries(name=name, description=tr.description, unit=tr.unit, data=_chunked(tr.data, pt.batch),
                        **axis)
    if "timestamps" in axis:
        linked.setdefault(stamps.tobytes(), series)
    return series


def _evaluations(source: Source, pt: Point):
    from hdmf.common import DynamicTable

    if pt.protocol is None:  # a stream: before and after, from its summary
        s = {k: dataset(source.path, pt.group, f"summary/{k}")[()]
             for k in ("error_before", "error_after", "loss_before", "loss_after")}
        columns = [("trial", "trials completed", np.array([0, pt.n_trials])),
                   ("time", "session time of the evaluation (s)", pt.onsets([0, pt.n_trials])),
                   ("test_error", "fraction of misclassified test examples (settled network)",
                    np.array([s["error_before"], s["error_after"]], dtype=float)),
                   ("test_loss", "loss on the test examples", np.array([s["loss_before"], s["loss_after"]],
                                                                        dtype=float))]
        return _table(DynamicTable, f"{pt.prefix}evaluations", "the test error before and after the stream",
                      columns)
    if "metrics" not in pt.group:
        raise RunFileError(f"{source.path}: {pt.group.name}/metrics is missing; expected one row per evaluation")
    m = {k: pt.group["metrics"][k][()] for k in pt.group["metrics"]}
    names = [ph.name for ph in pt.protocol.phases] or ["all"]
    columns = []
    for name, values in m.items():
        if name == "time":
            values = pt.offset + values
        columns.append((name, _metric_text(name), values))
    if "phase" in m:
        columns.append(("phase_name", "name of the phase of the last trial before the evaluation",
                        np.array([names[int(i)] for i in m["phase"]], dtype=object)))
    return _table(DynamicTable, f"{pt.prefix}evaluations", f"evaluations of point {pt.label!r} "
                  f"(every {pt.protocol.evaluate.every or pt.n_trials} trials on {pt.protocol.evaluate.split})",
                  columns)


METRICS = {"trial": "trials completed before the evaluation", "time": "session time of the evaluation (s)",
           "phase": "index of the phase (in the protocol's phases) of the last trial before the evaluation",
           "test_error": "fraction of misclassified held-out examples (settled network)",
           "test_loss": "loss on the held-out examples", "reference_test_error":
           "test error of the discrete reference rule run beside the continuous one"}
PER_LAYER = {"dW_layer": "‖ΔW_l‖ (Frobenius) of the forward weights into layer {l} since the previous evaluation",
             "angle_layer": "mean angle (degrees) between the continuous and the discrete reference update of "
                            "layer {l} since the previous evaluation",
             "distance_layer": "mean ‖ΔW_cont − ΔW_disc‖/‖ΔW_disc‖ of layer {l} since the previous evaluation"}


def _metric_text(name: str) -> str:
    for prefix, text in PER_LAYER.items():
        if name.startswith(prefix) and name[len(prefix):].isdigit():
            return text.format(l=name[len(prefix):])
    return METRICS.get(name, f"biotp metric {name}")


def _summary(pt: Point):
    from hdmf.common import DynamicTable

    group = pt.group["summary"]
    return _table(DynamicTable, f"{pt.prefix}summary", "the run's summary scalars (one row)",
                  [(k, f"summary value {k}", np.asarray(group[k][()]).reshape(1)) for k in group])


def _weights(source: Source, pt: Point) -> list:
    """One table per projection: rows are snapshots (time, weights[post, pre])."""
    from hdmf.common import DynamicTable

    out = []
    kinds = {"W": ("forward", "into layer {l} from layer {pre}"), "V": ("feedback", "of g_{l}, layer {l} to {pre}")}
    for key in pt.group["weights"]:
        ds = pt.group["weights"][key]
        if key[:1] not in kinds or not key[1:].isdigit() or ds.ndim != 2:
            raise RunFileError(f"{source.path}: {ds.name}: expected weights named W<l> or V<l>, 2-D [post, pre]")
        l = int(key[1:])
        kind, text = kinds[key[0]]
        out.append(_table(DynamicTable, f"{pt.prefix}{kind}.layer{l}",
                          f"{kind} weights {text.format(l=l, pre=f'layer{l - 1}' if l > 1 else 'input')} "
                          "(dimensionless), at the end of the point",
                          [("time", "session time of the snapshot (s)", pt.onsets([pt.n_trials])),
                           ("weights", f"w[post, pre], {ds.shape[0]} x {ds.shape[1]}", ds[()][None])]))
    return out


def _chunked(trace, batch: int):
    from hdmf.backends.hdf5.h5_utils import H5DataIO

    from .chunks import TrialMajor

    return H5DataIO(TrialMajor(trace, batch), compression="gzip", compression_opts=4)


__all__ = ["check_output", "export_nwb"]
