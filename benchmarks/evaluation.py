"""What an evaluation costs against a training epoch, with and without the training set
(`schedule.eval_train`), for circuits whose evaluation is expensive: the stochastic net
averages M = 100 samples per example.  Process CPU seconds, one thread, one of each.

    python benchmarks/evaluation.py --data-dir DIR [--circuit circuits/dtp_mnist_stochastic.yaml]
        [--algorithm dtp] [--limit N]

The last line, `summary: epoch S eval S eval_held_out S per_epoch@N S S`, gives the seconds of
a training epoch, of an evaluation of all three splits and of validation and test only, and
what an epoch costs on average with one evaluation every N epochs (`schedule.eval_every`),
with and without the training set.
"""

from __future__ import annotations

import argparse
import time

import torch


def cpu_seconds(fn) -> float:
    start = time.process_time()
    fn()
    return time.process_time() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--circuit", default="circuits/dtp_mnist_stochastic.yaml")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--algorithm", default=None, help="default: the circuit's")
    p.add_argument("--limit", type=int, default=None, help="data.limit (default: all the data)")
    args = p.parse_args()

    import biotp
    from biotp.training import Session

    torch.set_num_threads(1)
    sets = [] if args.limit is None else [f"data.limit={args.limit}"]
    circuit = biotp.load_circuit(args.circuit, [*sets, "schedule.eval_train=true"])
    if args.algorithm:
        circuit = circuit.with_algorithm(args.algorithm)
    session = Session(circuit, data_dir=args.data_dir, device="cpu")
    epoch = cpu_seconds(lambda: session.run_epoch(1))
    whole = cpu_seconds(session.evaluate)
    held_out = Session(circuit.with_updates("schedule.eval_train=false"), data_dir=args.data_dir, device="cpu")
    part = cpu_seconds(held_out.evaluate)  # untrained weights: the same work
    n = circuit.schedule.eval_every
    print(f"{circuit.name} [{circuit.algorithm.name}], {len(session.train[0])} training, {len(session.val[0])} validation, "
          f"{len(session.test[0])} test examples; CPU seconds, one thread")
    print(f"training epoch {epoch:.2f}; evaluation {whole:.2f} (all splits), {part:.2f} (validation and test)")
    print(f"summary: epoch {epoch:.2f} eval {whole:.2f} eval_held_out {part:.2f} "
          f"per_epoch@{n} {epoch + whole / n:.2f} {epoch + part / n:.2f}")


if __name__ == "__main__":
    main()
