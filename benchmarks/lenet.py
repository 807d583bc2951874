"""Seconds per training epoch of every rule that runs on LeNet (seed 003), against BP, in one
run; and TJML's feedback cost against LDRL's.

    python benchmarks/lenet.py --data-dir DIR [--limit N] [--epochs E] [--rules bp,tjml,...]
                               [--circuit circuits/tjml_lenet_mnist.yaml] [--threads T]

Each rule runs in its own process on the same circuit, data and seed (see _common.py); a rule
that cannot run on the network is listed with its error.  LDRL and TJML also time a
forward-only pass (targets, forward updates) and LDRL a feedback-only pass (a forward pass and
the `feedback_iterations` L^LDRL updates of g_l per batch); TJML trains no feedback (G* is
analytical).  Seed 003 Table 1 reports the speed of training relative to LDRL (x1.00): TJML-DTP
x3.45 on LeNet/MNIST (and CIFAR-10), x14.29 on Fashion-MNIST, the same network, so its ratio
is not a per-epoch cost alone (the text speaks of training time to a given accuracy).
"""

from __future__ import annotations

from _common import measure, options, print_table, worker

PAPER_SPEEDUP = 3.45  # seed 003 Table 1, LeNet, MNIST: TJML-DTP's training speed / LDRL's


def print_feedback_cost(rows: list[dict]) -> None:
    by = {r["rule"]: r for r in rows if "seconds" in r}
    if "ldrl" not in by or "tjml" not in by:
        return
    ldrl, tjml = by["ldrl"], by["tjml"]
    print("\nfeedback cost, TJML against LDRL (cpu s/epoch):")
    print(f"  ldrl  epoch {ldrl['seconds']:.2f} = forward-only pass {ldrl['forward_seconds']:.2f} "
          f"+ feedback-only pass {ldrl['feedback_seconds']:.2f} (K = {ldrl.get('feedback_iterations')})")
    print(f"  tjml  epoch {tjml['seconds']:.2f} = forward-only pass {tjml['forward_seconds']:.2f} "
          f"(targets through G*), no feedback training")
    print(f"  LDRL epoch / TJML epoch: x{ldrl['seconds'] / tjml['seconds']:.2f}   (seed 003 Table 1: x{PAPER_SPEEDUP})")
    print(f"  LDRL feedback training / TJML epoch: x{ldrl['feedback_seconds'] / tjml['seconds']:.2f}; "
          f"targets: LDRL forward-only / TJML forward-only x{ldrl['forward_seconds'] / tjml['forward_seconds']:.2f}")


def main() -> None:
    from biotp.algorithms import ALGORITHMS

    args = options(__doc__, "circuits/tjml_lenet_mnist.yaml", list(ALGORITHMS)).parse_args()
    if args.worker:
        worker(args)
        return
    rows = measure(__file__, args, phases=("ldrl", "tjml"))
    print_table(args, rows)
    print_feedback_cost(rows)


if __name__ == "__main__":
    main()
