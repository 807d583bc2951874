"""`biotp simulate CIRCUIT`: the continuous-time model on a stream of examples, or trained
over epochs (`--epochs`, `--resume`)."""

from __future__ import annotations

import argparse

from ..config.errors import ConfigError
from .export import add_nwb_option, check_nwb_option, export_after_run
from .options import add_common, command, count, set_threads


def add_parser(sub):
    from ..simulation import BACKENDS

    p = sub.add_parser(
        "simulate", help="run the continuous-time model: settle targets with online plasticity",
        description="Present a stream of examples to CIRCUIT's continuous-time model (forward phase, then "
                    "target phase), record the traces its `dynamics.record` names and print a summary.  With "
                    "--epochs, train the continuous model on the whole training set instead (per-epoch metrics "
                    "and checkpoints like `biotp train`; --resume continues such a run).",
        epilog="examples:\n  biotp simulate circuits/mlp.yaml\n  biotp simulate circuits/mlp.yaml --backend brian2 "
               "--examples 5\n  biotp simulate circuits/mlp.yaml --epochs 3 --out runs/mlp-continuous.h5\n"
               "  biotp simulate --resume runs/mlp-continuous.h5 --epochs 5",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("circuit", nargs="?", help="circuit YAML file (with a `dynamics:` block)")
    p.add_argument("--backend", choices=BACKENDS, default="torch")
    p.add_argument("--codegen", choices=("numpy", "cython"), default="numpy", help="brian2 code generation target")
    p.add_argument("--out", metavar="TRACES.h5", help="run file to write (HDF5)")
    p.add_argument("--examples", type=count, default=100, help="number of examples in the stream (default 100)")
    p.add_argument("--duration", help="simulated time of the stream, e.g. '1 s' (limits the examples)")
    p.add_argument("--batch-size", type=count, help="examples presented side by side (torch)")
    p.add_argument("--epochs", type=count, help="train: this many epochs over the training set in data.batch_size "
                                              "batches, evaluating after each (see biotp/continuous.py)")
    p.add_argument("--resume", metavar="RUN.h5", help="continue a continuous-time training run file")
    p.add_argument("--reference", action="store_true",
                   help="with --epochs: run the fast path's own rule beside it (dtp; dtp_gn for dtp1; gtp for the "
                        "gradient relaxation) and record its test error and the angle between the two updates of every "
                        "batch")
    add_common(p, threads=1)  # one thread: small networks run fastest
    add_nwb_option(p)
    return p


def run(args) -> int:
    from ..simulation import simulate

    set_threads(args)
    training = args.epochs is not None or args.resume is not None
    check_nwb_option(args, args.out, "continuous-time training (--epochs, --resume)" if training else None)
    if training:
        return _train(args)
    if args.circuit is None:
        raise ConfigError("biotp simulate: give a circuit file (or --resume RUN.h5)")
    if args.reference:
        raise ConfigError("biotp simulate --reference: the fast path's rule runs beside a training run; "
                          "expected --epochs N as well")
    result = simulate(args.circuit, args.backend, examples=args.examples, duration=args.duration,
                      overrides=args.overrides, seed=args.seed, device=args.device, batch_size=args.batch_size,
                      out=args.out, data_dir=args.data_dir, codegen=args.codegen, progress=not args.quiet,
                      command=command(args))
    print(result.summary_text())
    export_after_run(args, result.path)
    return 0


def _train(args) -> int:
    """`biotp simulate CIRCUIT --epochs N` / `--resume RUN.h5`: continuous-time training."""
    from ..circuit import load_circuit
    from ..continuous import train_continuous
    from ..runs import metrics_table

    circuit = load_circuit(args.circuit, args.overrides) if args.circuit else None
    if circuit is not None and args.seed is not None:
        circuit = circuit.model_copy(update={"seed": args.seed})
    out = args.out or (None if args.resume else f"runs/{circuit.name}-continuous.h5")
    result = train_continuous(circuit, engine=args.backend, out=out, resume=args.resume, epochs=args.epochs,
                              data_dir=args.data_dir, device=args.device, codegen=args.codegen,
                              reference=args.reference, progress=not args.quiet, command=command(args))
    print(metrics_table(result.metrics))
    print(f"run file: {result.path}")
    return 0
