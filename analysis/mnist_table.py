"""Markdown table of the MNIST reproduction runs beside the papers' numbers.

    python analysis/mnist_table.py [RUNS_DIR]     (after analysis/reproduce_mnist.sh)

Reports, per run file: epochs trained, final and best-validation test error, and the paper's
test error.  Runs that are missing are listed as such.
"""

import sys
from pathlib import Path

import numpy as np

from biotp.runs import open_run

PAPER = [  # (run file stem, paper, row, test error % in the paper)
    ("lee_7x240_dtp", "Lee et al. 2015 (seed 002 §3.3.1), 784-7x240-10 tanh", "DTP", 1.94),
    ("lee_7x240_bp", "Lee et al. 2015 (seed 002 §3.3.1), 784-7x240-10 tanh", "BP", 1.86),
    ("bartunov_fc_dtp", "Bartunov et al. 2018 (seed 004 Table 1a), FC", "DTP, alternating", 1.83),
    ("bartunov_fc_sdtp", "Bartunov et al. 2018 (seed 004 Table 1a), FC", "SDTP, alternating", 2.28),
    ("bartunov_fc_ao_sdtp", "Bartunov et al. 2018 (seed 004 Table 1a), FC", "AO-SDTP, alternating", 1.86),
    ("bartunov_fc_fa", "Bartunov et al. 2018 (seed 004 Table 1a), FC", "FA", 1.85),
    ("bartunov_fc_dfa", "Bartunov et al. 2018 (seed 004 Table 1a), FC", "DFA", 2.75),
    ("bartunov_fc_bp", "Bartunov et al. 2018 (seed 004 Table 1a), FC", "BP", 1.48),
]


def main(runs_dir: str = "runs") -> None:
    print("| network | rule | paper test error % | epochs run | test error % (last) | test error % (best val epoch) | train error % |")
    print("|---|---|---|---|---|---|---|")
    for stem, paper, row, ref in PAPER:
        path = Path(runs_dir) / f"{stem}.h5"
        if not path.exists():
            print(f"| {paper} | {row} | {ref:.2f} | not run | | | |")
            continue
        m = open_run(path).metrics
        best = int(np.nanargmin(m["val_error"]))
        print(f"| {paper} | {row} | {ref:.2f} | {len(m['epoch'])} | {100 * m['test_error'][-1]:.2f} "
              f"| {100 * m['test_error'][best]:.2f} | {100 * m['train_error'][-1]:.2f} |")


if __name__ == "__main__":
    main(*sys.argv[1:])
