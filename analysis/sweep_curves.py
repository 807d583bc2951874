"""Learning curves of several sweeps' best configurations in one figure: each rule's training
loss and training (dashed) and test (solid) error, the mean ± s.d. over its seeds (what
`biotp sweep SWEEP.yaml --report` draws as curves.png for one sweep).  For a figure whose
curves come from different sweeps, e.g. seed 002 Fig. 3.3 (DTP, BP with the straight-through
estimator, BP with W1 fixed):

    python analysis/sweep_curves.py analysis/sweeps/dtp_mnist_sign_seeds.yaml \\
        analysis/sweeps/dtp_mnist_sign_fixed_w1_seeds.yaml \\
        --label DTP --label "BP, straight-through" --label "BP, W1 fixed" \\
        --error-max 5 --log-loss --out analysis/figures/dtp_mnist_sign_curves.png

Curves are labelled by rule (by "sweep: rule" when several sweeps are given), or by --label,
once per curve in the sweeps' and their rules' order.  Only trials that have finished count;
the legend gives each curve's number of seeds.  Reads the studies, writes nothing else.
"""

from __future__ import annotations

import argparse
import sys
from contextlib import ExitStack
from pathlib import Path

import h5py

from biotp.errors import BiotpError
from biotp.plots.curves import curves_over_seeds
from biotp.sweep import best_of, load_studies, load_sweep


def sweep_curves(sweep_files: list[str | Path], labels: list[str] | None = None, error_max: float | None = None,
                 log_loss: bool = False):
    """The figure of the best configuration's runs of every rule of `sweep_files`; the error
    axis from 0 to `error_max` % (default: all of it), the loss axis logarithmic with `log_loss`
    (a loss that falls by decades, as a net fitting its training set)."""
    curves = []  # (default label, run files)
    for path in sweep_files:
        sweep = load_sweep(path)
        for rule, study in load_studies(sweep).items():
            result = best_of(sweep, rule, study)
            curves.append((f"{sweep.name}: {rule}" if len(sweep_files) > 1 else rule, result.runs))
    labels = labels or [label for label, _ in curves]
    if len(labels) != len(curves) or len(set(labels)) != len(labels):
        raise BiotpError(f"--label: expected {len(curves)} distinct labels, one per curve "
                         f"({', '.join(label for label, _ in curves)}); got {labels}")
    if not any(runs for _, runs in curves):
        raise BiotpError(f"{', '.join(map(str, sweep_files))}: no trial has finished yet")
    with ExitStack() as stack:
        runs = {label: [stack.enter_context(h5py.File(run, "r")) for run in files]
                for label, (_, files) in zip(labels, curves)}
        fig = curves_over_seeds(runs)
    for ax in fig.axes:
        if error_max is not None and ax.get_ylabel().endswith("(%)"):
            ax.set_ylim(0, error_max)
        if log_loss and "loss" in ax.get_ylabel():
            ax.set_yscale("log")
    return fig


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("sweeps", nargs="+", help="sweep files (YAML) whose studies hold finished trials")
    p.add_argument("--out", required=True, help="the figure's file (.png or .pdf)")
    p.add_argument("--label", action="append", help="a curve's label, once per rule of each sweep, in order")
    p.add_argument("--error-max", type=float, metavar="PCT", help="the error axis from 0 to PCT %% (default: all)")
    p.add_argument("--log-loss", action="store_true", help="the training loss on a logarithmic axis")
    args = p.parse_args(argv)
    if args.error_max is not None and not args.error_max > 0:
        p.error(f"--error-max {args.error_max}: expected a percentage above 0")
    if Path(args.out).suffix not in (".png", ".pdf"):  # checked before the studies are read
        p.error(f"--out {args.out}: expected a .png or .pdf file")
    try:
        fig = sweep_curves(args.sweeps, args.label, args.error_max, args.log_loss)
        try:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            fig.savefig(args.out, dpi=110, bbox_inches="tight")
        except OSError as err:
            raise BiotpError(f"--out {args.out}: cannot write the figure ({err.strerror or err})") from None
        print(args.out)
    except BiotpError as err:
        print(f"sweep_curves: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
