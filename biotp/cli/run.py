"""`biotp run PROTOCOL`: the experiment a protocol file describes."""

from __future__ import annotations

import argparse

from .export import add_nwb_option, check_nwb_option, export_after_run
from .options import add_data_dir, add_quiet, add_threads, command, set_threads


def add_parser(sub):
    p = sub.add_parser(
        "run", help="run a protocol: stimuli, interventions, recordings, sweeps",
        description="Run the experiment a PROTOCOL file describes (see protocols/) and write every sweep point to "
                    "one HDF5 file.  An existing output written by the same protocol is resumed point by point.",
        epilog="examples:\n  biotp run protocols/settle.yaml\n"
               "  biotp run protocols/feedback_lesion.yaml --set phases.1.trials=100 --out runs/lesion.h5\n"
               "  biotp run protocols/settle_time_sweep.yaml --set circuit.dynamics.tau_t='1 ms'",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("protocol", help="protocol YAML file")
    p.add_argument("--out", metavar="RUN.h5", help="run file (default runs/<protocol name>.h5)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                   help="override a protocol field (stimuli.count=20) or, prefixed circuit., a circuit field "
                        "(circuit.dynamics.tau_t='1 ms'); repeatable")
    add_data_dir(p)
    add_threads(p, 1)
    add_quiet(p)
    add_nwb_option(p)
    return p


def run(args) -> int:
    from ..protocols import load_protocol, run_protocol

    set_threads(args)
    protocol = load_protocol(args.protocol, args.overrides)
    out = args.out or f"runs/{protocol.name}.h5"
    check_nwb_option(args, out, "a protocol on engine discrete" if protocol.engine == "discrete" else None)
    result = run_protocol(protocol, out=out, data_dir=args.data_dir, progress=not args.quiet, command=command(args))
    print(result.summary_text())
    export_after_run(args, result.path)
    return 0
