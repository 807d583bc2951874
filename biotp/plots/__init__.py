"""`biotp plot FILE.h5`: figures (PNG or PDF, matplotlib Agg) of what a biotp file holds.

The plot functions take h5py groups laid out like a run (metrics/, traces/, residual/,
settling/, checkpoint/), so a train run's root, a comparison's /runs/<rule> and a
protocol's /points/<p> are handled alike; several groups overlay in one figure.  The
dispatcher here finds the groups by the file's kind:

  train, simulate, continuous   the root
  compare                       /runs/<rule>, in the order of the `algorithms` attribute
  protocol                      /points/<p>, labelled by their `label` attribute (else `params`)

and writes `<stem>-<kind>[-<group>].<format>` for each figure kind it asked for or, without
`what`, for everything the file contains that says something:

  summary    a protocol's own figure (its `figure` key, else inferred; biotp.plots.summary)
  curves     loss and errors against epoch or trial (not drawn by default when every
             curve is flat: nothing was learnt, e.g. plasticity off)
  angles     angle to BP per layer (or, with a discrete reference, to its update) and distances
  dW         ‖ΔW_l‖ between evaluations, phases marked (not drawn by default when all zero)
  vs_bp      a comparison's rules against BP: test error and angle per layer on one page
  cost       a comparison's seconds per epoch as a multiple of BP's
  reference  settling against the discrete rule: both test errors, the angle per layer
  jml        Jacobian matching losses
  traces     heatmaps and lines, one figure per group, the forward→target switch marked
  residual   settling residual against time (log scale)
  settling   a simulation's per-example settling summary
  filters    first-layer weights as pictures

Every figure's title names the circuit, dataset, rule(s) and seed(s) (biotp.plots.context).
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py

from ..errors import BiotpError
from .common import add_context, decode, has_metrics, informative, metrics
from .context import describe, point_params, protocol_of
from .curves import angles, jml, learning_curves, updates
from .settling import residual, settling
from .traces import trace_items, traces

KINDS = ("summary", "curves", "angles", "dW", "vs_bp", "cost", "reference", "jml", "traces", "residual", "settling",
         "filters")
FORMATS = ("png", "pdf")
TITLES = {"curves": "learning curves", "angles": "update angles per layer", "dW": "weight change per layer",
          "jml": "Jacobian matching losses", "traces": "recorded traces", "residual": "settling residual",
          "settling": "settling per example"}


def sources(f: h5py.File) -> dict[str, h5py.Group]:
    """label -> group for every run-like group of the file (see the module docstring)."""
    if isinstance(f.get("runs"), h5py.Group):
        runs = f["runs"]
        order = [a for a in decode(f.attrs.get("algorithms", "")).split(",") if a in runs]
        return {name: runs[name] for name in order + sorted(set(runs) - set(order))}
    if isinstance(f.get("points"), h5py.Group):
        found = {}
        for name, g in sorted(f["points"].items()):
            if isinstance(g, h5py.Group):
                label = _point_label(name, g)
                found[label if label not in found else f"{label} ({name})"] = g  # repeated points stay apart
        return found
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


FIRST_LAYER = ("checkpoint/model/net.layers.0.weight",  # a train run's checkpoint
               "checkpoint/W/1")  # a continuous training run's


def _filter_sources(path: Path, groups: dict[str, h5py.Group], f: h5py.File) -> dict[str, tuple]:
    """label -> (first-layer weights, image shape, title) for groups holding a dense first
    layer that reads an image (the inputs of a dataset with a [channels, height, width] shape);
    the title names the layer, the rule and the epoch or trial count."""
    from ..data import DATASETS
    from .common import circuit_of
    from .context import rule_of

    circuit = circuit_of(f)
    if circuit is None or circuit.data.dataset not in DATASETS:
        return {}
    shape = tuple(DATASETS[circuit.data.dataset].input_shape)
    found = {}
    for label, g in groups.items():
        w = next((g[k] for k in FIRST_LAYER if isinstance(g.get(k), h5py.Dataset)), None)
        if w is None or w.ndim != 2 or len(shape) != 3 or w.shape[1] != shape[0] * shape[1] * shape[2]:
            continue
        rule = label or rule_of(f, circuit)
        when = ""
        if isinstance(g.get("checkpoint/epoch"), h5py.Dataset):
            when = f"after epoch {int(g['checkpoint/epoch'][()])}"
        elif has_metrics(g, "^trial$"):
            when = f"after {int(metrics(g)[1][-1])} trials"
        found[label] = (w[()], shape, " · ".join(t for t in ("layer 1 filters", rule, when) if t))
    return found


def figures(path: str | Path, what: list[str] | None = None) -> list[tuple[str, object]]:
    """[(name, matplotlib Figure)] for the file at `path`; `what` picks figure kinds (default:
    all the file has that is not degenerate).  An asked-for kind the file lacks is an error
    naming the file."""
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
        asked = bool(what)

        def with_metrics(pattern, worth=lambda g: True):
            return {k: g for k, g in groups.items() if has_metrics(g, pattern) and (asked or worth(g))}

        available = {
            "curves": (with_metrics(r"_(loss|error|mse)$", lambda g: _learns(g, r"_(loss|error|mse)$")), learning_curves),
            "angles": (with_metrics(r"^(angle|distance)_layer\d+$"), angles),
            "dW": (with_metrics(r"^dW_layer\d+$", lambda g: _learns(g, r"^dW_layer\d+$")), updates),
            "jml": (with_metrics(r"^[ipt]jml_layer\d+$"), jml),
            "residual": ({k: g for k, g in groups.items() if isinstance(g.get("residual"), h5py.Group) and len(g["residual"])}, residual),
        }
        if kind == "compare" and len(groups) > 1:
            available["vs_bp"] = (groups, _versus("rules_vs_bp"))
        if kind == "compare" and has_metrics(groups.get("bp", f), "^seconds$"):
            available["cost"] = (groups, _versus("cost"))
        if kind != "protocol" or asked:
            available["reference"] = (with_metrics(r"^reference_test_error$"), _versus("settling_vs_discrete"))
        out: list[tuple[str, object]] = []
        for name in what or KINDS:
            if name in available:
                chosen, draw = available[name]
                if chosen:
                    out.append((name, draw(chosen)))
            elif name == "summary":
                out += _summary(f, groups)
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
                f"{path}: nothing to plot (kind {kind!r}): no metrics columns that change, traces/, residual/ or "
                f"settling/ in {', '.join(g.name for g in groups.values())}"
            )
        context = describe(f)
        for name, fig in out:
            if fig._suptitle is None and name.split("-")[0] in TITLES:
                fig.suptitle(TITLES[name.split("-")[0]])
            add_context(fig, context)
        return out


def _learns(group: h5py.Group, pattern: str) -> bool:
    """Some column matching `pattern` changes: a figure of it says more than its name."""
    import re

    return any(re.search(pattern, c) and informative(v) for c, v in metrics(group)[2].items())


def _versus(name: str):
    """A biotp.plots.versus figure function, imported when drawn."""
    def draw(groups):
        from . import versus

        return getattr(versus, name)(groups)
    return draw


def _summary(f: h5py.File, groups: dict) -> list[tuple[str, object]]:
    """The protocol's summary figure (see biotp.plots.summary)."""
    from . import summary, versus

    protocol = protocol_of(f)
    spec = protocol.summary_figure() if protocol is not None else None
    if spec is None or not groups or "" in groups:
        return []
    if spec.kind == "sweep":
        return [("summary", summary.sweep_figure(groups, spec))]
    if spec.kind == "phases":
        return [("summary", summary.phases_figure(groups))]
    if spec.kind == "reference":
        return [("summary", versus.settling_vs_discrete(groups))]
    if spec.kind == "rules":
        rules = {point_params(g).get("circuit.algorithm.name", label): g for label, g in groups.items()}
        return [("summary", versus.rules_vs_bp(rules))]
    settled = [g for g in groups.values() if trace_items(g) or isinstance(g.get("residual"), h5py.Group)]
    return [("summary", summary.settling_figure(settled[0]))] if settled else []


def _filters(path: Path, groups, f) -> list[tuple[str, object]]:
    """First-layer weights as pictures, by biotp.plots.filters.filter_figure (imported only here)."""
    found = _filter_sources(path, groups, f)
    if not found:
        return []
    from .filters import filter_figure

    # at most 100 filters, chosen at random as seed 002 Fig. 3.4 does
    return [("-".join(filter(None, ["filters", _slug(groups[label])])), filter_figure(w, shape, title=title, n=100))
            for label, (w, shape, title) in found.items()]


def plot(path: str | Path, what: list[str] | str | None = None, out: str | Path | None = None, fmt: str = "png",
         dpi: int = 120) -> list[Path]:
    """Write the figures of the file at `path` and return their paths: into directory `out`
    (default: the file's own) as `<stem>-<kind>[-<group>].<fmt>` at `dpi`; or, when `out` is
    a figure file name (`fig.png`, `fig.pdf`: its suffix sets the format), to that file if
    there is one figure, else beside it as `fig-<kind>[-<group>].<suffix>`."""
    if fmt not in FORMATS:
        raise BiotpError(f"--format {fmt}: expected one of {', '.join(FORMATS)}")
    if isinstance(what, str):
        what = [w.strip() for w in what.split(",") if w.strip()]
    path = Path(path)
    named = Path(out) if out is not None and Path(out).suffix.lower().lstrip(".") in FORMATS else None
    if named is not None:
        directory, fmt = named.parent, named.suffix.lower().lstrip(".")
    else:
        directory = Path(out) if out is not None else path.parent
        if directory.exists() and not directory.is_dir():
            raise BiotpError(f"--out {directory}: a file, not a directory; expected a directory for the figures "
                             f"or a figure file name ending in {' or '.join('.' + f for f in FORMATS)}")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise BiotpError(f"--out {directory}: cannot create the directory for the figures ({err.strerror})") from None
    found = list(figures(path, what))
    written = []
    for name, fig in found:
        if named is not None:
            target = named if len(found) == 1 else directory / f"{named.stem}-{name}.{fmt}"
        else:
            target = directory / f"{path.stem}-{name}.{fmt}"
        fig.savefig(target, format=fmt, dpi=dpi)
        written.append(target)
    return written


# ------------------------------------------------------------------------------ CLI


__all__ = ["KINDS", "plot", "figures", "sources", "learning_curves", "angles", "jml",
           "traces", "residual", "settling", "updates"]
