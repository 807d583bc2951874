"""`biotp sweep SWEEP.yaml`: a hyperparameter search over circuit fields, resumable."""

from __future__ import annotations

import argparse
import sys

from ..config.errors import BiotpError
from .options import add_data_dir, count, seed_list


def add_parser(sub):
    p = sub.add_parser(
        "sweep", help="hyperparameter search over circuit fields (Optuna), resumable; --report summarises",
        description="Run the trials of SWEEP.yaml (each an ordinary `biotp train` run file under the sweep's "
                    "directory); run the same command again to resume an interrupted sweep.",
        epilog="examples:\n  biotp sweep analysis/sweeps/mlp_digits.yaml\n"
               "  biotp sweep analysis/sweeps/mlp_digits.yaml --report\n"
               "  biotp sweep analysis/sweeps/mlp_digits.yaml --archive analysis/results/sweeps/mlp_digits\n"
               "  biotp sweep SWEEP.yaml --dask tcp://scheduler:8786 --storage postgresql://user@host/db\n",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sweep", help="sweep YAML file")
    p.add_argument("--report", action="store_true",
                   help="summarise instead of running: best configuration per rule, errors over seeds, figures "
                        "(of a sweep still running: over the seeds done so far)")
    p.add_argument("--best-to", metavar="FILE",
                   help="with --report: write FILE, a sweep training each rule's best configuration over --seeds "
                        "for --epochs on all the data (the second stage of a search)")
    p.add_argument("--archive", metavar="DIR",
                   help="instead of running: copy the studies and the finished trials' run files, without their "
                        "checkpoints, to DIR (new, or an earlier --archive of this sweep, then brought up to date): a "
                        "compact record to commit; read it back with --out DIR --report")
    p.add_argument("--seeds", type=seed_list, default=[0, 1, 2], help="seeds of --best-to (default: 0,1,2)")
    p.add_argument("--epochs", type=count, help="epochs of --best-to (default: the circuit's schedule.epochs)")
    p.add_argument("--workers", type=int, help="local worker processes (default: one per core)")
    p.add_argument("--threads", type=count,
                   help="torch threads per local worker (default: cores / workers; 1 when several sweeps "
                        "share the cores, as idle threads of an oversubscribed process spin)")
    p.add_argument("--dask", metavar="ADDRESS", help="run trials on this Dask scheduler (dask.distributed)")
    p.add_argument("--storage", metavar="URL",
                   help="Optuna storage URL (default: sqlite:///<out>/study.db)")
    p.add_argument("--out", help="output directory (default: the sweep's `out`, else runs/sweeps/<name>)")
    add_data_dir(p)
    return p


def run(args) -> int:
    from ..sweep import archive, load_sweep, report, run_sweep, write_best

    sweep = load_sweep(args.sweep, out=args.out)
    if args.best_to and not args.report:
        raise BiotpError("--best-to: expected with --report (the best configurations come from the finished search)")
    if args.archive:
        if args.report:
            raise BiotpError("--archive: expected without --report (archive, then `--out DIR --report`)")
        copied = archive(sweep, args.archive, storage=args.storage)
        print(f"archived {sweep.source} to {args.archive}: "
              + ", ".join(f"{rule} {n} run files" for rule, n in copied.items()))
        return 0
    if args.workers is not None and args.workers < 1:
        raise BiotpError(f"--workers {args.workers}: expected at least 1")
    if not args.report:
        run_sweep(sweep, workers=args.workers, dask=args.dask, storage=args.storage, data_dir=args.data_dir,
                  threads=args.threads, log=lambda line: print(line, flush=True))
    result = report(sweep, storage=args.storage)
    print(result.markdown())
    if args.report:
        print("\nfigures: " + ", ".join(str(p) for p in result.figures), file=sys.stderr)
    if args.best_to:
        print(f"wrote {write_best(sweep, result, args.best_to, args.seeds, args.epochs)}", file=sys.stderr)
    return 0
