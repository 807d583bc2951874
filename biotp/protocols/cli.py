"""`biotp run PROTOCOL`: the command line of protocols."""

from __future__ import annotations

import argparse
import shlex

import torch

from ..simulation import count
from ..nwb import add_nwb_option, check_nwb_option, export_after_run
from .runner import run_protocol
from .schema import load_protocol


def add_run_parser(subparsers) -> argparse.ArgumentParser:
    """Register `biotp run` on an argparse subparsers object."""
    p = subparsers.add_parser(
        "run", help="run a protocol: stimuli, interventions, recordings, sweeps",
        description="Run the experiment a PROTOCOL file describes (see protocols/) and write every sweep point to "
                    "one HDF5 file.  An existing output written by the same protocol is resumed point by point.",
        epilog="examples:\n  biotp run protocols/settle.yaml\n"
               "  biotp run protocols/feedback_lesion.yaml --set stimuli.count=200 --out runs/lesion.h5\n"
               "  biotp run protocols/settle_time_sweep.yaml --set circuit.dynamics.tau_t='1 ms'",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("protocol", help="protocol YAML file")
    p.add_argument("--out", metavar="RUN.h5", help="run file (default runs/<protocol name>.h5)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                   help="override a protocol field (stimuli.count=20) or, prefixed circuit., a circuit field "
                        "(circuit.dynamics.tau_t='1 ms'); repeatable")
    p.add_argument("--data-dir", help="dataset directory")
    p.add_argument("--threads", type=count, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    add_nwb_option(p)
    p.set_defaults(func=cmd_run)
    return p


def cmd_run(args) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    protocol = load_protocol(args.protocol, args.overrides)
    out = args.out or f"runs/{protocol.name}.h5"
    check_nwb_option(args, out, "a protocol on engine discrete" if protocol.engine == "discrete" else None)
    argv = getattr(args, "argv", None)
    run = run_protocol(protocol, out=out, data_dir=args.data_dir, progress=not args.quiet,
                       command=shlex.join(["biotp", *argv]) if argv else None)
    print(run.summary_text())
    export_after_run(args, run.path)
    return 0
