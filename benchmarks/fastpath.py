"""Seconds per training epoch of every discrete rule against BP on the same net and data.

    python benchmarks/fastpath.py [--circuit circuits/dtp_mnist_7x240.yaml] [--data-dir DIR]
                                  [--rules bp,dtp,...] [--limit N] [--threads T]

Each rule runs in its own process (so peak memory is its own), on the same circuit, data and
seed; the timed part is one pass of training over the training set (no evaluation).  The table
reports seconds per epoch, the ratio to BP measured in the same run, and peak resident memory.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

RULES = ["bp", "fa", "dfa", "tp", "dtp", "sdtp", "ao_sdtp", "fwdtp"]


def one(circuit_path: str, rule: str, data_dir: str | None, limit: int | None, threads: int, epochs: int) -> dict:
    import torch

    import biotp
    from biotp.training import Session

    torch.set_num_threads(threads)
    overrides = [f"data.limit={limit}"] if limit else []
    circuit = biotp.load_circuit(circuit_path, overrides).with_algorithm(rule)
    session = Session(circuit, data_dir=data_dir, device="cpu")
    session.run_epoch(1)  # warm-up: allocator, kernels
    times = []
    for epoch in range(2, 2 + epochs):
        t0 = time.perf_counter()
        session.run_epoch(epoch)
        times.append(time.perf_counter() - t0)
    return {"rule": rule, "seconds": min(times), "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "examples": len(session.train[0])}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--circuit", default="circuits/dtp_mnist_7x240.yaml")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--rules", default=",".join(RULES))
    p.add_argument("--limit", type=int, default=None, help="training examples (default: all)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process")
    p.add_argument("--epochs", type=int, default=2, help="timed epochs per rule (the fastest counts)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(one(args.circuit, args.worker, args.data_dir, args.limit, args.threads, args.epochs)))
        return
    rows = []
    for rule in args.rules.split(","):
        cmd = [sys.executable, __file__, "--worker", rule, "--circuit", args.circuit, "--threads", str(args.threads),
               "--epochs", str(args.epochs)]
        cmd += ["--data-dir", args.data_dir] if args.data_dir else []
        cmd += ["--limit", str(args.limit)] if args.limit else []
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
        print(f"  {rule}: {rows[-1]['seconds']:.2f} s", file=sys.stderr)
    base = next((r["seconds"] for r in rows if r["rule"] == "bp"), None)
    print(f"circuit {args.circuit}, {rows[0]['examples']} training examples, {args.threads} thread(s)")
    print(f"{'rule':<8} {'s/epoch':>8} {'× bp':>6} {'peak MB':>8}")
    for r in rows:
        ratio = f"{r['seconds'] / base:.2f}" if base else "-"
        print(f"{r['rule']:<8} {r['seconds']:>8.2f} {ratio:>6} {r['peak_mb']:>8.0f}")


if __name__ == "__main__":
    main()
