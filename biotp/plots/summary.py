"""A protocol's summary figure, the one the experiment exists for (its `figure`, see
`biotp.protocols.schema.FigureSpec`):

  sweep      the final value of the evaluated metric against the swept value, mean ± 1 s.d.
             over seeds or repeated points; beside it the learning curves when they say more
             than two points do
  phases     test error, loss and ‖ΔW_l‖ against trial, phases labelled, interventions shaded
  settling   traces of a few neurons (activity and target) with the forward→target switch
             marked, and the residual ‖dy_l/dt‖ of every layer on a log scale
  reference  and rules are drawn by biotp.plots.versus
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import h5py
import numpy as np

from ..errors import BiotpError
from .common import OUTSIDE, color, informative, legend, loss_label, metrics, note, panels
from .context import point_params
from .phases import layout, window_steps
from .phases import mark as mark_phases
from .settling import _geometric_mean
from .traces import SWITCH, VARIABLES, mark_switch, trace_items



# ------------------------------------------------------------------------ sweep


@dataclass
class SweepPoints:
    """The summary of a one-field sweep: per distinct swept value, the mean, the spread
    (sample standard deviation, ddof = 1; 0 for a single run) and the number of runs of the
    metric's last row."""

    x: np.ndarray  # distinct swept values, ascending, in display units
    mean: np.ndarray
    spread: np.ndarray
    count: np.ndarray
    unit: str  # of x, "" when dimensionless
    curves: dict  # x -> (row x name, row x values, mean metric per row) for the learning curves
    labels: list[str] | None = None  # the values' names when they have no order (x is then 0, 1, ...)

    def name(self, k: int) -> str:
        """The k-th value as the figure names it."""
        return self.labels[k] if self.labels else f"{self.x[k]:g} {self.unit}".strip()


def swept_value(value, key: str) -> tuple[float, str] | None:
    """A sweep value as a number in display units: times in ms, frequencies in Hz, numbers as
    they are; (number, unit), or None for a value with no order (a rule's name, a mode)."""
    from ..dynamics.units import parse_quantity

    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value), ""
    if isinstance(value, str):
        for dimension, scale, unit in (("time", 1e3, "ms"), ("frequency", 1.0, "Hz")):
            try:
                return parse_quantity(value, dimension) * scale, unit
            except ValueError:
                continue
        try:
            return float(value), ""
        except ValueError:
            pass
    return None


def sweep_points(groups: dict[str, h5py.Group], key: str, metric: str) -> SweepPoints:
    """Group the points by their value of `key` and summarise the last row of `metric`.
    Values without an order are placed at 0, 1, ... in the order of the points, named."""
    runs: dict = {}
    for name, g in groups.items():
        params = point_params(g)
        if key not in params:
            raise BiotpError(f"{g.name}: sweep key {key} is not among its parameters {sorted(params)}")
        x_name, rows, cols = metrics(g)
        if metric not in cols:
            raise BiotpError(f"{g.name}/metrics has no column {metric!r} (figure.metric); it has {', '.join(sorted(cols))}")
        runs.setdefault(json.dumps(params[key]), []).append((x_name, rows, cols[metric]))
    values = [json.loads(v) for v in runs]
    parsed = [swept_value(v, key) for v in values]
    if all(parsed):
        positions, units, labels = [x for x, _ in parsed], {u for _, u in parsed}, None
    else:
        positions, units, labels = list(range(len(values))), {""}, [str(v) for v in values]
    order = np.argsort(positions, kind="stable")
    groups_in_order = [list(runs.values())[k] for k in order]
    finals = [np.array([r[2][-1] for r in runs_at]) for runs_at in groups_in_order]
    curves = {}
    for k, runs_at in zip(order, groups_in_order):
        n = min(len(r[1]) for r in runs_at)
        curves[positions[k]] = (runs_at[0][0], runs_at[0][1][:n], np.mean([r[2][:n] for r in runs_at], axis=0))
    return SweepPoints(np.array(positions, dtype=float)[order], np.array([v.mean() for v in finals]),
                       np.array([v.std(ddof=1) if len(v) > 1 else 0.0 for v in finals]),
                       np.array([len(v) for v in finals]), units.pop() if len(units) == 1 else "", curves,
                       None if labels is None else [labels[k] for k in order])


def sweep_figure(groups: dict[str, h5py.Group], spec) -> object:
    """The metric's final value against the swept value (error bars: ±1 s.d. over the runs
    at each value), and the learning curves per value when they have more than two rows."""
    pts = sweep_points(groups, spec.x, spec.metric)
    scale = 100.0 if spec.metric.endswith("_error") else 1.0
    x_name, rows, _ = next(iter(pts.curves.values()))
    after = f"after {int(rows[-1])} {x_name}s" if len(rows) else ""
    what = spec.metric.replace("_", " ")
    ylabel = f"{what} (%)" if scale == 100 else loss_label(next(iter(groups.values())), what)
    xlabel = (spec.xlabel or spec.x) + (f" ({pts.unit})" if pts.unit else "")
    show_curves = any(informative(c[2]) and len(c[2]) > 2 for c in pts.curves.values())
    fig, axes = panels(2 if show_curves else 1, ncols=2, size=(4.6, 3.4))
    ax = axes[0]
    ax.errorbar(pts.x, scale * pts.mean, yerr=scale * pts.spread, marker="o", capsize=4, color="C0")
    spread = f"mean ± 1 s.d. over {_runs(pts.count)}" if pts.count.max() > 1 else "one run per value (no error bars)"
    ax.set(xscale=spec.xscale if pts.labels is None else "linear", xlabel=xlabel, ylabel=f"{ylabel}, {after}" if after else ylabel,
           title=spread)
    if pts.labels is not None or (spec.xscale == "log" and (pts.x > 0).all()):
        ax.set_xticks(pts.x, pts.labels or [f"{v:g}" for v in pts.x])
        ax.minorticks_off()
    if show_curves:
        curve_ax = axes[1]
        cmap = _ordered_colours(len(pts.x))
        for k, (x_name, rows, values) in enumerate(pts.curves.values()):
            curve_ax.plot(rows, scale * values, color=cmap[k], label=pts.name(k))
        curve_ax.set(xlabel=x_name, ylabel=ylabel, title=f"{what} during learning" +
                     (" (mean over runs)" if pts.count.max() > 1 else ""))
        legend(curve_ax, title=spec.xlabel or spec.x)
    fig.suptitle(f"{what} against {spec.xlabel or spec.x}")
    return fig


def _runs(count: np.ndarray) -> str:
    return f"{int(count.min())} runs" if count.min() == count.max() else f"{int(count.min())}-{int(count.max())} runs"


def _ordered_colours(n: int) -> list:
    """Colours along viridis, for lines ordered by a swept value."""
    from matplotlib import colormaps

    return [colormaps["viridis"](v) for v in np.linspace(0.0, 0.85, max(n, 1))]


# ----------------------------------------------------------------------- phases


def phases_figure(groups: dict[str, h5py.Group]) -> object:
    """Test error, test loss and ‖ΔW_l‖ (every layer) against trial, each with the phase
    boundaries labelled and the intervention windows shaded."""
    first = next(iter(groups.values()))
    lay = layout(first)
    fig, axes = panels(3, ncols=1, size=(7.5, 2.6), sharex=True)
    error_ax, loss_ax, dw_ax = axes
    many = len(groups) > 1
    for i, (name, g) in enumerate(groups.items()):
        x_name, x, cols = metrics(g)
        if "test_error" in cols:
            error_ax.plot(x, 100 * cols["test_error"], marker=".", color=color(i), label=name if many else "test error")
        if "test_loss" in cols:
            loss_ax.plot(x, cols["test_loss"], marker=".", color=color(i), label=name if many else "test loss")
        for l in sorted(int(c.removeprefix("dW_layer")) for c in cols if c.startswith("dW_layer")):
            dw_ax.plot(*window_steps(x, cols[f"dW_layer{l}"]), drawstyle="steps-pre", color=color(l - 1),
                       ls=["-", "--", ":", "-."][i % 4], label=f"{name} layer {l}" if many else f"layer {l}")
    every = np.diff(metrics(first)[1])
    window = f"per {int(np.median(every))} trials" if len(every) else ""
    error_ax.set(ylabel="test error (%)")
    loss_ax.set(ylabel=loss_label(first, "test loss"))
    dw_ax.set(ylabel=f"‖ΔW_l‖ {window}".strip(), xlabel="trial")
    for ax in axes:
        mark_phases(ax, lay, names=ax is error_ax)
        legend(ax)
    if not lay.phases:
        note(error_ax, "the file's protocol has no phases", y=0.1)
    fig.suptitle("learning through the phases: error, loss and weight change per layer")
    return fig


# --------------------------------------------------------------------- settling


def settling_figure(group: h5py.Group, example: int = 0, neurons: int = 4) -> object:
    """For one point: activity h (solid) and target t (dashed) of a few neurons per recorded
    population, and the residual ‖dy_l/dt‖ per layer (geometric mean over the examples) over
    the whole presentation on a log scale; the forward→target switch marked on each."""
    pops = {}
    for name, ds in trace_items(group):
        pop, var = name.split(".")
        if var in ("h", "t"):
            pops.setdefault(pop, {})[var] = ds
    residual = group.get("residual")
    has_residual = isinstance(residual, h5py.Group) and "target" in residual
    if not pops and not has_residual:
        raise BiotpError(f"{group.name}: no traces of h or t and no residual to show settling")
    fig, axes = panels(len(pops) + has_residual, ncols=2, size=(4.6, 3.0))
    switch = None
    for ax, (pop, variables) in zip(axes, pops.items()):
        any_ds = next(iter(variables.values()))
        t = 1e3 * np.asarray(any_ds.attrs["times"], dtype=float)
        width = any_ds.shape[2]
        chosen = np.unique(np.linspace(0, width - 1, min(neurons, width)).astype(int))
        for var, style in (("h", "-"), ("t", "--")):
            if var in variables:
                data = variables[var][:, example, :]
                for k, n in enumerate(chosen):
                    ax.plot(t, data[:, n], style, color=color(k), label="_")
        switch = _switch_ms(any_ds)
        if switch is not None:
            mark_switch(ax, switch)
        ax.set(title=f"{pop}, example {example}", xlabel="time in the presentation (ms)",
               ylabel=" / ".join(VARIABLES[v].split(" (")[0] for v in variables) + " (rate, a.u.)")
        _trace_key(ax, chosen, [v for v in ("h", "t") if v in variables], switch is not None)
    if has_residual:
        _residual_panel(axes[-1], residual)
    fig.suptitle("targets settling: traces and the residual of every layer")
    return fig


def _trace_key(ax, neurons, variables: list[str], switch: bool) -> None:
    """One legend entry per neuron (colour) and per variable (line style), not per line."""
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=color(k), label=f"neuron {n}") for k, n in enumerate(neurons)]
    handles += [Line2D([], [], color="0.3", ls={"h": "-", "t": "--"}[v], label=VARIABLES[v].split(" (")[0])
                for v in variables]
    if switch:
        handles += [Line2D([], [], color="0.3", ls=":", label=SWITCH)]
    ax.legend(handles=handles, **OUTSIDE)


def _switch_ms(ds: h5py.Dataset) -> float | None:
    from .common import forward_phase

    value = forward_phase(ds)
    return None if value is None else 1e3 * value


def _residual_panel(ax, residual: h5py.Group) -> None:
    """‖dy_l/dt‖ over the forward then the target phase on one time axis, log y."""
    target = residual["target"]
    switch = _switch_ms(target)
    parts = []
    for phase, offset in (("forward", 0.0), ("target", switch or 0.0)):
        if phase in residual:
            ds = residual[phase]
            parts.append((offset + 1e3 * np.asarray(ds.attrs["times"], dtype=float), _geometric_mean(ds[()], axis=1)))
    t = np.concatenate([p[0] for p in parts])
    curve = np.concatenate([p[1] for p in parts])
    layers = target.attrs.get("layers", np.arange(1, curve.shape[1] + 1))
    still = []
    for j, l in enumerate(layers):
        ax.plot(t, curve[:, j], color=color(j), label=f"layer {l}")
        if not np.nan_to_num(parts[-1][1][:, j]).any():
            still.append(f"layer {l}")
    if still:  # zero is off a log scale: say so rather than leave a gap
        note(ax, f"{', '.join(still)}: target held, not relaxed (residual 0 in the target phase)", y=0.3)
    if switch is not None:
        mark_switch(ax, switch)
    ax.set(yscale="log", title="residual (geometric mean over examples)", xlabel="time in the presentation (ms)",
           ylabel="‖dy_l/dt‖ (1/s)")
    legend(ax)
