"""The `biotp` command line: one module per verb, each a thin layer over the Python API.

Each verb module has `add_parser(subparsers)` and `run(args) -> exit code`; the options
several verbs share (`--data-dir`, `--device`, `--threads`, `--quiet`, `--set`, `--seed`)
are defined once, in `options`.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from ..config.errors import BiotpError

# the verbs, in the order `biotp --help` lists them; each is biotp.cli.<verb>
VERBS = ("train", "simulate", "run", "compare", "sweep", "inspect", "plot", "export", "data")

EPILOG = """examples:
  biotp simulate circuits/mlp.yaml                  settle targets with online plasticity
  biotp train circuits/mlp.yaml --algorithm bp      the same net trained by backprop
  biotp train circuits/mlp.yaml --set data.batch_size=64 --out runs/mlp.h5 --track-angles
  biotp train --resume runs/mlp.h5 --epochs 20       continue an interrupted run
  biotp inspect runs/mlp.h5                         configuration and metrics table
  biotp compare circuits/mlp.yaml --algorithms bp,fa,dtp --out runs/cmp.h5
                                                    several rules, same data, seed and weights
  biotp plot runs/cmp.h5 -o figures                 learning curves, angles, traces, residuals
  biotp sweep analysis/sweeps/mlp_digits.yaml       hyperparameter search (Optuna); rerun to resume
  biotp sweep analysis/sweeps/mlp_digits.yaml --report   best configuration per rule, errors over seeds
  biotp inspect runs/sweeps/mlp_digits/study.db     every trial of a sweep: state, seed, value, run file
  biotp export runs/sim.h5 --nwb runs/sim.nwb       a simulate or protocol run file as NWB
  biotp data list                                   which datasets are present
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="biotp",
        description="Continuous-time simulation and discrete training of target-propagation circuits.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for verb in VERBS:
        module = importlib.import_module(f"{__name__}.{verb}")
        module.add_parser(sub).set_defaults(func=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    args.argv = argv  # recorded in run files as the command
    try:
        return args.func(args)
    except BiotpError as err:
        print(f"biotp: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("biotp: interrupted; the run file keeps its last complete epoch", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (biotp inspect RUN.h5 | head)
        sys.stderr.close()
        return 0


__all__ = ["VERBS", "build_parser", "main"]
