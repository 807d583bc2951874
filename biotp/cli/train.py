"""`biotp train CIRCUIT` / `biotp train --resume RUN.h5`: the fast path's discrete rules."""

from __future__ import annotations

from ..config.errors import BiotpError
from .options import add_common, circuit_of, command, set_threads


def add_parser(sub):
    p = sub.add_parser("train", help="train a circuit with a discrete learning rule (torch fast path)",
                       description="Train CIRCUIT with its learning rule, writing per-epoch metrics and a "
                                   "checkpoint to an HDF5 run file after every epoch.")
    p.add_argument("circuit", nargs="?", help="circuit YAML file (omit with --resume)")
    p.add_argument("--algorithm", help="learning rule: bp, fa, dfa, tp, dtp, sdtp, ao_sdtp, fwdtp, ... "
                                       "(shared hyperparameters are kept)")
    p.add_argument("--epochs", type=int, help="number of epochs (overrides schedule.epochs)")
    p.add_argument("--out", help="run file to write (HDF5); default runs/<name>-<algorithm>.h5")
    p.add_argument("--resume", metavar="RUN.h5", help="continue this run file from its last checkpoint")
    p.add_argument("--track-angles", action="store_true", help="record the per-layer angle to BP's update each epoch")
    p.add_argument("--track-jml", action="store_true",
                   help="record the per-layer Jacobian matching losses IJML, PJML, TJML (seed 003) of the rule's "
                        "feedback each epoch, on 2 fixed training examples (two full Jacobians per layer and "
                        "example); nan where the rule has no feedback map g_l or J_f is not square (IJML)")
    add_common(p)
    return p


def run(args) -> int:
    from ..training import train

    if args.circuit is None and args.resume is None:
        raise BiotpError("train: give a CIRCUIT file, or --resume RUN.h5")
    set_threads(args)
    circuit = circuit_of(args) if args.circuit else None
    if circuit is None and (args.overrides or args.seed is not None or args.algorithm):
        from ..runs import open_run  # the run's own circuit with the changes, which train() then refuses by name

        circuit = circuit_of(args, base=open_run(args.resume).circuit)
    out = args.out
    if out is None and args.resume is None:
        out = f"runs/{circuit.name}-{circuit.algorithm.name}.h5"
    result = train(circuit, out=out, resume=args.resume, epochs=args.epochs, data_dir=args.data_dir,
                   device=args.device, track_angles=args.track_angles, track_jml=args.track_jml,
                   progress=not args.quiet, command=command(args))
    print(result.metrics_table())
    print(f"\nrun file: {result.path}")
    return 0
