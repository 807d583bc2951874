"""Where a protocol's phases begin and where its interventions act, in trials, drawn on
any panel whose x axis is the trial: a labelled dashed line at each phase boundary, the
phase's name above its span, and a shaded band for each intervention window.

The boundaries come from the protocol the file was made by (the phases' trial counts), not
from the evaluation rows: those fall every `evaluate.every` trials and need not meet the
boundary.  Without the protocol (an older or foreign file), the `phase` column gives a
boundary at the last evaluation of the earlier phase.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import h5py
import numpy as np
from matplotlib.transforms import blended_transform_factory

from .context import protocol_of

BOUNDARY, WINDOW = "phase boundary", "intervention"  # gids of the drawn artists


@dataclass
class Layout:
    """Phases as (name, first trial, end trial) and intervention windows as (label, start, stop)."""

    phases: list[tuple[str, float, float]] = field(default_factory=list)
    windows: list[tuple[str, float, float]] = field(default_factory=list)

    @property
    def boundaries(self) -> list[float]:
        return [start for _, start, _ in self.phases[1:]]


def layout(group: h5py.Group) -> Layout:
    """The phase layout of a run-like group with a `trial` metrics column (empty otherwise)."""
    m = group.get("metrics")
    if not isinstance(m, h5py.Group) or "trial" not in m:
        return Layout()
    trials = np.asarray(m["trial"][()], dtype=float)
    protocol = protocol_of(group.file)
    if protocol is None or not protocol.phases:
        return _from_column(trials, m)
    ends = np.cumsum([ph.trials for ph in protocol.phases])
    starts = np.concatenate([[0], ends[:-1]])
    spans = {ph.name: (float(a), float(b)) for ph, a, b in zip(protocol.phases, starts, ends)}
    out = Layout(phases=[(name, a, b) for name, (a, b) in spans.items()])
    trial_time = _trial_time(trials, m)
    for iv in protocol.interventions:
        label = _intervention_label(iv)
        for name in iv.phases or []:
            out.windows.append((label, *spans[name]))
        if iv.window is not None and not iv.phases and trial_time:
            out.windows.append((label, iv.window[0] / trial_time, iv.window[1] / trial_time))
    return out


def _from_column(trials: np.ndarray, m: h5py.Group) -> Layout:
    if "phase" not in m or len(trials) < 2:
        return Layout()
    phase = np.asarray(m["phase"][()])
    cuts = [float(trials[k]) for k in np.flatnonzero(np.diff(phase) != 0)]
    edges = [0.0, *cuts, float(trials[-1])]
    return Layout(phases=[(f"phase {int(p)}", a, b) for p, a, b in zip(sorted(set(phase.tolist())), edges, edges[1:])])


def _trial_time(trials: np.ndarray, m: h5py.Group) -> float | None:
    """T, the protocol time per trial, from the rows' onsets (`time` = trial × T)."""
    if "time" not in m:
        return None
    times = np.asarray(m["time"][()], dtype=float)
    later = trials > 0
    return float(np.median(times[later] / trials[later])) if later.any() else None


def _intervention_label(iv) -> str:
    target = getattr(iv, "projection", None) or getattr(iv, "population", None)
    projections = getattr(iv, "projections", None)
    if projections is not None:
        target = "all projections" if projections == "all" else ", ".join(projections)
    during = f" ({iv.during} phase)" if iv.during != "all" else ""
    return f"{iv.kind.replace('_', ' ')}: {target}{during}" if target else f"{iv.kind}{during}"


def window_steps(x: np.ndarray, change: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) to draw with drawstyle steps-pre so that each row's change since the previous
    evaluation spans its window (x[k-1], x[k]]; row 0, before any trial, has no window."""
    change = np.asarray(change, dtype=float)
    return np.asarray(x, dtype=float), np.concatenate([change[1:2], change[1:]])


def mark(ax, lay: Layout, names: bool = True) -> None:
    """Draw the layout on `ax`: dashed lines at the boundaries, phase names at the top of
    their spans, shaded intervention windows (each label once in the legend)."""
    top = blended_transform_factory(ax.transData, ax.transAxes)
    for k, b in enumerate(lay.boundaries):
        ax.axvline(b, color="0.35", lw=0.9, ls="--", gid=BOUNDARY, label=BOUNDARY if k == 0 else "_")
    if names:
        for name, a, b in lay.phases:
            ax.text((a + b) / 2, 0.98, name, transform=top, ha="center", va="top", fontsize="small", color="0.3")
    labels = list(dict.fromkeys(label for label, _, _ in lay.windows))
    seen = set()
    for label, a, b in lay.windows:
        ax.axvspan(a, b, color=f"C{3 + labels.index(label) % 5}", alpha=0.12, lw=0, gid=WINDOW,
                   label=label if label not in seen else "_")
        seen.add(label)
