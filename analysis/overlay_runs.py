"""Overlay several run files in one figure per kind (what `biotp plot`, one file at a time,
does for the rules of a comparison file), e.g. seed 004 Fig. 4 from separate train runs:

    python analysis/overlay_runs.py runs/bartunov_fc_*.h5 --out figures/bartunov_fc
    python analysis/overlay_runs.py runs/a.h5 runs/b.h5 --what angles --label A --label B

Writes <out>-curves.png, <out>-angles.png, <out>-dW.png, <out>-jml.png for the kinds the files have.
Lines are labelled by file name (or --label, once per file, in order).
"""

from __future__ import annotations

import argparse
import sys
from contextlib import ExitStack
from pathlib import Path

import h5py

from biotp.errors import BiotpError
from biotp.plots import angles, jml, learning_curves, updates
from biotp.plots.common import has_metrics

KINDS = {"curves": (r"_(loss|error)$", learning_curves), "angles": (r"^(angle|distance)_layer\d+$", angles),
         "dW": (r"^dW_layer\d+$", updates), "jml": (r"^[ipt]jml_layer\d+$", jml)}


def overlay(paths: list[str | Path], out: str | Path, what: list[str] | None = None, labels: list[str] | None = None,
            fmt: str = "png") -> list[Path]:
    """Write one figure per kind overlaying the runs at `paths`; return the files written."""
    paths = [Path(p) for p in paths]
    labels = labels or [p.stem for p in paths]
    if len(labels) != len(paths) or len(set(labels)) != len(labels):
        raise BiotpError(f"--label: expected {len(paths)} distinct labels, one per file; got {labels}")
    unknown = [w for w in (what or []) if w not in KINDS]
    if unknown:
        raise BiotpError(f"--what {','.join(unknown)}: expected some of {', '.join(KINDS)}")
    written = []
    with ExitStack() as stack:
        files = {}
        for label, path in zip(labels, paths):
            if not path.exists():
                raise BiotpError(f"{path}: no such run file")
            files[label] = stack.enter_context(h5py.File(path, "r"))
        for kind in what or KINDS:
            pattern, draw = KINDS[kind]
            chosen = {label: f for label, f in files.items() if has_metrics(f, pattern)}
            if not chosen:
                if what:
                    raise BiotpError(f"--what {kind}: none of the files has such metrics")
                continue
            target = Path(f"{out}-{kind}.{fmt}")
            target.parent.mkdir(parents=True, exist_ok=True)
            draw(chosen).savefig(target, format=fmt, dpi=120)
            written.append(target)
    if not written:
        raise BiotpError("nothing to plot: none of the files has /metrics columns")
    return written


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="run files (HDF5) with /metrics")
    p.add_argument("--out", required=True, help="output prefix: <out>-<kind>.<format>")
    p.add_argument("--what", help=f"some of {','.join(KINDS)} (default: all the files have)")
    p.add_argument("--label", action="append", help="line label per file, in order (default: file names)")
    p.add_argument("--format", choices=("png", "pdf"), default="png")
    args = p.parse_args(argv)
    try:
        for path in overlay(args.runs, args.out, args.what.split(",") if args.what else None, args.label, args.format):
            print(path)
    except BiotpError as err:
        print(f"overlay_runs: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
