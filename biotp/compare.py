"""`biotp compare`: several learning rules trained on one circuit, data and seed, in one file.

Every rule starts from the same forward weights: `Network` fills them from a generator
seeded by the circuit's seed, before any feedback module or rule-specific random matrix is
drawn, so `circuit.with_algorithm(name)` changes the rule and nothing else (tested in
tests/test_compare.py).  Each rule is trained by `biotp.training.train`; the comparison
file is rewritten atomically after each rule finishes:

  /                       attrs: kind="compare", algorithms (comma-joined, in order; the
                          finished ones have a /runs group), circuit_yaml, biotp_version,
                          seed, command, created
  /runs/<alg>/metrics/    as a train run file's /metrics (epoch, train_loss, ..., angle_layer<l>)
  /runs/<alg>/checkpoint/ as a train run file's /checkpoint
  /table/<column>         one row per rule: algorithm, epochs, final_test_error,
                          best_val_test_error, seconds_per_epoch, ratio_to_bp, angle_layer<l>

While a rule trains, its epochs go to `<out stem>.<alg>.partial.h5` beside the comparison
file (an ordinary train run file).  Run the same command again after an interruption:
rules complete in the file are skipped, a rule with a partial file continues from its last
checkpoint, and a larger `--epochs` extends the finished rules from their checkpoints.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from .circuit import Circuit, load_circuit, parse_circuit
from .errors import BiotpError
from .runs import check_same_circuit, claim, open_run, release, run_attrs, write_run
from .training import train

TABLE_COLUMNS = ("algorithm", "epochs", "final_test_error", "best_val_test_error", "seconds_per_epoch", "ratio_to_bp")


@dataclass
class Comparison:
    """Rules trained side by side: per-rule metrics (arrays per epoch) and the summary table."""

    algorithms: list[str]
    runs: dict[str, dict[str, np.ndarray]]  # algorithm -> metric name -> per-epoch values
    table: dict[str, np.ndarray] = field(default_factory=dict)
    attrs: dict = field(default_factory=dict)
    path: Path | None = None

    def markdown(self) -> str:
        """The table as Markdown: errors in %, seconds per epoch, angles to BP in degrees."""
        return markdown_table(self.table)


def summary_table(algorithms: list[str], runs: dict[str, dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """One row per rule: epochs trained, final test error, test error at the epoch of lowest
    validation error, seconds per epoch (the median over epochs: the first epoch of a process
    carries one-off start-up costs) and its ratio to BP's, final angle to BP per layer."""
    angles = sorted({k for m in runs.values() for k in m if k.startswith("angle_")}, key=_layer_order)
    rows = []
    for alg in algorithms:
        m = runs[alg]
        val = np.asarray(m.get("val_error", []), dtype=float)
        best = int(np.nanargmin(val)) if np.isfinite(val).any() else None
        rows.append({
            "epochs": int(m["epoch"][-1]),
            "final_test_error": float(m["test_error"][-1]),
            "best_val_test_error": float(m["test_error"][best]) if best is not None else math.nan,
            "seconds_per_epoch": float(np.median(m["seconds"])),
            **{a: float(m[a][-1]) if a in m else math.nan for a in angles},
        })
    bp = rows[algorithms.index("bp")]["seconds_per_epoch"] if "bp" in algorithms else math.nan
    for row in rows:
        row["ratio_to_bp"] = row["seconds_per_epoch"] / bp
    table = {"algorithm": np.array([a.encode() for a in algorithms], dtype=bytes)}
    for col in (*TABLE_COLUMNS[1:], *angles):
        table[col] = np.array([row[col] for row in rows], dtype=int if col == "epochs" else float)
    return table


def _layer_order(name: str):
    digits = "".join(c for c in name if c.isdigit())
    return (name.rstrip("0123456789"), int(digits) if digits else 0)


def markdown_table(table: dict[str, np.ndarray]) -> str:
    names = {"algorithm": "rule", "epochs": "epochs", "final_test_error": "test error % (final)",
             "best_val_test_error": "test error % (best val)", "seconds_per_epoch": "s/epoch",
             "ratio_to_bp": "× bp"}
    cols = list(table)
    header = [names.get(c, c.replace("angle_", "angle ") + " (°)") for c in cols]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" if c == "algorithm" else "---:" for c in cols) + "|"]
    for i in range(len(table["algorithm"])):
        cells = []
        for c in cols:
            v = table[c][i]
            if c == "algorithm":
                cells.append(v.decode() if isinstance(v, bytes) else str(v))
            elif c == "epochs":
                cells.append(str(int(v)))
            elif not np.isfinite(v):
                cells.append("—")
            elif c.endswith("_error"):
                cells.append(f"{100 * v:.2f}")
            elif c == "seconds_per_epoch":
                cells.append(f"{v:.3g}")
            elif c == "ratio_to_bp":
                cells.append(f"{v:.2f}")
            else:
                cells.append(f"{v:.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def open_comparison(path: str | Path) -> Comparison:
    """Read a comparison file written by `compare`."""
    run = open_run(path)
    if run.attrs.get("kind") != "compare":
        raise BiotpError(f"{path}: attribute kind is {run.attrs.get('kind')!r}; expected 'compare' "
                         f"(a file written by `biotp compare`)")
    present = run.groups.get("runs", {})
    algorithms = [a for a in str(run.attrs.get("algorithms", "")).split(",") if a in present]  # finished rules, in order
    runs = {a: present[a]["metrics"] for a in algorithms}
    stored = run.groups.get("table", {})  # HDF5 lists columns by name: restore the table's order
    table = {c: stored[c] for c in sorted(stored, key=lambda c: ((TABLE_COLUMNS + (c,)).index(c), _layer_order(c)))}
    return Comparison(algorithms, runs, table, run.attrs, run.path)


def _partial_path(out: Path, algorithm: str) -> Path:
    return out.with_name(f"{out.stem}.{algorithm}.partial.h5")


def _check_same_circuit(stored_yaml: str, circuit: Circuit, path: Path) -> None:
    check_same_circuit(parse_circuit(yaml.safe_load(stored_yaml), f"{path}:/circuit_yaml"), circuit, path)


def compare(
    circuit: Circuit | str | Path,
    algorithms: list[str] | str,
    *,
    epochs: int | None = None,
    out: str | Path | None = None,
    data_dir=None,
    device: str | None = None,
    track_angles: bool = True,
    progress: bool = True,
    command: str | None = None,
) -> Comparison:
    """Train `circuit` once per rule in `algorithms` (same data, seed and initial forward
    weights) and return the comparison; with `out`, write (or resume) the comparison file."""
    if not isinstance(circuit, Circuit):
        circuit = load_circuit(circuit)
    if isinstance(algorithms, str):
        algorithms = [a.strip() for a in algorithms.split(",") if a.strip()]
    if not algorithms or len(set(algorithms)) != len(algorithms):
        raise BiotpError(f"compare: --algorithms {','.join(algorithms)!r}: expected a comma-separated list of distinct rules")
    if epochs is not None:
        circuit = circuit.with_updates(f"schedule.epochs={epochs}")
    rules = {a: circuit.with_algorithm(a) for a in algorithms}  # unknown names fail here, before any training
    total = circuit.schedule.epochs

    if out is None:
        runs = {a: train(c, data_dir=data_dir, device=device, track_angles=track_angles, progress=progress)
                for a, c in rules.items()}
        return Comparison(algorithms, runs, summary_table(algorithms, runs))

    out = Path(out)
    claim(out)  # before any work: a second writer of `out` is refused now
    done: dict[str, dict] = {}
    order = list(algorithms)
    if out.exists():
        previous = open_run(out)
        if previous.attrs.get("kind") != "compare":
            raise BiotpError(f"{out}: exists and is not a comparison file (kind {previous.attrs.get('kind')!r}); "
                             f"expected a comparison file (kind 'compare') to resume, or give another --out")
        _check_same_circuit(previous.attrs["circuit_yaml"], circuit, out)
        done = dict(previous.groups.get("runs", {}))
        stored = [a for a in str(previous.attrs.get("algorithms", "")).split(",") if a]
        order = stored + [a for a in algorithms if a not in stored]
    attrs = run_attrs(circuit, command, kind="compare", algorithms=",".join(order))
    if out.exists():
        attrs["created"] = previous.attrs.get("created", attrs["created"])  # when the comparison began

    def save() -> None:
        finished = [a for a in order if a in done]
        runs = {a: done[a]["metrics"] for a in finished}
        tree = {"runs": done}
        if finished:
            tree["table"] = summary_table(finished, runs)
        write_run(out, attrs, tree)

    save()  # the file carries the circuit from the start, so a resumed partial rule is checked against it
    for alg in algorithms:
        rule = rules[alg]
        partial = _partial_path(out, alg)
        kwargs = dict(data_dir=data_dir, device=device, track_angles=track_angles, progress=progress, command=command)
        if alg in done and done[alg]["metrics"]["epoch"][-1] >= total:
            if progress:
                print(f"{alg}: complete in {out}, skipped")
            continue
        if not partial.exists() and alg in done:  # extend a finished rule to more epochs
            write_run(partial, run_attrs(rule, command, kind="train", algorithm=alg),
                      {"metrics": done[alg]["metrics"], "checkpoint": done[alg]["checkpoint"]})
        if partial.exists():
            _check_same_circuit(open_run(partial).attrs["circuit_yaml"], rule, partial)
            run = train(rule, resume=partial, out=partial, epochs=total, **kwargs)
        else:
            run = train(rule, out=partial, **kwargs)
        done[alg] = {"metrics": run.metrics, "checkpoint": run.checkpoint}
        save()
        partial.unlink()
    release(out)
    return open_comparison(out)


# ------------------------------------------------------------------------------ CLI


__all__ = ["Comparison", "compare", "open_comparison", "summary_table", "markdown_table"]
