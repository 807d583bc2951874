"""Where an epoch's time goes: the share of matrix products and of everything else, and how
many operators an epoch dispatches (torch.profiler, self CPU time per operator, one thread).

    python benchmarks/profile_epoch.py --data-dir DIR [--rules bp,dtp] [--limit 10000]
        [--circuit circuits/dtp_mnist_7x240.yaml] [--top 0]

Each rule trains one warm-up epoch and one profiled epoch on `--limit` examples in this
process.  The profiler's own cost per operator inflates the times (most for the rules with
many small operators), so read the shares and counts, and take epoch times from fastpath.py.
`--top N` also prints the N most expensive operators.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.profiler import ProfilerActivity, profile

PRODUCTS = {"aten::addmm", "aten::mm", "aten::bmm", "aten::baddbmm", "aten::addmm_", "aten::matmul", "aten::linear"}


def profile_rule(circuit_path: str, rule: str, data_dir: str | None, limit: int, top: int) -> dict:
    import biotp
    from biotp.training import Session

    torch.set_num_threads(1)
    circuit = biotp.load_circuit(circuit_path, [f"data.limit={limit}"]).with_algorithm(rule)
    session = Session(circuit, data_dir=data_dir, device="cpu")
    session.run_epoch(1)  # warm-up
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        session.run_epoch(2)
        wall = time.perf_counter() - start
    events = prof.key_averages()
    products = sum(e.self_cpu_time_total for e in events if e.key in PRODUCTS) / 1e6
    total = sum(e.self_cpu_time_total for e in events) / 1e6
    if top:
        print(f"\n{rule}: the {top} most expensive operators (self CPU)")
        print(events.table(sort_by="self_cpu_time_total", row_limit=top))
    return {"wall": wall, "products": products / total, "calls": sum(e.count for e in events if e.key.startswith("aten::"))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--circuit", default="circuits/dtp_mnist_7x240.yaml")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--rules", default="bp,dtp")
    p.add_argument("--limit", type=int, default=10000)
    p.add_argument("--top", type=int, default=0)
    args = p.parse_args()
    print(f"{args.circuit}, {args.limit} examples, one thread, one profiled epoch")
    print(f"{'rule':<8} {'wall s':>7} {'products':>8} {'rest':>6} {'operators':>9}")
    for rule in args.rules.split(","):
        r = profile_rule(args.circuit, rule, args.data_dir, args.limit, args.top)
        print(f"{rule:<8} {r['wall']:>7.2f} {r['products']:>8.0%} {1 - r['products']:>6.0%} {r['calls']:>9}")


if __name__ == "__main__":
    main()
