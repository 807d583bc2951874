"""What every figure needs: the Agg backend, the metrics of a group, per-layer columns,
figures with a grid of panels, and line styles that tell sources and columns apart."""

from __future__ import annotations

import re
from typing import Mapping

import h5py
import matplotlib

matplotlib.use("Agg")  # files only; never a window

import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

Sources = Mapping[str, h5py.Group]  # label -> a group laid out like a run (metrics/, traces/, residual/)

# seed 004's figures: train dashed, test solid
LINESTYLES = {"train": "--", "val": ":", "test": "-", "reference": "-."}


def as_sources(groups: h5py.Group | Sources, label: str = "") -> dict[str, h5py.Group]:
    """One group (a run root, a comparison's /runs/<rule>, a protocol's /points/<p>) or many."""
    return {label: groups} if isinstance(groups, h5py.Group) else dict(groups)


def metrics(group: h5py.Group) -> tuple[str, np.ndarray, dict[str, np.ndarray]]:
    """(x name, x values, the other 1-D columns) of group/metrics; x is `epoch`, else `trial`,
    else the row number."""
    m = group["metrics"]
    cols = {k: np.asarray(m[k][()], dtype=float) for k in m if isinstance(m[k], h5py.Dataset) and m[k].ndim == 1}
    for x in ("epoch", "trial"):
        if x in cols:
            return x, cols.pop(x), cols
    n = len(next(iter(cols.values()))) if cols else 0
    return "row", np.arange(1, n + 1, dtype=float), cols


def has_metrics(group: h5py.Group, pattern: str = ".") -> bool:
    if not isinstance(group.get("metrics"), h5py.Group):
        return False
    return any(re.search(pattern, k) for k in group["metrics"])


def layer_columns(columns, prefix: str) -> list[tuple[int, str]]:
    """[(l, "<prefix>_layer<l>")] present in `columns`, by layer number."""
    found = []
    for name in columns:
        match = re.fullmatch(rf"{prefix}_layer(\d+)", name)
        if match:
            found.append((int(match.group(1)), name))
    return sorted(found)


def panels(n: int, ncols: int = 3, size: tuple[float, float] = (4.2, 3.2), **kwargs) -> tuple[Figure, list]:
    """A figure with `n` panels on a grid of at most `ncols` columns (spare axes hidden)."""
    ncols = max(1, min(ncols, n))
    nrows = -(-n // ncols)
    fig = Figure(figsize=(size[0] * ncols, size[1] * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, **kwargs).ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, list(axes[:n])


def color(i: int) -> str:
    return f"C{i % 10}"


def column_style(column: str) -> str:
    return LINESTYLES.get(column.split("_")[0], "-")


OUTSIDE = dict(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, fontsize="small")


def legend(ax, **kwargs) -> None:
    """The axes' legend, right of the panel so that it never covers the data."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(**{**OUTSIDE, **kwargs})


def key_legend(ax, sources: list[str], columns: list[str]) -> None:
    """A compact legend for lines coloured by source and styled by column: one entry per
    source, and one per column when there are several columns to tell apart."""
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=color(i), label=name) for i, name in enumerate(sources)]
    if len(columns) > 1:
        handles += [Line2D([], [], color="0.3", ls=column_style(c), label=c) for c in columns]
    ax.legend(handles=handles, **OUTSIDE, ncols=2 if len(handles) > 12 else 1)


def note(ax, text: str, y: float = 0.5) -> None:
    """A sentence inside the panel saying why it looks as it does (e.g. zero by construction)."""
    import textwrap

    ax.text(0.5, y, textwrap.fill(text, 34), transform=ax.transAxes, ha="center", va="center", fontsize="small",
            color="0.25", bbox=dict(boxstyle="round", facecolor="white", edgecolor="0.8", alpha=0.9), gid="note")


def notes(ax) -> list[str]:
    """The notes `note` put in the panel (for tests and callers that check them)."""
    return [" ".join(t.get_text().split()) for t in ax.texts if t.get_gid() == "note"]


def informative(values) -> bool:
    """At least two finite values that are not all equal: a series worth a line."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    return len(v) >= 2 and bool(np.ptp(v) > 0)


def add_context(fig, context: str) -> None:
    """Put `context` (circuit, dataset, rules, seeds) under the figure's own title, and give
    epoch and trial axes whole-number ticks."""
    from matplotlib.ticker import MaxNLocator

    import textwrap

    own = fig._suptitle.get_text() if fig._suptitle is not None else ""
    context = textwrap.fill(context, max(40, int(13 * fig.get_figwidth())))  # ~13 characters an inch
    fig.suptitle("\n".join(t for t in (own, context) if t), fontsize="medium")
    for ax in fig.axes:
        if ax.get_xlabel() in ("epoch", "trial"):
            ax.xaxis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 2.5, 5, 10]))


def loss_label(group: h5py.Group, column: str = "loss") -> str:
    """`column` with its unit: nats for cross-entropy, else the loss's own."""
    import yaml

    try:
        loss = (yaml.safe_load(decode(group.file.attrs.get("circuit_yaml", ""))) or {}).get("loss")
    except yaml.YAMLError:
        loss = None
    unit = {"cross_entropy": "nats", "mse": "squared error"}.get(loss if isinstance(loss, str) else "", "a.u.")
    return f"{column} ({unit})"


def forward_phase(ds: h5py.Dataset) -> float | None:
    """When (s into a presentation) the target phase starts: the dataset's `forward_phase`
    attribute (protocol files), else the file's circuit (simulate files); None if unknown."""
    if "forward_phase" in ds.attrs:
        return float(ds.attrs["forward_phase"])
    circuit = circuit_of(ds.file)
    return circuit.dynamics.forward_phase if circuit is not None and circuit.dynamics is not None else None


def circuit_of(f: h5py.File):
    """The file's resolved circuit (root attribute circuit_yaml), or None."""
    import yaml

    from ..circuit import parse_circuit
    from ..errors import BiotpError

    text = decode(f.attrs.get("circuit_yaml", ""))
    try:
        return parse_circuit(yaml.safe_load(text), f"{f.filename}:/circuit_yaml") if text else None
    except (BiotpError, yaml.YAMLError):
        return None


def decode(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
