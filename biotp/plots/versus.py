"""Figures for the questions biotp exists to answer:

  settling_vs_discrete  does settling compute the discrete rule?  The continuous model's and
                        its discrete reference's test error, and the angle between their
                        updates per layer, over training (`biotp simulate --epochs N
                        --reference`, or the compare_settling_vs_discrete protocol)
  rules_vs_bp           how close is each rule to backprop?  Test error and the angle to
                        BP's update per layer, on one page (`biotp compare`, alignment_vs_bp)
  cost                  what does it cost?  Seconds per epoch as a multiple of BP's
"""

from __future__ import annotations

import h5py
import numpy as np

from ..errors import BiotpError
from .common import circuit_of, color, layer_columns, metrics, note, panels
from .curves import angle_guides, plot_rules


def reference_rule(f: h5py.File) -> str:
    """The fast path's rule a continuous run was compared with (biotp.dynamics.reference:
    dtp for plasticity dtp, gtp for it under the gradient relaxation, dtp_gn for dtp1)."""
    circuit = circuit_of(f)
    if circuit is None or circuit.dynamics is None:
        return "the discrete rule"
    spec = circuit.dynamics
    if spec.plasticity.rule == "dtp":
        return "gtp" if spec.relaxation == "gradient" else "dtp"
    return {"dtp1": "dtp_gn"}.get(spec.plasticity.rule, "the discrete rule")


def settling_vs_discrete(groups: dict[str, h5py.Group]) -> object:
    """Left: test error of the continuous run (solid) and of its discrete reference (dashed)
    over training.  Right: the angle between the two updates per layer, log scale when every
    angle is positive (they are small when settling computes the rule)."""
    first = next(iter(groups.values()))
    ref = reference_rule(first.file)
    fig, (error_ax, angle_ax) = panels(2, ncols=2, size=(5.0, 3.6))
    many = len(groups) > 1
    values = []
    for i, (name, g) in enumerate(groups.items()):
        x_name, x, cols = metrics(g)
        if "reference_test_error" not in cols:
            raise BiotpError(f"{g.name}/metrics: no reference_test_error column; expected a run with a discrete reference")
        prefix = f"{name}: " if many else ""
        error_ax.plot(x, 100 * cols["test_error"], "-", marker=".", color=color(2 * i), label=f"{prefix}settling (continuous)")
        error_ax.plot(x, 100 * cols["reference_test_error"], "--", marker="x", color=color(2 * i + 1),
                      label=f"{prefix}discrete {ref}")
        for l, column in layer_columns(cols, "angle"):
            angle_ax.plot(x, cols[column], ["-", "--", ":"][i % 3], marker=".", color=color(l - 1),
                          label=f"{prefix}layer {l}")
            values.append(cols[column])
        error_ax.set_xlabel(x_name)
        angle_ax.set_xlabel(x_name)
    error_ax.set(ylabel="test error (%)", title="test error")
    angle_ax.set(ylabel="angle between updates (°)", title=f"angle between the settled and the {ref} update")
    finite = np.concatenate(values)[np.isfinite(np.concatenate(values))] if values else np.array([])
    if len(finite) and (finite > 0).all():
        from matplotlib.ticker import FuncFormatter

        angle_ax.set_yscale("log")
        plain = FuncFormatter(lambda v, _: f"{v:g}")  # 0.02, 3: not 2×10⁻², 3×10⁰
        angle_ax.yaxis.set_major_formatter(plain)
        angle_ax.yaxis.set_minor_formatter(plain)
    elif not len(finite):
        note(angle_ax, "no angle_layer<l> columns: run with --reference")
    for ax in (error_ax, angle_ax):
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, fontsize="small")
    fig.suptitle(f"settling against the discrete {ref} rule, from the same weights and data")
    return fig


def rules_vs_bp(groups: dict[str, h5py.Group]) -> object:
    """Test error of every rule and its angle to BP's update in each layer, one page, one
    legend outside the panels."""
    layers = sorted({l for g in groups.values() for l, _ in layer_columns(metrics(g)[2], "angle")})
    fig, axes = panels(1 + len(layers), ncols=2 if len(layers) < 4 else 4, size=(3.8, 3.0))
    error_ax, angle_axes = axes[0], axes[1:]
    plot_rules(error_ax, groups, "test_error", scale=100.0)
    x_name = metrics(next(iter(groups.values())))[0]
    error_ax.set(title="test error", xlabel=x_name, ylabel="test error (%)")
    for ax, l in zip(angle_axes, layers):
        plot_rules(ax, groups, f"angle_layer{l}")
        angle_guides(ax, groups, f"angle_layer{l}", l == layers[-1])
        ax.set(title=f"layer {l}", xlabel=x_name, ylabel="angle to BP's update (°)", ylim=(-3, 100))
    if not layers:
        note(error_ax, "no angle_layer<l> columns: compare with --track-angles", y=0.15)
    handles, labels = error_ax.get_legend_handles_labels()
    if angle_axes:
        h, lab = angle_axes[0].get_legend_handles_labels()
        handles += [hh for hh, ll in zip(h, lab) if ll.startswith("90°")]
        labels += [ll for ll in lab if ll.startswith("90°")]
    fig.legend(handles, labels, loc="outside right center", fontsize="small")
    fig.suptitle("every rule against backprop: test error and the angle of its update to BP's")
    return fig


def cost(groups: dict[str, h5py.Group]) -> object:
    """Seconds per epoch of each rule as a multiple of BP's (the median epoch, as
    `biotp compare`'s table has it), a bar per rule labelled with its seconds."""
    from ..compare import summary_table

    runs = {}
    for name, g in groups.items():
        x_name, x, cols = metrics(g)
        if "seconds" in cols and "test_error" in cols:
            runs[name] = {"epoch": x, **cols}
    if "bp" not in runs:
        raise BiotpError("cost: needs BP among the compared rules, with a seconds column, to be the unit")
    table = summary_table(list(runs), runs)
    names = [a.decode() if isinstance(a, bytes) else str(a) for a in table["algorithm"]]
    ratio, seconds = table["ratio_to_bp"], table["seconds_per_epoch"]
    fig, (ax,) = panels(1, size=(max(4.0, 0.7 * len(names) + 1.5), 3.4))
    bars = ax.bar(names, ratio, color=["0.55" if n == "bp" else color(i) for i, n in enumerate(names)])
    ax.bar_label(bars, labels=[f"×{r:.2f}\n{s:.2g} s" for r, s in zip(ratio, seconds)], fontsize="x-small", padding=2)
    ax.axhline(1.0, color="0.3", lw=0.8, ls="--")
    ax.set(ylabel="seconds per epoch ÷ BP's (median epoch)", xlabel="rule", ylim=(0, 1.25 * float(np.nanmax(ratio))))
    ax.tick_params(axis="x", labelrotation=45 if len(names) > 6 else 0)
    fig.suptitle("cost: seconds per epoch as a multiple of BP's")
    return fig
