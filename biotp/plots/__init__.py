"""`biotp plot FILE.h5`: figures (PNG or PDF, matplotlib Agg) of what a biotp file holds.

The plot functions take h5py groups laid out like a run (metrics/, traces/, residual/,
settling/, checkpoint/), so a train run's root, a comparison's /runs/<rule> and a
protocol's /points/<p> are handled alike; several groups overlay in one figure.  The
dispatcher here finds the groups by the file's kind:

  train, simulate   the root
  compare           /runs/<rule>, in the order of the `algorithms` attribute
  protocol          /points/<p>, labelled by their `label` attribute (else `params`)

and writes `<stem>-<kind>[-<group>].<format>` for each figure kind it asked for or, without
`what`, for everything the file contains: curves (loss and errors), angles (to BP, and
distances, ‖ΔW‖), jml (Jacobian matching losses), traces (heatmaps and lines, one figure per
group), residual (settling residual against time, log scale), settling (a simulation's
per-example settling summary), filters (first-layer weights as pictures).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import h5py

from ..errors import BiotpError
from .common import decode, has_metrics
from .curves import angles, jml, learning_curves
from .settling import residual, settling
from .traces import trace_items, traces

KINDS = ("curves", "angles", "jml", "traces", "residual", "settling", "filters")
FORMATS = ("png", "pdf")


def sources(f: h5py.File) -> dict[str, h5py.Group]:
    """label -> group for every run-like group of the file (see the module docstring)."""
    if isinstance(f.get("runs"), h5py.Group):
        runs = f["runs"]
        order = [a for a in decode(f.attrs.get("algorithms", "")).split(",") if a in runs]
        return {name: runs[name] for name in order + sorted(set(runs) - set(order))}
    if isinstance(f.get("points"), h5py.Group):
        return {_point_label(name, g): g for name, g in sorted(f["points"].items()) if isinstance(g, h5py.Group)}
    return {"": f}


def _point_label(name: str, group: h5py.Group) -> str:
    if "label" in group.attrs and decode(group.attrs["label"]):
        return decode(group.attrs["label"])
    if "params" in group.attrs:
        params = json.loads(decode(group.attrs["params"]))
        return ", ".join(f"{k}={v}" for k, v in params.items()) if isinstance(params, dict) else str(params)
    return name


def _slug(group: h5py.Group) -> str:
    """The group's own name, for file names (labels may hold spaces and '=')."""
    return group.name.rsplit("/", 1)[-1] if group.name != "/" else ""


def _filter_sources(path: Path, groups: dict[str, h5py.Group], f: h5py.File) -> dict[str, tuple]:
    """label -> (first-layer weights, image shape) for groups whose checkpoint has a dense first
    layer reading an image (the inputs of a dataset with a [channels, height, width] shape)."""
    import yaml

    from ..data import DATASETS

    try:
        circuit = yaml.safe_load(decode(f.attrs.get("circuit_yaml", ""))) or {}
        shape = tuple(DATASETS[circuit["data"]["dataset"]].input_shape)
    except (KeyError, TypeError, yaml.YAMLError):
        return {}
    found = {}
    for label, g in groups.items():
        w = g.get("checkpoint/model/net.layers.0.weight")
        if isinstance(w, h5py.Dataset) and w.ndim == 2 and len(shape) == 3 and w.shape[1] == shape[0] * shape[1] * shape[2]:
            found[label] = (w[()], shape)
    return found


def figures(path: str | Path, what: list[str] | None = None) -> list[tuple[str, object]]:
    """[(name, matplotlib Figure)] for the file at `path`; `what` picks figure kinds (default:
    all the file has).  An asked-for kind the file lacks is an error naming the file."""
    path = Path(path)
    if not path.exists():
        raise BiotpError(f"{path}: no such file")
    unknown = [w for w in (what or []) if w not in KINDS]
    if unknown:
        raise BiotpError(f"--what {','.join(unknown)}: unknown figure kind; expected some of {', '.join(KINDS)}")
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise BiotpError(f"{path}: not a readable HDF5 file ({err})") from None
    with f:
        kind = decode(f.attrs.get("kind", "")) or "unknown"
        groups = sources(f)

        def with_metrics(pattern):
            return {k: g for k, g in groups.items() if has_metrics(g, pattern)}

        available = {
            "curves": (with_metrics(r"_(loss|error)$"), learning_curves),
            "angles": (with_metrics(r"^(angle|distance|dW)_layer\d+$"), angles),
            "jml": (with_metrics(r"^[ipt]jml_layer\d+$"), jml),
            "residual": ({k: g for k, g in groups.items() if isinstance(g.get("residual"), h5py.Group) and len(g["residual"])}, residual),
        }
        out: list[tuple[str, object]] = []
        for name in what or KINDS:
            if name in available:
                chosen, draw = available[name]
                if chosen:
                    out.append((name, draw(chosen)))
            elif name == "traces":
                for label, g in groups.items():
                    if trace_items(g):
                        out.append(("-".join(filter(None, ["traces", _slug(g)])), traces(g)))
            elif name == "settling":
                for label, g in groups.items():
                    if isinstance(g.get("settling"), h5py.Group):
                        out.append(("-".join(filter(None, ["settling", _slug(g)])), settling(g)))
            elif name == "filters":
                out += _filters(path, groups, f)
            if what and not any(n == name or n.startswith(name + "-") for n, _ in out):
                raise BiotpError(f"{path}: --what {name}: the file (kind {kind!r}) has nothing of that kind to plot")
        if not out:
            raise BiotpError(
                f"{path}: nothing to plot (kind {kind!r}): no metrics columns, traces/, residual/ or settling/ "
                f"in {', '.join(g.name for g in groups.values())}"
            )
        return out


def _filters(path: Path, groups, f) -> list[tuple[str, object]]:
    """First-layer weights as pictures, by biotp.plots.filters.filter_grid (imported only here)."""
    found = _filter_sources(path, groups, f)
    if not found:
        return []
    from .filters import filter_grid

    # 100 filters, as seed 002 Fig. 3.4 shows
    return [("-".join(filter(None, ["filters", _slug(groups[label])])), filter_grid(w, shape, n=100))
            for label, (w, shape) in found.items()]


def plot(path: str | Path, what: list[str] | str | None = None, out: str | Path | None = None, fmt: str = "png") -> list[Path]:
    """Write the figures of the file at `path` into directory `out` (default: the file's own)
    as `<stem>-<kind>[-<group>].<fmt>`, and return their paths."""
    if fmt not in FORMATS:
        raise BiotpError(f"--format {fmt}: expected one of {', '.join(FORMATS)}")
    if isinstance(what, str):
        what = [w.strip() for w in what.split(",") if w.strip()]
    path = Path(path)
    directory = Path(out) if out is not None else path.parent
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, fig in figures(path, what):
        target = directory / f"{path.stem}-{name}.{fmt}"
        fig.savefig(target, format=fmt, dpi=120)
        written.append(target)
    return written


# ------------------------------------------------------------------------------ CLI


def add_plot_parser(subparsers) -> argparse.ArgumentParser:
    """Register `biotp plot` on an argparse subparsers object."""
    p = subparsers.add_parser(
        "plot", help="figures of a run, simulation, comparison or protocol file",
        description="Draw what FILE holds: learning curves, angles to BP, Jacobian matching losses, traces "
                    "(heatmaps and lines), the settling residual (log scale), filters.  Figures are written "
                    "as <stem>-<kind>[-<group>].<format>.")
    p.add_argument("file", help="HDF5 file written by biotp (train, simulate, compare or run)")
    p.add_argument("--what", metavar="KIND,KIND,...",
                   help=f"figure kinds, some of {','.join(KINDS)} (default: all the file contains)")
    p.add_argument("--out", metavar="DIR", help="directory for the figures (default: the file's directory)")
    p.add_argument("--format", choices=FORMATS, default="png")
    p.set_defaults(func=run_plot)
    return p


def run_plot(args) -> int:
    for path in plot(args.file, args.what, args.out, args.format):
        print(path)
    return 0


__all__ = ["KINDS", "plot", "figures", "sources", "add_plot_parser", "learning_curves", "angles", "jml",
           "traces", "residual", "settling"]
