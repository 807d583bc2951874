"""Seconds per training epoch of every discrete rule against the fastest BP of the same net, at
1 and 2 threads; peak memory at batch 100 and 1000; how DTP/BP grows with depth and width.

    python benchmarks/fastpath.py --data-dir DIR [--quick] [--device cpu|cuda] [--parts table,memory,scaling]
        [--circuit circuits/dtp_mnist_7x240.yaml] [--rules bp,dtp,...] [--threads 1,2] [--epochs 2]
        [--limit N] [--memory-limit N] [--scaling-limit N]

What is measured, each in its own process (same circuit, data and seed):
- seconds: the fastest of `--epochs` training epochs (one pass over the training set, no
  evaluation) after one warm-up epoch.  Wall-clock seconds (torch.cuda.synchronize at the end
  of an epoch on CUDA) give the ratios, so run it on a quiet machine: on a loaded one, time
  waiting for a core counts; process CPU seconds are printed beside them (at 2 threads they
  include the threads' spin-waits, so they are no measure of speed there).  `--clock cpu`
  makes CPU seconds the ratios' measure (for one thread on a busy machine).
- products × bp: the floating-point operations of the rule's matrix products in an epoch (counted
  in the warm-up epoch, `ProductFlops`) over biotp BP's: the floor of the time ratio where
  products dominate the cost, as they do here.
- `RULE/graph`: the rule with its fast path off (`rule.fuse = False`: every loss through
  autograd, one backward pass, as before the layer-batched path), for comparison.
- `torch`: a plain PyTorch BP epoch of the same net (nn.Sequential, torch's RMSprop with the
  circuit's settings, random batches by index: `plain_bp_epoch`, 20 lines), as a reference for
  biotp's own `bp`.  "× bp" is the ratio to the faster of the two at the same thread count.
- memory: `train MB` is what training adds to the process: the peak resident set during the
  warm-up and timed epochs (VmHWM, reset through /proc/self/clear_refs once the data are loaded
  and the rule built) minus the resident set at that moment, i.e. activities, gradients,
  optimiser state and allocator slack, not the dataset or torch itself.  Workers run with
  glibc's malloc told to map every block of 64 kB or more on its own and to give freed memory
  back at once (`MALLOC_ENV`), so the resident set follows the live tensors and the figure
  repeats from run to run (with the default, adaptive thresholds it varies by ±30 %); `process MB` is the
  whole process's peak (ru_maxrss, dataset and torch included).  On CUDA `train MB` is
  torch.cuda.max_memory_allocated minus the memory allocated before training.  Memory is
  measured in runs of its own (batch 100 and 1000, `--memory-limit` examples), not the timed ones.
- scaling: DTP/BP (biotp `bp`) at one thread for 2, 4 and 8 hidden layers of 240 and 1000
  units (the circuit's first layer entry repeated and resized), on `--scaling-limit` examples.

The last line reads `summary: dtp/bp@1 R1 dtp/bp@2 R2 mem R3`: DTP's epoch over the fastest
BP's at 1 and 2 threads, and DTP's training memory over biotp BP's at batch 100 (`train MB`,
from the memory part).
`--quick` (5000 examples, one timed epoch, smaller memory and scaling runs) prints the same
tables in a few minutes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import resource
import subprocess
import sys
import time

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map
from torch.utils.flop_counter import flop_registry

RULES = ["bp", "fa", "dfa", "tp", "dtp", "sdtp", "ao_sdtp", "fwdtp", "dtp/graph"]
PLAIN = "torch"  # the plain PyTorch BP epoch
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}  # see the docstring: memory
DEPTHS, WIDTHS = (2, 4, 8), (240, 1000)


def options() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--circuit", default="circuits/dtp_mnist_7x240.yaml")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--rules", default=",".join(RULES), help=f"rules (and '{PLAIN}', the plain PyTorch BP, always added)")
    p.add_argument("--threads", default="1,2", help="torch thread counts of the main table")
    p.add_argument("--epochs", type=int, default=2, help="timed epochs per run (the fastest counts)")
    p.add_argument("--limit", type=int, default=None, help="training examples of the main table (default: all)")
    p.add_argument("--memory-limit", type=int, default=10000, help="training examples of the memory runs (batch 100 and 1000)")
    p.add_argument("--scaling-limit", type=int, default=10000, help="training examples of the scaling runs")
    p.add_argument("--parts", default="table,memory,scaling")
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                   help="seconds the ratios use: wall-clock (a quiet machine) or process CPU (1 thread on a busy one)")
    p.add_argument("--quick", action="store_true", help="5000 examples, one timed epoch, 2000 for memory and scaling")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    return p


# ------------------------------------------------------------------ one run (a worker process)
def memory_now(device) -> float:
    """MB in use now: resident set (CPU) or allocated by torch (CUDA)."""
    import torch

    if device.type == "cuda":
        return torch.cuda.memory_allocated(device) / 2**20
    return _status("VmRSS") / 1024


def reset_peak(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    with open("/proc/self/clear_refs", "w") as f:  # resets VmHWM to the current resident set
        f.write("5")


def peak(device) -> float:
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return _status("VmHWM") / 1024


def _status(key: str) -> int:
    with open("/proc/self/status") as f:
        return int(re.search(rf"{key}:\s+(\d+)", f.read()).group(1))


def plain_bp_epoch(model, opt, x, y, batch_size: int, generator) -> None:
    """BP as a PyTorch user writes it: shuffled batches, cross-entropy, backward, step."""
    import torch
    from torch.nn import functional as F

    order = torch.randperm(len(x), generator=generator).to(x.device)
    for i in range(0, len(x), batch_size):
        idx = order[i : i + batch_size]
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()


def plain_bp(circuit, session):
    """The circuit's MLP as nn.Sequential with BP's optimiser, and one epoch of it."""
    import torch
    from torch import nn

    acts = {"tanh": nn.Tanh, "relu": nn.ReLU, "sigmoid": nn.Sigmoid, "linear": nn.Identity}
    mods, n_in = [], session.train[0].shape[1]
    for spec in circuit.network.expanded():
        mods += [nn.Linear(n_in, spec.size), acts[spec.activation]()]
        n_in = spec.size
    model = nn.Sequential(*mods).to(session.device)
    for m in model:
        if isinstance(m, nn.Linear):
            nn.init.orthogonal_(m.weight)
            nn.init.zeros_(m.bias)
    spec = circuit.optimizer
    opt = {"rmsprop": torch.optim.RMSprop, "adam": torch.optim.Adam, "sgd": torch.optim.SGD}[spec.name](
        model.parameters(), **spec.model_dump(exclude={"name"}))
    x, y = session.train
    bs = circuit.data.batch_size
    return lambda epoch: plain_bp_epoch(model, opt, x, y, bs, torch.Generator().manual_seed(epoch))


def run(job: dict) -> dict:
    """Time and measure one rule on one configuration (`job`, see `jobs`)."""
    import torch

    import biotp
    from biotp.training import Session

    torch.set_num_threads(job["threads"])
    overrides = list(job.get("overrides", []))
    overrides += [f"data.limit={job['limit']}"] if job.get("limit") else []
    rule = "bp" if job["rule"] == PLAIN else job["rule"].split("/")[0]
    circuit = biotp.load_circuit(job["circuit"], overrides).with_algorithm(rule)
    session = Session(circuit, data_dir=job["data_dir"], device=job["device"])
    device = session.device
    epoch_fn = plain_bp(circuit, session) if job["rule"] == PLAIN else session.run_epoch
    if job["rule"] == PLAIN:
        session.rule = None  # biotp's own network is not what is timed
    elif job["rule"].endswith("/graph"):
        session.rule.fuse = False
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    before = memory_now(device)
    reset_peak(device)
    products = ProductFlops()
    with products if job.get("count") else contextlib.nullcontext():
        epoch_fn(1)  # warm-up (and its matrix products counted)
    sync()
    times = []
    for epoch in range(2, 2 + job["epochs"]):
        wall, cpu = time.perf_counter(), time.process_time()
        epoch_fn(epoch)
        sync()
        times.append((time.perf_counter() - wall, time.process_time() - cpu))
    wall, cpu = min(times, key=lambda t: t[job.get("clock") == "cpu"])
    return {**job, "examples": len(session.train[0]), "seconds": cpu if job.get("clock") == "cpu" else wall,
            "wall_seconds": wall, "cpu_seconds": cpu, "product_flops": products.flops,
            "train_mb": peak(device) - before, "process_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


class ProductFlops(TorchDispatchMode):
    """Counts the floating-point operations of the matrix products dispatched while active
    (torch's own formulas, `torch.utils.flop_counter`): a rule's product work over BP's is the
    floor of its time ratio where products dominate."""

    def __init__(self):
        super().__init__()
        self.flops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        count = flop_registry.get(func._overloadpacket)
        if count is not None:
            shape = lambda t: t.shape if isinstance(t, torch.Tensor) else t  # noqa: E731
            given = {k: v for k, v in kwargs.items() if k != "out"}
            self.flops += count(*tree_map(shape, args), **tree_map(shape, given), out_val=out)
        return out


# ------------------------------------------------------------------ the driver
def jobs(args) -> dict[str, list[dict]]:
    base = {"circuit": args.circuit, "data_dir": args.data_dir, "device": args.device, "epochs": args.epochs,
            "clock": args.clock}
    rules = [r for r in args.rules.split(",") if r] + [PLAIN]
    parts = args.parts.split(",")
    out = {"table": [], "memory": [], "scaling": []}
    if "table" in parts:
        out["table"] = [{**base, "rule": r, "threads": int(t), "limit": args.limit, "batch": 100, "count": i == 0}
                        for i, t in enumerate(args.threads.split(",")) for r in rules]
    if "memory" in parts:
        out["memory"] = [{**base, "rule": r, "threads": 1, "limit": args.memory_limit, "batch": b, "epochs": 1,
                          "memory": True, "overrides": [f"data.batch_size={b}"]} for b in (100, 1000) for r in rules]
    if "scaling" in parts:
        out["scaling"] = [{**base, "rule": r, "threads": 1, "limit": args.scaling_limit, "batch": 100, "epochs": 1,
                           "depth": d, "width": w,
                           "overrides": [f"network.layers.0.repeat={d}", f"network.layers.0.size={w}"]}
                          for w in WIDTHS for d in DEPTHS for r in ("bp", "dtp")]
    return out


def launch(job: dict) -> dict:
    env = {**os.environ, **MALLOC_ENV} if job.get("memory") else None  # (it slows the timed runs down)
    done = subprocess.run([sys.executable, __file__, "--worker", json.dumps(job)], capture_output=True, text=True,
                          env=env)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no message)"])[-1]
        print(f"  {job['rule']}: failed: {last}", file=sys.stderr)
        return {**job, "error": last}
    row = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"  {row['rule']} threads {row['threads']} batch {row['batch']} {row.get('depth', '')}"
          f"{'x' + str(row['width']) if 'width' in row else ''}: {row['wall_seconds']:.2f} wall s, "
          f"{row['cpu_seconds']:.2f} cpu s, train {row['train_mb']:.1f} MB", file=sys.stderr)
    return row


def fastest_bp(rows: list[dict], threads: int) -> float | None:
    bps = [r["seconds"] for r in rows if r["rule"] in ("bp", PLAIN) and r["threads"] == threads and "seconds" in r]
    return min(bps) if bps else None


def ratio(a, b) -> float:
    return a / b if a is not None and b else float("nan")


def main() -> None:
    args = options().parse_args()
    if args.worker:
        print(json.dumps(run(json.loads(args.worker))))
        return
    if args.quick:
        args.limit, args.epochs = args.limit or 5000, 1
        args.memory_limit, args.scaling_limit = min(args.memory_limit, 2000), min(args.scaling_limit, 2000)
    todo = jobs(args)
    rows = {part: [launch(j) for j in js] for part, js in todo.items()}
    table, memory, scaling = rows["table"], rows["memory"], rows["scaling"]
    by = lambda rs, rule, **kw: next((r for r in rs if r["rule"] == rule and "seconds" in r  # noqa: E731
                                      and all(r.get(k) == v for k, v in kw.items())), None)
    threads = [int(t) for t in args.threads.split(",")]
    if table:
        ex = next((r["examples"] for r in table if "examples" in r), "?")
        print(f"\ncircuit {args.circuit}, {ex} training examples, batch 100, device {args.device}; "
              f"seconds per epoch ({args.clock}), × the fastest BP at the same thread count")
        other = "cpu s" if args.clock == "wall" else "wall s"
        head = "".join(f"{f'{t} thr s':>9} {'× bp':>6} {other:>7}" for t in threads)
        print(f"{'rule':<8}{head} {'products × bp':>13}")
        bp_work = (by(table, "bp", threads=threads[0]) or {}).get("product_flops")
        for rule in dict.fromkeys(r["rule"] for r in table):
            cells = ""
            for t in threads:
                r = by(table, rule, threads=t)
                alt = r["cpu_seconds"] if args.clock == "wall" else r["wall_seconds"]
                cells += (f"{r['seconds']:>9.2f} {ratio(r['seconds'], fastest_bp(table, t)):>6.2f} {alt:>7.2f}"
                          if r else f"{'failed':>9} {'':>6} {'':>7}")
            work = (by(table, rule, threads=threads[0]) or {}).get("product_flops")
            print(f"{rule:<8}{cells} {ratio(work, bp_work):>13.2f}")
        for r in table:
            if "error" in r:
                print(f"{r['rule']} ({r['threads']} threads): failed: {r['error']}")
    if memory:
        ex = next((r["examples"] for r in memory if "examples" in r), "?")
        print(f"\npeak memory, 1 thread, {ex} examples (train MB: added by training; × bp: over biotp bp's)")
        print(f"{'rule':<9} {'b100 MB':>8} {'× bp':>6} {'b1000 MB':>9} {'× bp':>6} {'process MB b1000':>17}")
        for rule in dict.fromkeys(r["rule"] for r in memory):
            cells = ""
            for b in (100, 1000):
                m, bp = by(memory, rule, batch=b), by(memory, "bp", batch=b)
                cells += (f" {m['train_mb']:>8.1f} {ratio(m['train_mb'], bp and bp['train_mb']):>6.2f}" if m
                          else f" {'failed':>8} {'':>6}")
            m = by(memory, rule, batch=1000)
            print(f"{rule:<9}{cells} {m['process_mb'] if m else float('nan'):>17.0f}")
    if scaling:
        ex = next((r["examples"] for r in scaling if "examples" in r), "?")
        print(f"\nDTP/BP by depth and width (1 thread, {ex} examples, biotp bp, {args.clock} s per epoch)")
        print(f"{'hidden':>6} " + " ".join(f"{f'{w} units: bp s':>16} {'dtp s':>7} {'dtp/bp':>6}" for w in WIDTHS))
        for d in DEPTHS:
            cells = []
            for w in WIDTHS:
                b, t = by(scaling, "bp", depth=d, width=w), by(scaling, "dtp", depth=d, width=w)
                cells.append(f"{b['seconds'] if b else float('nan'):>16.2f} {t['seconds'] if t else float('nan'):>7.2f} "
                             f"{ratio(t and t['seconds'], b and b['seconds']):>6.2f}")
            print(f"{d:>6} " + " ".join(cells))
    r1 = ratio((by(table, "dtp", threads=1) or {}).get("seconds"), fastest_bp(table, 1))
    r2 = ratio((by(table, "dtp", threads=2) or {}).get("seconds"), fastest_bp(table, 2))
    dtp, bp = by(memory, "dtp", batch=100), by(memory, "bp", batch=100)
    mem = ratio(dtp and dtp["train_mb"], bp and bp["train_mb"])
    print(f"summary: dtp/bp@1 {r1:.2f} dtp/bp@2 {r2:.2f} mem {mem:.2f}")


if __name__ == "__main__":
    main()
