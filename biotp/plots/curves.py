"""Learning curves, angles to BP and Jacobian matching losses: per-epoch (or per-trial)
columns of groups/metrics, one line per source (run, rule or sweep point)."""

from __future__ import annotations

import numpy as np

from ..errors import BiotpError
from .common import as_sources, color, column_style, key_legend, layer_columns, legend, metrics, panels

JML = {"ijml": "IJML", "pjml": "PJML", "tjml": "TJML"}  # seed 003 definitions 1-3


def _split_order(column: str) -> tuple[int, str]:
    """train, val, test, then the rest (HDF5 lists columns alphabetically)."""
    order = ("train", "val", "test", "reference")
    split = column.split("_")[0]
    return (order.index(split) if split in order else len(order), column)


def _label(source: str, column: str, many: bool) -> str:
    return f"{source} {column}" if many else column


def learning_curves(groups, label: str = ""):
    """Losses (columns *_loss), error rates in % (*_error) and reconstruction errors (*_mse,
    auto-encoders) against epoch or trial.
    One source: a colour per column; several: a colour per source, train dashed and test
    solid (as in seed 004 Figs. 2, 4)."""
    sources = as_sources(groups, label)
    kinds = [("loss", lambda c: c.endswith("_loss"), 1.0), ("error %", lambda c: c.endswith("_error"), 100.0),
             ("reconstruction MSE", lambda c: c.endswith("_mse"), 1.0)]
    present = [k for k in kinds if any(k[1](c) and np.isfinite(v).any()
                                       for g in sources.values() for c, v in metrics(g)[2].items())]
    if not present:
        raise BiotpError("learning curves: no *_loss, *_error or *_mse columns in metrics/")
    fig, axes = panels(len(present), ncols=2)
    many = len(sources) > 1
    for ax, (ylabel, wanted, scale) in zip(axes, present):
        columns = []
        for i, (name, group) in enumerate(sources.items()):
            x_name, x, cols = metrics(group)
            for j, col in enumerate(sorted((c for c in cols if wanted(c)), key=_split_order)):
                ax.plot(x, scale * cols[col], column_style(col) if many else "-", color=color(i if many else j),
                        label=_label(name, col, many))
                columns += [col] * (col not in columns)
            ax.set_xlabel(x_name)
        _phase_boundaries(ax, sources)
        ax.set_ylabel(ylabel)
        key_legend(ax, list(sources), columns) if many else legend(ax)
    return fig


def _phase_boundaries(ax, sources) -> None:
    """Grey vertical lines where a protocol's `phase` column changes (baseline -> lesion ...)."""
    x_name, x, cols = metrics(next(iter(sources.values())))
    if "phase" in cols and len(x) > 1:
        for k in np.flatnonzero(np.diff(cols["phase"]) != 0):
            ax.axvline((x[k] + x[k + 1]) / 2, color="0.6", lw=0.8, ls="--")


def angles(groups, label: str = ""):
    """Per-layer updates: the angle (degrees) between each rule's weight update and BP's, a
    panel per layer (seed 002 Theorem 1, seed 004 Fig. 3); further panels for the columns
    distance_layer<l> (a protocol comparing settled and discrete updates) and dW_layer<l>
    (‖ΔW_l‖ between rows: zero where plasticity is blocked) when present."""
    sources = as_sources(groups, label)
    rows = []
    for prefix, ylabel in (("angle", "angle to BP (°)"), ("distance", "distance"), ("dW", "‖ΔW‖")):
        layers = sorted({l for g in sources.values() for l, _ in layer_columns(metrics(g)[2], prefix)})
        rows += [(prefix, ylabel, l) for l in layers]
    if not rows:
        raise BiotpError("angles: no angle_layer<l>, distance_layer<l> or dW_layer<l> columns in metrics/")
    fig, axes = panels(len(rows), ncols=4)
    for ax, (prefix, ylabel, l) in zip(axes, rows):
        for i, (name, group) in enumerate(sources.items()):
            x_name, x, cols = metrics(group)
            column = f"{prefix}_layer{l}"
            if column in cols:
                ax.plot(x, cols[column], color=color(i), label=name or column)
        ax.set(title=f"layer {l}", xlabel=x_name, ylabel=ylabel)
        if prefix == "angle":
            ax.axhline(90, color="0.7", lw=0.8)  # orthogonal to BP: no descent direction left
        legend(ax)
    return fig


def jml(groups, label: str = ""):
    """Jacobian matching losses (seed 003 definitions 1-3) per layer, log scale: a panel per
    loss (IJML, PJML, TJML), a line per layer and source."""
    sources = as_sources(groups, label)
    kinds = [k for k in JML if any(layer_columns(metrics(g)[2], k) for g in sources.values())]
    if not kinds:
        raise BiotpError("JML: no ijml_layer<l>, pjml_layer<l> or tjml_layer<l> columns in metrics/")
    fig, axes = panels(len(kinds))
    many = len(sources) > 1
    for ax, kind in zip(axes, kinds):
        for i, (name, group) in enumerate(sources.items()):
            x_name, x, cols = metrics(group)
            for j, (l, column) in enumerate(layer_columns(cols, kind)):
                y = np.where(cols[column] > 0, cols[column], np.nan)  # log axis: zero is off the scale
                ax.plot(x, y, ["-", "--", ":", "-."][j % 4] if many else "-", color=color(i if many else j),
                        label=f"{name} layer {l}" if many else f"layer {l}")
        ax.set(yscale="log", title=JML[kind], xlabel=x_name, ylabel=f"{JML[kind]} loss")
        legend(ax)
    return fig
