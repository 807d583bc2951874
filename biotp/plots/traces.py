"""Recorded traces (group/traces/<population>/<variable>, [time, example or trial, neuron],
attribute `times` in s): a heatmap of every neuron against time for one example, and lines
for a few neurons."""

from __future__ import annotations

import h5py
import numpy as np

from ..errors import BiotpError
from matplotlib.transforms import blended_transform_factory

from .common import color, forward_phase, legend, panels


def trace_items(group: h5py.Group) -> list[tuple[str, h5py.Dataset]]:
    """[("population.variable", dataset)] under group/traces."""
    items = []
    for pop, vars_ in group.get("traces", {}).items():
        if isinstance(vars_, h5py.Group):
            items += [(f"{pop}.{var}", ds) for var, ds in vars_.items() if isinstance(ds, h5py.Dataset)]
    return items


def traces(group: h5py.Group, example: int = 0, neurons: int = 5):
    """A row per recorded (population, variable): heatmap (neuron × time) of `example`, and
    `neurons` evenly spaced neurons against time (ms)."""
    items = trace_items(group)
    if not items:
        raise BiotpError("traces: no traces/<population>/<variable> datasets")
    fig, axes = panels(2 * len(items), ncols=2, size=(5.0, 2.8))
    for (name, ds), heat, lines in zip(items, axes[0::2], axes[1::2]):
        data = np.asarray(ds[()], dtype=float)
        if data.ndim == 2:  # [time, neuron]: a single example
            data = data[:, None, :]
        if data.ndim != 3:
            raise BiotpError(f"traces/{name.replace('.', '/')}: shape {data.shape}; expected [time, example, neuron]")
        if not 0 <= example < data.shape[1]:
            raise BiotpError(f"traces/{name.replace('.', '/')}: example {example} out of range (0..{data.shape[1] - 1})")
        trial = data[:, example, :]
        times = ds.attrs.get("times")
        t = 1e3 * np.asarray(times, dtype=float) if times is not None and len(times) == len(trial) else np.arange(len(trial))
        t_label = "time (ms)" if times is not None and len(times) == len(trial) else "sample"
        image = heat.imshow(trial.T, aspect="auto", origin="lower", interpolation="nearest", cmap="viridis",
                            extent=(t[0], t[-1], -0.5, trial.shape[1] - 0.5))
        variable = VARIABLES.get(name.split(".")[-1], name.split(".")[-1])
        fig.colorbar(image, ax=heat, label=variable)
        heat.set(title=f"{name}, example {example}", xlabel=t_label, ylabel="neuron")
        for k, n in enumerate(np.unique(np.linspace(0, trial.shape[1] - 1, min(neurons, trial.shape[1])).astype(int))):
            lines.plot(t, trial[:, n], color=color(k), label=f"neuron {n}")
        lines.set(title=f"{name}, example {example}", xlabel=t_label, ylabel=variable)
        switch = forward_phase(ds)
        if switch is not None and t_label == "time (ms)":
            for ax in (heat, lines):
                mark_switch(ax, 1e3 * switch, color="w" if ax is heat else "0.3")
        legend(lines)
    return fig


VARIABLES = {"h": "h, activity (rate, a.u.)", "t": "t, target (rate, a.u.)", "r": "‖dy/dt‖ (1/s)"}
SWITCH = "forward → target phase"  # label and gid of the switch marker


def mark_switch(ax, at_ms: float, color: str = "0.3") -> None:
    """A dotted line where the forward phase ends and the target phase begins, labelled."""
    ax.axvline(at_ms, color=color, lw=1.0, ls=":", gid=SWITCH, label=SWITCH)
    ax.text(at_ms, 0.02, " target phase →", transform=blended_transform_factory(ax.transData, ax.transAxes),
            ha="left", va="bottom", fontsize="x-small", color=color)
