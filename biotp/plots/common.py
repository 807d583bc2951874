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


def legend(ax) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small")


def key_legend(ax, sources: list[str], columns: list[str]) -> None:
    """A compact legend for lines coloured by source and styled by column: one entry per
    source and one per column, instead of one per line."""
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=color(i), label=name) for i, name in enumerate(sources)]
    handles += [Line2D([], [], color="0.3", ls=column_style(c), label=c) for c in columns]
    ax.legend(handles=handles, fontsize="small", ncols=2 if len(handles) > 6 else 1)


def decode(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
