"""The angle per layer between the continuous model's update and the fast path's rule's
(`biotp.dynamics.reference.Reference`) on one batch from the circuit's initial weights, as
one field of the circuit varies: how a difference between the two scales with it.

    python analysis/one_batch_angles.py CIRCUIT --data-dir DATA --set KEY=VALUE ... \\
        --vary dynamics.plasticity.eta=0.1,0.01,0.001 [--batch 100]
"""

from __future__ import annotations

import argparse

import torch

from biotp.circuit import load_circuit
from biotp.data import load
from biotp.dynamics.reference import Reference
from biotp.simulation import build


def angles(circuit, x, y) -> list[float]:
    model, eng, _ = build(circuit, "torch", x.shape[1], dtype=torch.float64)
    ref = Reference(circuit, model, x.shape[1], eng.parameters())
    ref.expect(eng.parameters(), x, y)
    eng.present(x, y, record={})
    ref.compare(eng.parameters(), x, y)
    return [ref.pending[f"angle_layer{l}"][0] for l in range(1, model.L + 1)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("circuit")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--vary", required=True, metavar="KEY=V1,V2,...")
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--data-dir")
    args = ap.parse_args()
    torch.set_num_threads(1)
    key, values = args.vary.split("=", 1)
    base = load_circuit(args.circuit, args.overrides + ["dynamics.dtype=float64", "dynamics.record={}"])
    train = load(base.data.dataset, data_dir=args.data_dir, val_split=0, limit=args.batch).train
    x, y = train.x[: args.batch].flatten(1).double(), train.y[: args.batch]
    print(f"{args.circuit}: one batch of {len(x)}, angle per layer (°) between the continuous and the fast path's update")
    for value in values.split(","):
        row = angles(base.with_updates(f"{key}={value}"), x, y)
        print(f"{key} = {value:>8}: " + " / ".join(f"{a:.3f}" for a in row))


if __name__ == "__main__":
    main()
