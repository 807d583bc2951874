"""Learning curves, angles to BP and Jacobian matching losses: per-epoch (or per-trial)
columns of groups/metrics, one line per source (run, rule or sweep point)."""

from __future__ import annotations

import numpy as np

from ..errors import BiotpError
from .common import (as_sources, color, column_style, has_metrics, key_legend, layer_columns, legend,
                     loss_label, metrics, note, panels)
from .phases import layout, window_steps
from .phases import mark as mark_phases

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
    solid (as in seed 004 Figs. 2, 4).  A protocol's phases are marked (`phases.mark`)."""
    sources = as_sources(groups, label)
    first = next(iter(sources.values()))
    kinds = [(lambda name="loss": loss_label(first, name), lambda c: c.endswith("_loss"), 1.0),
             (lambda name="error": f"{name} (%)", lambda c: c.endswith("_error"), 100.0),
             (lambda name="reconstruction MSE": name, lambda c: c.endswith("_mse"), 1.0)]
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
        mark_phases(ax, layout(first))
        # a single column is named on the axis, as the key then names only the sources
        ax.set_ylabel(ylabel(columns[0].replace("_", " ")) if many and len(columns) == 1 else ylabel())
        key_legend(ax, list(sources), columns) if many else legend(ax)
    return fig


def over_seeds(tables, column: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x, mean, sample s.d.) of one metrics column over several runs of one configuration (its
    seeds; `tables`: their `metrics(group)`), on the rows every run has; s.d. 0 for one run."""
    n = min(len(x) for _, x, _ in tables)
    values = np.stack([cols[column][:n] for _, _, cols in tables])
    sd = values.std(axis=0, ddof=1) if len(values) > 1 else np.zeros(n)
    return tables[0][1][:n], values.mean(axis=0), sd


def curves_over_seeds(runs):
    """Learning curves of several rules, each the mean ± s.d. (a band) over its seeds' runs:
    training loss, and training (dashed) and test (solid) error in %, as the papers draw them
    (seed 002 Figs. 3.2-3.3, seed 004 Fig. 4).  `runs`: rule -> run groups.  Columns a circuit
    does not record (all nan, e.g. `schedule.eval_train: false`) are left out, and a panel
    with nothing to draw."""
    groups = {rule: list(gs) for rule, gs in runs.items() if gs}
    if not groups:
        raise BiotpError("curves over seeds: no runs")
    first = next(iter(groups.values()))[0]
    tables = {rule: [metrics(g) for g in gs] for rule, gs in groups.items()}  # read once
    x_name = next(iter(tables.values()))[0][0]
    kinds = []  # (name, scale, [(rule index, column, x, mean, sd)])
    for name, columns, scale in [("loss", ["train_loss"], 1.0), ("error", ["train_error", "test_error"], 100.0)]:
        series = [(i, col, *over_seeds(ts, col)) for i, ts in enumerate(tables.values()) for col in columns
                  if all(col in cols for _, _, cols in ts)]
        series = [s for s in series if np.isfinite(s[3]).any()]
        if series:
            kinds.append((name, scale, series))
    if not kinds:
        raise BiotpError("curves over seeds: the runs record no train_loss, train_error or test_error")
    fig, axes = panels(len(kinds), ncols=2)
    for ax, (name, scale, series) in zip(axes, kinds):
        for i, col, x, mean, sd in series:
            ax.plot(x, scale * mean, column_style(col), color=color(i))
            ax.fill_between(x, scale * (mean - sd), scale * (mean + sd), color=color(i), alpha=0.2, lw=0)
        drawn = list(dict.fromkeys(col for _, col, *_ in series))
        label = drawn[0].replace("_", " ") if len(drawn) == 1 else name  # one column: named on the axis
        ax.set(xlabel=x_name, ylabel=loss_label(first, label) if name == "loss" else f"{label} (%)")
        if ax is axes[-1]:  # one key for all panels: the colours are the same rules in each
            key_legend(ax, [f"{rule} ({len(ts)} seed{'s' * (len(ts) > 1)})" for rule, ts in tables.items()], drawn)
    return fig


ANGLE_LABELS = {"angle": "angle to BP's update (°)", "distance": "relative distance ‖ΔW − ΔW_ref‖/‖ΔW_ref‖"}
REFERENCE_ANGLE = "angle to the discrete update (°)"  # a continuous run against its reference rule
OUTPUT_NOTE = "output layer: every rule uses the loss gradient here, so 0°"


def angles(groups, label: str = ""):
    """Per-layer updates: the angle (degrees) between each rule's weight update and BP's, a
    panel per layer (seed 002 Theorem 1, seed 004 Fig. 3); further panels for the columns
    distance_layer<l> (settled against discrete updates).  In a continuous run with a
    discrete reference the angle is to the reference's update.  BP (0° to itself) is a wide
    pale line under the others, so a rule that matches it stays visible; a panel where every
    rule is at 0° says why."""
    sources = as_sources(groups, label)
    reference = any(has_metrics(g, "^reference_test_error$") for g in sources.values())
    rows = []
    for prefix in ("angle", "distance"):
        layers = sorted({l for g in sources.values() for l, _ in layer_columns(metrics(g)[2], prefix)})
        rows += [(prefix, l) for l in layers]
    if not rows:
        raise BiotpError("angles: no angle_layer<l> or distance_layer<l> columns in metrics/")
    fig, axes = panels(len(rows), ncols=4)
    top = max(l for _, l in rows)
    for ax, (prefix, l) in zip(axes, rows):
        column = f"{prefix}_layer{l}"
        plot_rules(ax, sources, column)
        ylabel = REFERENCE_ANGLE if reference and prefix == "angle" else ANGLE_LABELS[prefix]
        ax.set(title=f"layer {l}", xlabel=metrics(next(iter(sources.values())))[0], ylabel=ylabel)
        if prefix == "angle" and not reference:
            angle_guides(ax, sources, column, l == top)
        legend(ax)
    return fig


def plot_rules(ax, sources, column: str, scale: float = 1.0) -> None:
    """A line per source with a marker of its own; BP wide and pale underneath."""
    for i, (name, group) in enumerate(sources.items()):
        x_name, x, cols = metrics(group)
        if column not in cols:
            continue
        if name == "bp":
            ax.plot(x, scale * cols[column], color="0.55", lw=5, alpha=0.45, zorder=1, label=name)
        else:
            ax.plot(x, scale * cols[column], color=color(i), marker=MARKERS[i % len(MARKERS)], ms=4, zorder=2,
                    label=name or column)


MARKERS = "osD^v<>p*h"


def angle_guides(ax, sources, column: str, output_layer: bool) -> None:
    """The 90° line (orthogonal to BP: no descent direction left), labelled, and a note
    where every rule's angle is 0° (to rounding: 1e-3°, as activities computed without a graph
    may differ from the graph's by one float32 ulp)."""
    ax.axhline(90, color="0.6", lw=0.8, ls=":", label="90°: orthogonal to BP")
    values = np.concatenate([metrics(g)[2][column] for g in sources.values() if column in metrics(g)[2]])
    values = values[np.isfinite(values)]
    if len(values) and np.all(np.abs(values) < 1e-3):
        note(ax, OUTPUT_NOTE if output_layer else "every rule's update is BP's here (0°)")


def updates(groups, label: str = ""):
    """‖ΔW_l‖, how much layer l's forward weights moved between evaluations (dW_layer<l>), a
    panel per layer, as steps over each evaluation window; the protocol's phases marked and
    intervention windows shaded, so a block or a lesion shows where it acts."""
    sources = as_sources(groups, label)
    layers = sorted({l for g in sources.values() for l, _ in layer_columns(metrics(g)[2], "dW")})
    if not layers:
        raise BiotpError("updates: no dW_layer<l> columns in metrics/")
    fig, axes = panels(len(layers), ncols=3)
    first = next(iter(sources.values()))
    for ax, l in zip(axes, layers):
        for i, (name, group) in enumerate(sources.items()):
            x_name, x, cols = metrics(group)
            if f"dW_layer{l}" in cols:
                ax.plot(*window_steps(x, cols[f"dW_layer{l}"]), drawstyle="steps-pre", color=color(i),
                        label=name or f"layer {l}")
        mark_phases(ax, layout(first))
        ax.set(title=f"layer {l}", xlabel=metrics(first)[0], ylabel=f"‖ΔW_{l}‖ since the previous evaluation")
        moved = [np.asarray(metrics(g)[2].get(f"dW_layer{l}", [])[1:]) for g in sources.values()]
        if not any(np.nan_to_num(v).any() for v in moved):
            note(ax, "‖ΔW‖ = 0 throughout: this layer's weights never moved (plasticity off or blocked)")
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
