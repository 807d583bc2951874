"""Settling and online-learning throughput of the two engines on one 784-256-256-10 circuit.

    python benchmarks/settling.py [--examples 1024] [--data-dir DIR]

Settling: forward phase then target phase (difference relaxation, float64, Euler), each to
the tolerance ‖dy/dt‖ < atol + rtol‖y‖ (torch; brian2 runs the number of steps torch
needed, as a fixed duration, and its final activities and targets are checked equal to a
torch run of the same duration).  Online learning: the same with DTP1 plasticity, one
example at a time.  Prints examples/s and the ratio to brian2's cython target.  Not a test.
"""

from __future__ import annotations

import argparse
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


def make(c, net, backend="torch", codegen="numpy", dtype=D):
    return build(c, backend, 784, dtype=dtype, codegen=codegen, net=net)[1]


def throughput(engine, x, y, batch):
    """(examples/s, max forward steps, max target steps, presentations)."""
    start, fs, ts, ps = time.perf_counter(), 0, 0, []
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


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=1024, help="examples for torch batch 128")
    ap.add_argument("--small", type=int, default=16, help="examples for torch batch 1 and brian2")
    ap.add_argument("--data-dir", default="/work/shared/data")
    args = ap.parse_args()
    torch.set_num_threads(1)
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
        err = max(float((a - b).abs().max()) for l in range(1, 4) for a, b in ((ps[0].h[l], ref[0].h[l]), (ps[0].t[l], ref[0].t[l])))
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


if __name__ == "__main__":
    main()
