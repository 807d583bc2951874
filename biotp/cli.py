"""The `biotp` command line: one subcommand per verb, each a thin layer over the Python API."""

from __future__ import annotations

import argparse
import shlex
import sys

from .errors import BiotpError

EPILOG = """examples:
  biotp simulate circuits/mlp.yaml                  settle targets with online plasticity
  biotp train circuits/mlp.yaml --algorithm bp      the same net trained by backprop
  biotp train circuits/mlp.yaml --set data.batch_size=64 --out runs/mlp.h5 --track-angles
  biotp train --resume runs/mlp.h5 --epochs 20       continue an interrupted run
  biotp inspect runs/mlp.h5                         configuration and metrics table
  biotp compare circuits/mlp.yaml --algorithms bp,fa,dtp --out runs/cmp.h5
                                                    several rules, same data, seed and weights
  biotp plot runs/cmp.h5 --out figures              learning curves, angles, traces, residuals
  biotp sweep analysis/sweeps/mlp_digits.yaml       hyperparameter search (Optuna); rerun to resume
  biotp sweep analysis/sweeps/mlp_digits.yaml --report   best configuration per rule, errors over seeds
  biotp export runs/sim.h5 --nwb runs/sim.nwb       a simulate or protocol run file as NWB
  biotp data list                                   which datasets are present
"""


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                   help="override any circuit field, e.g. --set optimizer.lr=1e-3 (repeatable; value parsed as YAML)")
    p.add_argument("--seed", type=int, help="random seed (overrides the circuit's `seed`)")
    p.add_argument("--data-dir", help="dataset directory (default: $BIOTP_DATA or ~/.biotp/data)")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when available)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="biotp",
        description="Continuous-time simulation and discrete training of target-propagation circuits.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    t = sub.add_parser("train", help="train a circuit with a discrete learning rule (torch fast path)",
                       description="Train CIRCUIT with its learning rule, writing per-epoch metrics and a "
                                   "checkpoint to an HDF5 run file after every epoch.")
    t.add_argument("circuit", nargs="?", help="circuit YAML file (omit with --resume)")
    t.add_argument("--algorithm", help="learning rule: bp, fa, dfa, tp, dtp, sdtp, ao_sdtp, fwdtp, ... "
                                       "(shared hyperparameters are kept)")
    t.add_argument("--epochs", type=int, help="number of epochs (overrides schedule.epochs)")
    t.add_argument("--out", help="run file to write (HDF5); default runs/<name>-<algorithm>.h5")
    t.add_argument("--resume", metavar="RUN.h5", help="continue this run file from its last checkpoint")
    t.add_argument("--track-angles", action="store_true", help="record the per-layer angle to BP's update each epoch")
    t.add_argument("--track-jml", action="store_true",
                   help="record the per-layer Jacobian matching losses IJML, PJML, TJML (seed 003) of the rule's "
                        "feedback each epoch, on 2 fixed training examples (two full Jacobians per layer and "
                        "example); nan where the rule has no feedback map g_l or J_f is not square (IJML)")
    t.add_argument("--quiet", action="store_true", help="no progress bars")
    _common(t)
    t.set_defaults(func=cmd_train)

    i = sub.add_parser("inspect", help="print a run file's configuration and metrics",
                       description="Print the attributes, the resolved circuit and the metrics table of a run file.")
    i.add_argument("run", help="run file (HDF5)")
    i.set_defaults(func=cmd_inspect)

    d = sub.add_parser("data", help="list or download datasets")
    dsub = d.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    dl = dsub.add_parser("list", help="which datasets are present")
    dl.add_argument("--data-dir")
    dl.set_defaults(func=cmd_data_list)
    df = dsub.add_parser("fetch", help="download a dataset and verify its checksums")
    df.add_argument("name", help="mnist, fashion_mnist or cifar10")
    df.add_argument("--data-dir")
    df.set_defaults(func=cmd_data_fetch)

    for extension in _extensions():
        extension(sub)
    return parser


def _extensions():
    """Subcommands that live beside their modules: each module has `add_<verb>_parser`."""
    import importlib
    import importlib.util

    found = []
    for module, name in (("simulation", "add_simulate_parser"), ("protocols", "add_run_parser"),
                         ("compare", "add_compare_parser"), ("plots", "add_plot_parser"), ("nwb", "add_export_parser"),
                         ("sweep", "add_sweep_parser")):
        if importlib.util.find_spec(f"biotp.{module}") is not None:  # errors inside a module still surface
            found.append(getattr(importlib.import_module(f"biotp.{module}"), name))
    return found


def _circuit(args, base=None):
    """The command's circuit: its file (or `base`, a resumed run's) with --set, --seed and
    --algorithm applied."""
    from .circuit import load_circuit

    overrides = list(args.overrides)
    if args.seed is not None:
        overrides.append(f"seed={args.seed}")
    circuit = load_circuit(args.circuit, overrides) if base is None else base.with_updates(*overrides)
    if getattr(args, "algorithm", None):
        circuit = circuit.with_algorithm(args.algorithm)
    return circuit


def cmd_train(args) -> int:
    from .training import train

    if args.circuit is None and args.resume is None:
        raise BiotpError("train: give a CIRCUIT file, or --resume RUN.h5")
    circuit = _circuit(args) if args.circuit else None
    if circuit is None and (args.overrides or args.seed is not None or args.algorithm):
        from .runs import open_run  # the run's own circuit with the changes, which train() then refuses by name

        circuit = _circuit(args, base=open_run(args.resume).circuit)
    out = args.out
    if out is None and args.resume is None:
        out = f"runs/{circuit.name}-{circuit.algorithm.name}.h5"
    run = train(circuit, out=out, resume=args.resume, epochs=args.epochs, data_dir=args.data_dir,
                device=args.device, track_angles=args.track_angles, track_jml=args.track_jml,
                progress=not args.quiet,
                command=shlex.join(["biotp", *args.argv]))
    print(run.metrics_table())
    print(f"\nrun file: {run.path}")
    return 0


def cmd_inspect(args) -> int:
    from .runs import ATTRS, metrics_table, open_run

    run = open_run(args.run)
    for k, v in run.attrs.items():
        if k != "circuit_yaml":
            print(f"{k}: {v}")
    if "circuit_yaml" in run.attrs:
        print("\ncircuit:")
        print("  " + run.attrs["circuit_yaml"].strip().replace("\n", "\n  "))
    if run.metrics:
        print("\nmetrics:")
        print(run.metrics_table())
    for key, point in run.groups.get("points", {}).items():  # a protocol's sweep points
        print(f"\npoint {key}: {point.get(ATTRS, {}).get('label', '')}")
        print(metrics_table(point.get("metrics", {})))
    for group in run.groups:
        if group not in ("metrics", "checkpoint", "points"):
            print(f"\ngroup /{group}: {', '.join(run.groups[group]) if isinstance(run.groups[group], dict) else ''}")
    return 0


def cmd_data_list(args) -> int:
    from .data import describe

    print(describe(args.data_dir))
    return 0


def cmd_data_fetch(args) -> int:
    from .data import fetch

    path = fetch(args.name, args.data_dir)
    print(f"{args.name}: ready in {path}")
    return 0


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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
