"""`biotp inspect RUN.h5`: a run file's attributes, circuit and metrics; `biotp inspect study.db`:
a sweep's trials."""

from __future__ import annotations


def add_parser(sub):
    p = sub.add_parser("inspect", help="print a run file's configuration and metrics, or a sweep's trials",
                       description="Print the attributes, the resolved circuit and the metrics table of a run file; "
                                   "given a sweep's study.db (SQLite), each trial's state, seed, objective value, "
                                   "searched values and run file.")
    p.add_argument("run", help="run file (HDF5), or a sweep's study.db")
    return p


def run(args) -> int:
    from ..runs import ATTRS, metrics_table, open_run

    if _is_sqlite(args.run):
        from ..sweep import describe_storage

        print(describe_storage(args.run))
        return 0
    r = open_run(args.run)
    for k, v in r.attrs.items():
        if k != "circuit_yaml":
            print(f"{k}: {v}")
    if "circuit_yaml" in r.attrs:
        print("\ncircuit:")
        print("  " + r.attrs["circuit_yaml"].strip().replace("\n", "\n  "))
    if r.metrics:
        print("\nmetrics:")
        print(r.metrics_table())
    for key, point in r.groups.get("points", {}).items():  # a protocol's sweep points
        print(f"\npoint {key}: {point.get(ATTRS, {}).get('label', '')}")
        print(metrics_table(point.get("metrics", {})))
    for group in r.groups:
        if group not in ("metrics", "checkpoint", "points"):
            print(f"\ngroup /{group}: {', '.join(r.groups[group]) if isinstance(r.groups[group], dict) else ''}")
    return 0


def _is_sqlite(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(16) == b"SQLite format 3\x00"
    except OSError:
        return False  # open_run names the problem
