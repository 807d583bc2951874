"""`biotp plot FILE -o DIR`: the figures of any file biotp writes."""

from __future__ import annotations

import argparse

from ..config.errors import BiotpError


def add_parser(sub):
    from ..plots import FORMATS, KINDS

    p = sub.add_parser(
        "plot", help="figures of a run, simulation, comparison or protocol file",
        description="Draw what FILE holds: a protocol's summary figure, learning curves, angles to BP, weight "
                    "changes, a comparison's rules against BP and their cost, settling against the discrete "
                    "rule, Jacobian matching losses, traces, the settling residual (log scale), filters.  Figures "
                    "are written as <stem>-<kind>[-<group>].<format>.",
        epilog="examples:\n  biotp plot runs/mlp.h5 -o figures\n  biotp plot runs/cmp.h5 --what curves,angles",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file", help="HDF5 file written by biotp (train, simulate, compare or run)")
    p.add_argument("--what", metavar="KIND,KIND,...",
                   help=f"figure kinds, some of {','.join(KINDS)} (default: all the file contains)")
    p.add_argument("-o", "--out", metavar="DIR", help="directory for the figures (default: the file's directory)")
    p.add_argument("--format", choices=FORMATS, default="png")
    p.add_argument("--dpi", type=int, default=120, help="resolution of PNG figures (default 120)")
    return p


def run(args) -> int:
    from ..plots import plot

    if args.dpi < 10:
        raise BiotpError(f"--dpi {args.dpi}: expected a resolution of at least 10 dots per inch")
    for path in plot(args.file, args.what, args.out, args.format, args.dpi):
        print(path)
    return 0
