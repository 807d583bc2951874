"""Settling and online-learning throughput of the two engines on one 784-256-256-10 circuit,
the cost of a continuous-time training epoch against the fast path's, and how time and
memory grow with batch size and depth.

    python benchmarks/settling.py [--examples 1024] [--data-dir DIR] [--quick]

Settling: forward phase then target phase (difference relaxation, float64, Euler), each to
the tolerance ‖dy/dt‖ < atol + rtol‖y‖ (torch; brian2 runs the number of steps torch
needed, as a fixed duration, and its final activities and targets are checked equal to a
torch run of the same duration).  Online learning: the same with DTP1 plasticity, one
example at a time.  Prints examples/s and the ratio to brian2's cython target.  Not a test.
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import resource
import subprocess
import sys
import time

import torch

from biotp.circuit import parse_circuit
from biotp.network import Network
from biotp.simulation import build

D = torch.float64


def circuit(plastic: bool, **dyn):
    spec = {"tau_f": "2 ms", "tau_t": "2 ms", "dt": "0.2 ms", "forward_phase": "60 ms", "target_phase": "60 ms",
            "relaxation": "difference", "target": {"mode": "nudged", "beta": 0.1}, "stop": "steady",
            "atol": 1.0, "rtol": 1e-3, "dtype": "float64",
            "plasticity": {"rule": "dtp1" if plastic else "none", "eta": 0.05}, **dyn}
    layers = [{"size": 256, "activation": "tanh", "repeat": 2}, {"size": 10, "activation": "linear"}]
    return parse_circuit({"network": {"layers": layers}, "loss": "cross_entropy", "dynamics": spec}, "<benchmark>")


DEVICE = "cpu"  # the torch engine's (--device); brian2 runs on the CPU


def make(c, net, backend="torch", codegen="numpy", dtype=D):
    return build(c, backend, 784, dtype=dtype, codegen=codegen, net=net,
                 device=DEVICE if backend == "torch" else "cpu")[1]


def throughput(engine, x, y, batch):
    """(examples/s, max forward steps, max target steps, presentations)."""
    start, fs, ts, ps = time.perf_counter(), 0, 0, []
    if getattr(engine, "name", "") == "torch":
        x, y = x.to(DEVICE), y.to(DEVICE)
    for i in range(0, len(x), batch):
        p = engine.present(x[i : i + batch], y[i : i + batch])
        fs, ts = max(fs, p.forward.steps), max(ts, p.target.steps)
        ps.append(p)
    return len(x) / (time.perf_counter() - start), fs, ts, ps


def inputs(n, data_dir):
    try:
        from biotp.data import load

        train = load("mnist", data_dir=data_dir, val_split=0, limit=n).train
        return train.x[:n].flatten(1).to(D), train.y[:n], "MNIST"
    except Exception:  # noqa: BLE001 (no MNIST here: random images)
        g = torch.Generator().manual_seed(0)
        return torch.rand(n, 784, generator=g, dtype=D), torch.randint(0, 10, (n,), generator=g), "random"


# the dynamics of the MNIST equivalence runs (analysis/equivalence_runs.sh): the settling
# tolerance that keeps the continuous run on the fast path's
TRAIN = {"tau_f": "1 ms", "tau_t": "1 ms", "dt": "0.2 ms", "forward_phase": "40 ms", "target_phase": "40 ms",
         "relaxation": "difference", "target": {"mode": "gradient_step", "beta": 0.5},
         "plasticity": {"rule": "dtp", "eta": 0.1}, "feedback_plasticity": {"rule": "fixed"}, "stop": "steady",
         "atol": 1e-3, "rtol": 1e-4, "solver_rtol": 1e-5, "solver_atol": 1e-7, "dtype": "float32"}
SOLVERS = [("euler", "0.2 ms"), ("rk4", "0.5 ms"), ("adaptive", "0.5 ms"), ("exponential_euler", "1 ms"),
           ("exponential_euler", "5 ms")]


def train_circuit(hidden: list[int], **dyn):
    layers = [{"size": n, "activation": "tanh"} for n in hidden] + [{"size": 10, "activation": "linear"}]
    return parse_circuit({"network": {"layers": layers}, "loss": "cross_entropy",
                          "algorithm": {"name": "dtp", "eta_hat": 0.5}, "optimizer": {"name": "sgd", "lr": 0.05},
                          "dynamics": {**TRAIN, **dyn}}, "<benchmark>")


def epoch_costs(x, y, batch: int = 100) -> tuple[dict, dict]:
    """Seconds per example: the fast path's dtp, and continuous training with each solver;
    and for each solver (steps per presentation, the largest residual ‖dy/dt‖ at a phase's end)."""
    from biotp.algorithms import build as build_rule

    x, y, out, settling = x.float().to(DEVICE), y.to(DEVICE), {}, {}
    c = train_circuit([256, 256])
    rule = build_rule(c, 784, 10, DEVICE)
    opt = torch.optim.SGD(rule.forward_params(), lr=0.05)
    start = time.process_time()
    for i in range(0, len(x), batch):
        rule.zero_grad(set_to_none=True)
        rule.grads(x[i : i + batch], y[i : i + batch], forward=True, feedback=False)
        opt.step()
    out["discrete dtp"] = (time.process_time() - start) / len(x)
    for solver, dt in SOLVERS:
        eng = make(train_circuit([256, 256], solver=solver, dt=dt), Network(c, 784, with_feedback=True, seed=0),
                   dtype=torch.float32)
        start, steps, residual = time.process_time(), [], 0.0
        for i in range(0, len(x), batch):
            p = eng.present(x[i : i + batch], y[i : i + batch], record={})
            steps.append(p.forward.steps + p.target.steps)
            residual = max(residual, *p.forward.residual.values(), *p.target.residual.values())
        out[f"continuous {solver} dt {dt}"] = (time.process_time() - start) / len(x)
        settling[f"continuous {solver} dt {dt}"] = (sum(steps) / len(steps), residual)
    return out, settling


PROBE = {"solver": "exponential_euler", "dt": "5 ms", "forward_phase": "80 ms", "target_phase": "80 ms"}


def probe(batch: int, depth: int) -> None:
    """One presentation (forward and target phase, exponential Euler with steps of 5 τ, each
    phase to the tolerance, float32) of `batch` examples through `depth` hidden layers of
    256: prints examples/s and the peak memory the model, its engine and the presentation
    added to the process."""
    before = _reset_peak()
    c = train_circuit([256] * depth, **PROBE)
    eng = make(c, Network(c, 784, with_feedback=True, seed=0), dtype=torch.float32)
    x, y = torch.rand(batch, 784, device=DEVICE), torch.randint(0, 10, (batch,), device=DEVICE)
    eng.present(x[:1], y[:1], record={})  # warm up
    start = time.perf_counter()
    eng.present(x, y, record={})
    seconds = time.perf_counter() - start
    print(json.dumps({"examples_per_s": batch / seconds, "peak_mib": (_peak() - before) / 1024}))


def _status(key: str) -> int:
    """A /proc/self/status figure in KiB."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key + ":"))


def _reset_peak() -> int:
    """Reset the peak resident set to the current one (Linux: clear_refs 5); the current, KiB.
    Without that (another OS), the peak so far, so that only growth above it shows."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _status("VmRSS")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _peak() -> int:
    try:
        return _status("VmHWM")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def scale_table(batches=(1, 8, 64, 512), depths=(2, 4, 8)) -> list:
    rows = []
    for depth in depths:
        for batch in batches:
            done = subprocess.run([sys.executable, __file__, "--probe", str(batch), str(depth), "--device", DEVICE],
                                  capture_output=True, text=True, check=True)
            rows.append((batch, depth, json.loads(done.stdout.strip().splitlines()[-1])))
    return rows


def equivalence_gap() -> float:
    """The largest per-epoch |continuous - fast path| test error (percentage points) in the
    equivalence run files, or nan where none has been run."""
    import numpy as np

    from biotp.runs import open_run

    gaps = []
    for path in glob.glob("runs/equivalence_*.h5"):
        m = open_run(path).metrics
        if "reference_test_error" in m:
            gaps.append(float(np.max(np.abs(m["test_error"] - m["reference_test_error"]))) * 100)
    return max(gaps) if gaps else math.nan


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=1024, help="examples for torch batch 128")
    ap.add_argument("--small", type=int, default=16, help="examples for torch batch 1 and brian2")
    ap.add_argument("--epoch-examples", type=int, default=2000, help="examples timed for the epoch cost")
    ap.add_argument("--quick", action="store_true", help="a smaller scale table (batches 1, 64; depths 2, 4)")
    ap.add_argument("--data-dir", default="/work/shared/data")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="the torch engine's device")
    ap.add_argument("--probe", nargs=2, type=int, metavar=("BATCH", "DEPTH"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(1)
    global DEVICE
    DEVICE = args.device
    if args.probe:
        return probe(*args.probe)
    x, y, source = inputs(args.examples, args.data_dir)
    c = circuit(False)
    net = Network(c, 784, with_feedback=True, seed=0)
    rows = []

    rate, nf, nt, _ = throughput(make(c, net), x, y, 128)
    rows.append(("settle  torch batch 128", rate))
    c32 = circuit(False, dtype="float32")
    e32 = make(c32, net, dtype=torch.float32)
    rows.append(("settle  torch batch 128, float32", throughput(e32, x.float(), y, 128)[0]))
    rate1, nf1, nt1, _ = throughput(make(c, net), x[: args.small], y[: args.small], 1)
    rows.append(("settle  torch batch 1", rate1))
    nf, nt = max(nf, nf1), max(nt, nt1)
    # brian2 runs the steps torch needed, as fixed durations; check trajectories equal
    fixed = circuit(False, forward_phase=f"{nf * 0.2:.1f} ms", target_phase=f"{nt * 0.2:.1f} ms", stop="fixed")
    xs, ys = x[: args.small], y[: args.small]
    _, _, _, ref = throughput(make(fixed, net), xs, ys, len(xs))
    for codegen in ("numpy", "cython"):
        eng = make(fixed, net, "brian2", codegen)
        eng.present(xs[:1], ys[:1])  # warm up (code generation, compilation)
        rate_b, _, _, ps = throughput(eng, xs, ys, len(xs))
        err = max(float((a.cpu() - b.cpu()).abs().max())
                  for l in range(1, 4) for a, b in ((ps[0].h[l], ref[0].h[l]), (ps[0].t[l], ref[0].t[l])))
        rows.append((f"settle  brian2 {codegen} (max |Δ| vs torch {err:.1e})", rate_b))

    cp = circuit(True, forward_phase=f"{nf * 0.2:.1f} ms", target_phase=f"{nt * 0.2:.1f} ms", stop="fixed")
    rate_o, _, _, _ = throughput(make(cp, net), xs, ys, 1)
    rows.append(("online  torch batch 1 (DTP1)", rate_o))
    eng = make(cp, net, "brian2", "cython")
    eng.present(xs[:1], ys[:1])
    rate_ob, _, _, _ = throughput(eng, xs, ys, len(xs))
    rows.append(("online  brian2 cython (DTP1)", rate_ob))

    ref_rate = dict(rows)[[k for k, _ in rows if k.startswith("settle  brian2 cython")][0]]
    print(f"784-256-256-10 tanh, difference relaxation, dt 0.2 ms, tol atol 1/s + rtol 1e-3, float64, {source} inputs")
    print(f"steps to tolerance (max): forward {nf}, target {nt}")
    width = max(len(k) for k, _ in rows)
    print(f"{'':{width}}  {'examples/s':>12}  {'× brian2 cython':>16}")
    for k, v in rows:
        print(f"{k:{width}}  {v:12.1f}  {v / ref_rate:16.1f}")

    xe, ye, _ = inputs(args.epoch_examples, args.data_dir)
    costs, settling = epoch_costs(xe, ye)
    print(f"\nepoch cost, 784-256-256-10, batches of 100, {len(xe)} {source} examples, float32, phases until "
          f"‖dy/dt‖ ≤ {TRAIN['atol']} + {TRAIN['rtol']}‖y‖ or {TRAIN['forward_phase']} (process CPU per example)")
    for k, v in costs.items():
        steps, residual = settling.get(k, (math.nan, math.nan))
        print(f"{k:38}  {1e3 * v:9.3f} ms/example  × discrete {v / costs['discrete dtp']:6.2f}"
              f"  steps {steps:6.1f}  residual {residual:8.2g}/s")
    scale = scale_table((1, 64), (2, 4)) if args.quick else scale_table()
    print("\none presentation (exponential Euler dt 5 ms, float32), hidden layers of 256: examples/s, and the peak memory of\n"
          "the model, its engine and the presentation (maximum resident set growth of a fresh process)")
    print(f"{'depth':>5}  {'batch':>5}  {'examples/s':>11}  {'peak MiB':>9}")
    for batch, depth, r in scale:
        print(f"{depth:5d}  {batch:5d}  {r['examples_per_s']:11.1f}  {r['peak_mib']:9.1f}")
    best = min(v for k, v in costs.items() if k.startswith("continuous")) / costs["discrete dtp"]
    speedup = dict(rows)["settle  torch batch 128"] / ref_rate
    print(f"summary: continuous/discrete {best:.2f} torch/brian2 {speedup:.1f} equivalence_gap_pp {equivalence_gap():.2f}")


if __name__ == "__main__":
    main()
