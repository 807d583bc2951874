"""How targets settle.

`residual`: group/residual/<phase>, [time, example, layer] of ‖dy_l/dt‖ (attributes `times`
in s and `layers`), on a log scale, so geometric convergence ‖dy/dt‖ ∝ e^{-t/τ} shows as a straight line;
one line per layer, the geometric mean over examples (which keeps a common rate straight).

`settling`: a simulation's /settling summary (biotp.simulation): the residual left at the end
of each phase per example and layer (log scale), and the steps each phase took.
"""

from __future__ import annotations

import h5py
import numpy as np

from ..errors import BiotpError
from .common import as_sources, color, legend, panels

STYLES = ["-", "--", ":", "-."]


def _geometric_mean(values: np.ndarray, axis: int) -> np.ndarray:
    """Over `axis`, ignoring zeros and NaN (off a log scale); NaN where nothing is left."""
    logs = np.log(np.where(values > 0, values, np.nan))
    with np.errstate(all="ignore"):
        counts = np.isfinite(logs).sum(axis)
        return np.where(counts > 0, np.exp(np.nansum(logs, axis) / np.maximum(counts, 1)), np.nan)


def phases(groups) -> list[str]:
    found = []
    for g in groups.values():
        for phase, ds in g.get("residual", {}).items():
            if isinstance(ds, h5py.Dataset) and phase not in found:
                found.append(phase)
    return found


def residual(groups, label: str = ""):
    """A panel per phase: ‖dy_l/dt‖ against time (ms), log y, a line per layer (and source)."""
    sources = as_sources(groups, label)
    names = phases(sources)
    if not names:
        raise BiotpError("residual: no residual/<phase> datasets")
    fig, axes = panels(len(names), ncols=2, size=(5.0, 3.4))
    many = len(sources) > 1
    for ax, phase in zip(axes, names):
        x_label = "time (ms)"
        for i, (name, group) in enumerate(sources.items()):
            ds = group.get("residual", {}).get(phase)
            if ds is None:
                continue
            data = np.asarray(ds[()], dtype=float)
            if data.ndim == 2:  # [time, layer]: a single example
                data = data[:, None, :]
            if data.ndim != 3:
                raise BiotpError(f"residual/{phase}: shape {data.shape}; expected [time, example, layer]")
            times = ds.attrs.get("times")
            if times is not None and len(times) == len(data):
                t = 1e3 * np.asarray(times, dtype=float)
            else:
                t, x_label = np.arange(len(data)), "sample"
            curve = _geometric_mean(data, axis=1)  # [time, layer]
            layers = ds.attrs.get("layers", np.arange(1, curve.shape[1] + 1))
            for j, l in enumerate(layers):
                ax.plot(t, curve[:, j], STYLES[i % 4] if many else "-", color=color(j),
                        label=f"{name} layer {l}" if many else f"layer {l}")
        ax.set(yscale="log", title=f"{phase} phase", xlabel=x_label,
               ylabel="‖dy/dt‖ (1/s)")
        legend(ax)
    return fig


def settling(group: h5py.Group):
    """Final residual per example and layer (log y) and steps per example, for each phase."""
    s = group.get("settling")
    if s is None:
        raise BiotpError("settling: no /settling group")
    names = [p for p in ("forward", "target") if f"{p}_residual" in s and s[f"{p}_residual"].size]
    if not names:
        raise BiotpError("settling: no forward_residual or target_residual datasets")
    fig, axes = panels(2, ncols=2, size=(5.0, 3.4))
    res_ax, steps_ax = axes
    for k, phase in enumerate(names):
        res = np.asarray(s[f"{phase}_residual"][()], dtype=float).reshape(len(s[f"{phase}_residual"]), -1)
        for l in range(res.shape[1]):
            y = np.where(res[:, l] > 0, res[:, l], np.nan)
            res_ax.plot(np.arange(len(y)), y, STYLES[k % 4], marker=".", color=color(l), label=f"{phase} layer {l + 1}")
        if f"{phase}_steps" in s:
            steps_ax.plot(np.asarray(s[f"{phase}_steps"][()]), STYLES[k % 4], marker=".", color=color(k), label=phase)
    res_ax.set(yscale="log", title="residual at the end of each phase", xlabel="example", ylabel="‖dy/dt‖ (1/s)")
    steps_ax.set(title="integration steps", xlabel="example", ylabel="steps")
    legend(res_ax)
    legend(steps_ax)
    return fig
