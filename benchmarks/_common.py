"""What the fast-path benchmarks share: one rule timed in its own process on a circuit, the
command-line options, and the table of seconds per epoch against BP.

A script calls `options(...)`, hands `--worker RULE` runs to `worker(args)` and otherwise
`measure(__file__, args)`, which starts one worker process per rule (so peak memory is the
rule's own) and collects their JSON lines.  The timed part is passes of training over the
training set, no evaluation; a warm-up epoch (allocator, kernels) is not counted, and the
fastest of the timed epochs counts.  Both wall-clock and process CPU seconds are taken; ratios
use CPU seconds, which other processes sharing the cores do not inflate (with one thread they
equal wall-clock seconds on an idle machine).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

# passes of one epoch as Session.passes gives them: (train forward, train feedback)
FORWARD_ONLY = [(True, False)]
FEEDBACK_ONLY = [(False, True)]


def options(doc: str, circuit: str, rules: list[str]) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--circuit", default=circuit)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--rules", default=",".join(rules))
    p.add_argument("--limit", type=int, default=None, help="training examples (default: all)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process")
    p.add_argument("--epochs", type=int, default=2, help="timed epochs per rule (the fastest counts)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--phases", action="store_true", help=argparse.SUPPRESS)
    return p


def fastest_epoch(session, first: int, epochs: int, passes=None) -> tuple[float, float]:
    """(wall, CPU) seconds of the fastest (in CPU time) of `epochs` epochs from epoch `first` on,
    each made of `passes` (default: the schedule's own)."""
    if passes is not None:
        session.passes = lambda epoch: passes  # shadows Session.passes for this session only
    times = []
    for epoch in range(first, first + epochs):
        wall, cpu = time.perf_counter(), time.process_time()
        session.run_epoch(epoch)
        times.append((time.perf_counter() - wall, time.process_time() - cpu))
    return min(times, key=lambda t: t[1])


def time_rule(circuit_path: str, rule: str, data_dir: str | None, limit: int | None, threads: int, epochs: int,
              phases: bool = False) -> dict:
    """Seconds per epoch of `rule` on the circuit; with `phases`, also of a forward-only pass
    (targets and forward updates) and, for rules that train feedback, a feedback-only pass."""
    import torch

    import biotp
    from biotp.training import Session

    torch.set_num_threads(threads)
    overrides = [f"data.limit={limit}"] if limit else []
    circuit = biotp.load_circuit(circuit_path, overrides).with_algorithm(rule)
    session = Session(circuit, data_dir=data_dir, device="cpu")
    session.run_epoch(1)  # warm-up
    row = {"rule": rule, "examples": len(session.train[0])}
    row["wall_seconds"], row["seconds"] = fastest_epoch(session, 2, epochs)
    if phases:
        row["forward_seconds"] = fastest_epoch(session, 2 + epochs, epochs, FORWARD_ONLY)[1]
        if session.rule.trains_feedback:
            row["feedback_seconds"] = fastest_epoch(session, 2 + 2 * epochs, epochs, FEEDBACK_ONLY)[1]
            row["feedback_iterations"] = getattr(circuit.algorithm, "feedback_iterations", 1)
    row["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return row


def worker(args, phases: bool = False) -> None:
    print(json.dumps(time_rule(args.circuit, args.worker, args.data_dir, args.limit, args.threads, args.epochs,
                               phases or args.phases)))


def measure(script: str, args, phases: tuple[str, ...] = ()) -> list[dict]:
    """One worker process per rule of `args.rules` (those in `phases` also time their passes).
    A rule that fails gives a row with its error instead of times."""
    rows = []
    for rule in args.rules.split(","):
        cmd = [sys.executable, script, "--worker", rule, "--circuit", args.circuit, "--threads", str(args.threads),
               "--epochs", str(args.epochs)]
        cmd += ["--data-dir", args.data_dir] if args.data_dir else []
        cmd += ["--limit", str(args.limit)] if args.limit else []
        cmd += ["--phases"] if rule in phases else []
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["(no message)"])[-1]
            rows.append({"rule": rule, "error": last})
            print(f"  {rule}: failed: {last}", file=sys.stderr)
            continue
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(f"  {rule}: {rows[-1]['seconds']:.2f} cpu s", file=sys.stderr)
    return rows


def print_table(args, rows: list[dict]) -> None:
    timed = [r for r in rows if "seconds" in r]
    base = next((r["seconds"] for r in timed if r["rule"] == "bp"), None)
    examples = timed[0]["examples"] if timed else "?"
    print(f"circuit {args.circuit}, {examples} training examples, {args.threads} thread(s)")
    print(f"{'rule':<8} {'cpu s/epoch':>11} {'× bp':>6} {'wall s':>7} {'peak MB':>8}")
    for r in timed:
        ratio = f"{r['seconds'] / base:.2f}" if base else "-"
        print(f"{r['rule']:<8} {r['seconds']:>11.2f} {ratio:>6} {r['wall_seconds']:>7.2f} {r['peak_mb']:>8.0f}")
    for r in rows:
        if "error" in r:
            print(f"{r['rule']:<8} failed: {r['error']}")
