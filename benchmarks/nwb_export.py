"""Peak memory of an NWB export against the size of the traces it copies.

    python benchmarks/nwb_export.py [--trials 1000] [--neurons 256] [--samples 100] [--dir DIR]

Writes a protocol run file in biotp's own format (the protocol, sweep point, run-file tree
and atomic writer of biotp.protocols and biotp.runs, with synthetic smooth traces in place
of a simulation): TRIALS trials, each recorded, of 3 populations of NEURONS neurons, SAMPLES
samples per trial.  Then exports it with `biotp.nwb.export_nwb` in a fresh process and reads
that process's peak resident memory (VmHWM in /proc/self/status); a second fresh process that
only imports the same modules gives the baseline the export adds to.  The export copies each
trace a buffer at a time (biotp/nwb/chunks.py), so its peak should stay well below the traces'
size.  Last line: `summary: nwb_peak_mib P traces_mib T`.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
POPULATIONS = ("layer1", "layer2", "layer3")

EXPORT = """
import json, sys, time
import biotp, brian2, pynwb, hdmf  # brian2: build_model checks the equations with it
from biotp.nwb import export_nwb
start = time.perf_counter()
if sys.argv[1] != "--baseline":
    export_nwb(sys.argv[1], sys.argv[2], force=True)
seconds = time.perf_counter() - start
peak = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"peak_mib": peak / 1024, "seconds": seconds}))
"""


def write_run_file(path: Path, trials: int, neurons: int, samples: int) -> float:
    """The protocol run file; returns the traces' size in MiB."""
    import torch

    from biotp import protocols as P
    from biotp.protocols.results import file_attrs, point_group, point_tree
    from biotp.runs import write_run

    dt_ms = 0.2
    forward = (samples - 1) // 2 * dt_ms
    target = (samples - 1) * dt_ms - forward
    protocol = P.parse_protocol({
        "name": "nwb_benchmark", "circuit": str(ROOT / "circuits" / "mlp.yaml"),
        "overrides": [f"network.layers.0.size={neurons}", "network.layers.0.repeat=3", f"dynamics.dt={dt_ms} ms"],
        "stimuli": {"count": trials, "forward_phase": f"{forward:.6g} ms", "target_phase": f"{target:.6g} ms"},
        "record": {"populations": {pop: ["h"] for pop in POPULATIONS}, "every": f"{dt_ms} ms", "trials": trials},
        "evaluate": {"every": max(1, trials // 10)},
    }, "benchmarks/nwb_export.py")
    pt = P.points(protocol)[0]
    spec = pt.circuit.dynamics
    n_t = (spec.steps(spec.forward_phase) + spec.steps(spec.target_phase)) // spec.record_every + 1
    assert n_t == samples, f"{n_t} samples per trial, wanted {samples}"
    rng = np.random.default_rng(0)
    t = np.linspace(0, 1, samples, dtype=np.float32)[:, None, None]
    traces = {}
    for pop in POPULATIONS:  # smooth, as settling activities are: a relaxation per trial and neuron
        start = rng.standard_normal((1, trials, neurons), dtype=np.float32)
        end = rng.standard_normal((1, trials, neurons), dtype=np.float32)
        traces[(pop, "h")] = [np.tanh(end + (start - end) * np.exp(-5 * t))]
    size = sum(a[0].nbytes for a in traces.values()) / 2**20
    every = protocol.evaluate.every
    rows = list(range(0, trials + 1, every)) + ([trials] if trials % every else [])
    metrics = {"trial": rows, "time": [k * (forward + target) / 1e3 for k in rows], "phase": [0] * len(rows),
               "test_error": np.linspace(0.9, 0.1, len(rows)), "test_loss": np.linspace(2.3, 0.4, len(rows))}
    sizes = [64] + [neurons] * 3 + [10]
    weights = [torch.randn(sizes[l], sizes[l - 1]) for l in range(1, 5)]
    metrics.update({f"dW_layer{l}": np.full(len(rows), 0.1) for l in range(1, 5)})
    tree = point_tree(protocol, spec, weights, metrics, traces, set(range(trials)), 1.0)
    write_run(path, file_attrs(protocol, [pt], "python benchmarks/nwb_export.py"),
              {"points": {pt.key: point_group(pt, tree)}})
    return size


def fresh(*argv: str) -> dict:
    out = subprocess.run([sys.executable, "-c", EXPORT, *argv], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def spot_check(run: Path, nwb: Path, trials: int) -> None:
    """A few trials of the export equal the run file's (read with h5py and pynwb)."""
    import h5py
    import pynwb

    with h5py.File(run) as f, pynwb.NWBHDF5IO(str(nwb), "r") as io:
        data = io.read().acquisition["layer2_h"].data
        source = f["points/p000/traces/layer2/h"]
        n = source.shape[0]
        for k in (0, trials // 2, trials - 1):
            np.testing.assert_array_equal(data[k * n:(k + 1) * n], source[:, k, :])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=1000)
    p.add_argument("--neurons", type=int, default=256)
    p.add_argument("--samples", type=int, default=100, help="samples per trial (odd counts split unevenly)")
    p.add_argument("--dir", help="keep the run and NWB files here (default: a temporary directory)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(args.dir or tmp)
        d.mkdir(parents=True, exist_ok=True)
        run, nwb = d / "benchmark.h5", d / "benchmark.nwb"
        start = time.perf_counter()
        traces_mib = write_run_file(run, args.trials, args.neurons, args.samples)
        print(f"run file: {args.trials} trials x {len(POPULATIONS)} populations x {args.neurons} neurons x "
              f"{args.samples} samples = {traces_mib:.1f} MiB of traces, {run.stat().st_size / 2**20:.1f} MiB on "
              f"disk ({time.perf_counter() - start:.1f} s to write)")
        baseline = fresh("--baseline")
        export = fresh(str(run), str(nwb))
        spot_check(run, nwb, args.trials)
        print(f"baseline (imports biotp, brian2, pynwb, hdmf): peak {baseline['peak_mib']:.1f} MiB")
        print(f"export: peak {export['peak_mib']:.1f} MiB (+{export['peak_mib'] - baseline['peak_mib']:.1f} MiB over "
              f"the baseline) in {export['seconds']:.1f} s; NWB file {nwb.stat().st_size / 2**20:.1f} MiB")
        print(f"summary: nwb_peak_mib {export['peak_mib']:.1f} traces_mib {traces_mib:.1f}")


if __name__ == "__main__":
    main()
