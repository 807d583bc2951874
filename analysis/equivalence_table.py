"""The equivalence table of continuous-time training against the fast path's own rule:
per epoch the two test errors, their gap and the mean angle between the updates per layer,
from run files written by `biotp simulate CIRCUIT --epochs N --reference`.

    python analysis/equivalence_table.py runs/equivalence_*.h5
"""

from __future__ import annotations

import sys

import numpy as np

from biotp.runs import open_run


def table(path: str) -> str:
    run = open_run(path)
    m = run.metrics
    layers = sorted(int(k.removeprefix("angle_layer")) for k in m if k.startswith("angle_layer"))
    head = ["epoch", "test error % (continuous)", "test error % (fast path)", "gap (pp)",
            "mean angle per layer (°)", "s/epoch"]
    lines = [f"{path}: rule {run.attrs.get('rule')}, engine {run.attrs.get('engine')}",
             "| " + " | ".join(head) + " |", "|" + "---:|" * len(head)]
    for i, epoch in enumerate(m["epoch"]):
        angles = " / ".join(f"{m[f'angle_layer{l}'][i]:.3f}" for l in layers)
        gap = 100 * abs(m["test_error"][i] - m["reference_test_error"][i])
        lines.append(f"| {int(epoch)} | {100 * m['test_error'][i]:.2f} | {100 * m['reference_test_error'][i]:.2f} | "
                     f"{gap:.2f} | {angles} | {m['seconds'][i]:.0f} |")
    worst = np.max(np.abs(m["test_error"] - m["reference_test_error"])) * 100
    lines.append(f"largest gap {worst:.2f} pp; largest mean angle {max(m[f'angle_layer{l}'].max() for l in layers):.3f}°")
    return "\n".join(lines)


if __name__ == "__main__":
    print("\n\n".join(table(p) for p in sys.argv[1:]))
