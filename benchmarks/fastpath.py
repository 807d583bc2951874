"""Seconds per training epoch of every discrete rule against BP on the same net and data.

    python benchmarks/fastpath.py [--circuit circuits/dtp_mnist_7x240.yaml] [--data-dir DIR]
                                  [--rules bp,dtp,...] [--limit N] [--threads T]

Each rule runs in its own process (so peak memory is its own), on the same circuit, data and
seed; the timed part is one pass of training over the training set (no evaluation).  The table
reports CPU and wall-clock seconds per epoch, the ratio to BP measured in the same run (in CPU
seconds, see _common.py), and peak resident memory.
"""

from __future__ import annotations

from _common import measure, options, print_table, worker

RULES = ["bp", "fa", "dfa", "tp", "dtp", "sdtp", "ao_sdtp", "fwdtp"]


def main() -> None:
    args = options(__doc__, "circuits/dtp_mnist_7x240.yaml", RULES).parse_args()
    if args.worker:
        worker(args)
        return
    print_table(args, measure(__file__, args))


if __name__ == "__main__":
    main()
