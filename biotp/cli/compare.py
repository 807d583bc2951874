"""`biotp compare CIRCUIT --algorithms bp,dtp,...`: several rules, same data, seed and weights."""

from __future__ import annotations

import argparse

from .options import add_common, circuit_of, command, set_threads


def add_parser(sub):
    p = sub.add_parser(
        "compare", help="train several rules on the same circuit, data and seed; one file and a table",
        description="Train CIRCUIT once per learning rule (same data, seed and initial forward weights), "
                    "write one comparison file (rewritten after each rule, so an interrupted comparison "
                    "resumes) and print a table: final errors, seconds per epoch and ratio to BP, angles to BP.")
    p.add_argument("circuit", help="circuit YAML file")
    p.add_argument("--algorithms", required=True, metavar="RULE,RULE,...", help="e.g. bp,fa,dtp,sdtp")
    p.add_argument("--epochs", type=int, help="epochs per rule (overrides schedule.epochs)")
    p.add_argument("--out", metavar="FILE.h5", help="comparison file (default runs/<name>-compare.h5)")
    p.add_argument("--track-angles", action=argparse.BooleanOptionalAction, default=True,
                   help="record each rule's per-layer angle to BP every epoch (default: on)")
    add_common(p)
    return p


def run(args) -> int:
    from ..compare import compare

    set_threads(args)
    circuit = circuit_of(args)
    out = args.out or f"runs/{circuit.name}-compare.h5"
    result = compare(circuit, args.algorithms, epochs=args.epochs, out=out, data_dir=args.data_dir,
                     device=args.device, track_angles=args.track_angles, progress=not args.quiet,
                     command=command(args))
    print(result.markdown())
    print(f"\ncomparison file: {result.path}")
    return 0
