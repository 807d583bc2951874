"""A protocol's results: the run file's tree, the ProtocolRun returned, resuming a file.

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
      stimuli/index     [trial, example] int64: each trial's examples as indices into the
                        stimuli split (attrs dataset, split); absent in older files
      stimuli/label     [trial, example] int64: their labels
      summary/<name>    scalars
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from ..errors import BiotpError
from ..runs import ATTRS, Leaf, open_run, run_attrs
from .schema import Protocol
from .sweep import Point


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


# ------------------------------------------------------------------ the run file


def file_attrs(protocol: Protocol, pts: list[Point], command: str | None) -> dict:
    """The run file's root attributes."""
    return run_attrs(pts[0].circuit, command, kind="protocol", protocol_yaml=protocol.to_yaml(),
                     protocol=protocol.name, engine=protocol.engine, circuits_sha256=circuits_hash(pts))


def circuits_hash(pts: list[Point]) -> str:
    """SHA-256 of every point's resolved circuit: a resumed file must have been started with
    the same circuits (the protocol names its circuit file, which may change between runs)."""
    digest = hashlib.sha256()
    for pt in pts:
        digest.update(pt.circuit.to_yaml().encode())
    return digest.hexdigest()


def finished_points(out: str | Path | None, attrs: dict) -> dict:
    """The points an existing run file `out` holds (none without one); it must have been
    written by the same protocol."""
    if out is None or not Path(out).exists():
        return {}
    previous = open_run(out)
    if previous.attrs.get("kind") != "protocol":
        raise BiotpError(f"{out}: exists and is not a protocol run file (attribute kind {previous.attrs.get('kind')!r}); "
                         f"choose another --out")
    if _results_part(previous.attrs.get("protocol_yaml")) != _results_part(attrs["protocol_yaml"]):
        raise BiotpError(f"{out}: exists and holds another protocol (or other settings); "
                         "choose another --out or remove the file")
    stored = previous.attrs.get("circuits_sha256")
    same = stored == attrs["circuits_sha256"] if stored is not None else \
        previous.attrs.get("circuit_yaml") == attrs["circuit_yaml"]  # files written before the hash: the first point's
    if not same:
        changed = _changed_fields(previous.attrs.get("circuit_yaml"), attrs["circuit_yaml"])
        raise BiotpError(f"{out}: was started with another circuit (the circuit file or its overrides changed since"
                         f"{': ' + changed if changed else ''}); a resumed protocol keeps its circuit. Choose another "
                         f"--out, or restore the circuit")
    return previous.groups.get("points", {})


def _changed_fields(stored_yaml: str | None, given_yaml: str) -> str:
    """'key: stored -> given' for the circuit fields that differ (at most five)."""
    from ..runs import _flat

    a, b = _flat(yaml.safe_load(stored_yaml or "{}") or {}), _flat(yaml.safe_load(given_yaml) or {})
    diff = [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    return "; ".join(diff[:5]) + (f"; and {len(diff) - 5} more" if len(diff) > 5 else "")


def _results_part(protocol_yaml: str | None):
    """The protocol as far as it decides the results: its summary figure aside."""
    data = yaml.safe_load(protocol_yaml) if protocol_yaml else None
    if isinstance(data, dict):
        data.pop("figure", None)
    return data


def point_group(pt: Point, tree: dict) -> dict:
    """A point's group: its parameters and label as attributes, then its results."""
    return {ATTRS: {"params": json.dumps(pt.params), "label": pt.label}, **tree}


# ----------------------------------------------------- one continuous point's tree


def point_tree(protocol: Protocol, spec, weights: list, metrics, traces, recorded, wall, unit,
               stimuli=None) -> dict:
    """The tree of one point run on the torch or brian2 engine: metrics rows, traces of the
    recorded trials, residuals, the final forward weights `weights` (W_1 ... W_L), the
    presented examples `stimuli` (a `stimuli_tree`), summary.  `unit(pop, var)` is a trace's
    SI unit (`Model.unit`)."""
    n_f = spec.steps(spec.forward_phase)
    times = np.arange(0, n_f + spec.steps(spec.target_phase) + 1, spec.record_every) * spec.dt
    trials = np.array(sorted(recorded & set(range(protocol.trials))))
    tree: dict = {"metrics": {k: np.asarray(v, dtype=float) for k, v in metrics.items()}}
    tr, residual = _traces(protocol, traces, times, trials, spec.forward_phase, unit)
    if tr:
        tree["traces"] = tr
    if residual:
        tree["residual"] = _residual(residual, times, n_f // spec.record_every, spec.forward_phase)
    tree["weights"] = {f"W{l}": W.detach().cpu().numpy() for l, W in enumerate(weights, start=1)}
    if stimuli is not None:
        tree["stimuli"] = stimuli
    m = tree["metrics"]
    tree["summary"] = {"wall_time": np.asarray(wall), "trials": np.asarray(protocol.trials),
                       "final_test_error": np.asarray(m["test_error"][-1])}
    return tree


def stimuli_tree(protocol: Protocol, dataset: str, index, labels) -> dict:
    """/stimuli of a point: the presented examples' indices into the stimuli split and their
    labels, [trial, example], so an export can name what each trial showed."""
    shape = (protocol.trials, protocol.stimuli.batch)
    attrs = {"dataset": dataset, "split": protocol.stimuli.split, "dims": "trial, example"}
    return {"index": Leaf(np.asarray(index, dtype=np.int64).reshape(shape), attrs),
            "label": Leaf(np.asarray(labels, dtype=np.int64).reshape(shape), {"dims": "trial, example"})}


def _traces(protocol: Protocol, traces: dict, times, trials, forward_phase: float, unit) -> tuple[dict, dict]:
    """The recorded traces {pop: {var: Leaf}}, and the residual ‖dy_l/dt‖ per layer l; `forward_phase`
    (s, where the target phase starts) goes with them, for the figures' phase switch."""
    tr: dict = {}
    residual = {}
    for (pop, var), parts in traces.items():
        arr = np.concatenate(parts, axis=1)
        if var == "r":
            residual[int(pop.removeprefix("layer"))] = arr[..., 0]
            if pop not in protocol.record.populations or var not in protocol.record.populations[pop]:
                continue
        tr.setdefault(pop, {})[var] = Leaf(arr, {"times": times, "trials": trials, "time_unit": "s",
                                                 "unit": unit(pop, var), "dims": "time, example, neuron",
                                                 "forward_phase": forward_phase})
    return tr, residual


def _residual(residual: dict, times, split: int, forward_phase: float) -> dict:
    """The residuals [time, example, layer], split into the forward and the target phase."""
    stack = np.stack([residual[l] for l in sorted(residual)], axis=-1)  # [time, example, layer]
    layers = np.array(sorted(residual))
    return {
        "forward": Leaf(stack[:split], {"times": times[:split], "layers": layers, "unit": "1/s"}),
        "target": Leaf(stack[split:], {"times": times[split:] - times[split], "layers": layers, "unit": "1/s",
                                       "forward_phase": forward_phase}),
    }
