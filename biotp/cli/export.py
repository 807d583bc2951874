"""`biotp export RUN.h5 --nwb OUT.nwb`, and the `--nwb` option of `biotp simulate` and `biotp run`."""

from __future__ import annotations

import argparse

from ..config.errors import ConfigError


def add_parser(sub):
    p = sub.add_parser(
        "export", help="write a simulate or protocol run file as NWB (Neurodata Without Borders)",
        description="Write RUN (a run file of `biotp simulate` or `biotp run`) as an NWB file: every recorded "
                    "variable as a TimeSeries, the trials table, phases and intervention windows, evaluations, "
                    "weights, and the circuit and protocol in the metadata (see biotp/nwb/__init__.py).",
        epilog="examples:\n  biotp export runs/lesion.h5 --nwb runs/lesion.nwb\n"
               "  biotp run protocols/settle.yaml --nwb runs/settle.nwb   (export right after the run)",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="run file (HDF5) of biotp simulate or biotp run")
    p.add_argument("--nwb", metavar="OUT.nwb", required=True, help="NWB file to write")
    p.add_argument("--force", action="store_true", help="overwrite OUT.nwb if it exists")
    return p


def run(args) -> int:
    from ..nwb import export_nwb

    print(f"NWB file: {export_nwb(args.run, args.nwb, force=args.force)}")
    return 0


def add_nwb_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--nwb", metavar="OUT.nwb", help="also write the run file as NWB once the run is done "
                                                         "(as `biotp export RUN --nwb OUT.nwb` would)")


def check_nwb_option(args, run_file: str | None, refused: str | None = None) -> None:
    """Before a run with --nwb: a run file to export from, a free output path; `refused`
    names a mode of the command that has no trials to export."""
    if args.nwb is None:
        return
    if refused:
        raise ConfigError(f"--nwb {args.nwb}: {refused} has no trials to export; NWB export takes the run files "
                          "of simulate streams and protocols")
    if run_file is None:
        raise ConfigError(f"--nwb {args.nwb}: the NWB file is exported from the run file; give --out RUN.h5 too")
    from ..nwb import check_output

    check_output(args.nwb, run=run_file)


def export_after_run(args, run_file) -> None:
    if args.nwb is not None:
        from ..nwb import export_nwb

        print(f"NWB file: {export_nwb(run_file, args.nwb)}")
