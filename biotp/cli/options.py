"""Options several verbs share, each defined once, and the helpers that read them."""

from __future__ import annotations

import argparse
import shlex


def count(text: str) -> int:
    """An argparse type: a whole number ≥ 1 (0 examples, a batch of 0, -5 epochs are typos)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a whole number ≥ 1") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text}: expected a whole number ≥ 1")
    return value


def seed_list(text: str) -> list[int]:
    """An argparse type: distinct seeds, comma-separated (0,1,2), each a whole number ≥ 0."""
    try:
        seeds = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected seeds separated by commas, e.g. 0,1,2") from None
    if min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"{text}: expected distinct seeds ≥ 0")
    return seeds


def add_data_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", help="dataset directory (default: $BIOTP_DATA or ~/.biotp/data)")


def add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default=None,
                   help="cpu, cuda or cuda:N (default: cuda when available, else cpu; a device asked for "
                        "that this machine lacks is an error)")


def add_threads(p: argparse.ArgumentParser, default: int | None = None) -> None:
    shown = "torch's own" if default is None else str(default)
    p.add_argument("--threads", type=count, default=default, help=f"torch CPU threads (default {shown})")


def add_quiet(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quiet", action="store_true", help="no progress output")


def add_circuit_options(p: argparse.ArgumentParser, example: str = "optimizer.lr=1e-3") -> None:
    """--set and --seed: changes to the command's circuit."""
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                   help=f"override any circuit field, e.g. --set {example} (repeatable; value parsed as YAML)")
    p.add_argument("--seed", type=int, help="random seed (overrides the circuit's `seed`)")


def add_common(p: argparse.ArgumentParser, *, threads: int | None = None) -> None:
    """The options of every verb that trains or simulates a circuit."""
    add_circuit_options(p)
    add_data_dir(p)
    add_device(p)
    add_threads(p, threads)
    add_quiet(p)


def set_threads(args) -> None:
    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(args.threads)


def command(args) -> str | None:
    """The command line as typed, recorded in run files."""
    argv = getattr(args, "argv", None)
    return shlex.join(["biotp", *argv]) if argv is not None else None


def circuit_of(args, base=None):
    """The command's circuit: its file (or `base`, a resumed run's) with --set, --seed and
    --algorithm applied."""
    from ..circuit import load_circuit

    overrides = list(args.overrides)
    if args.seed is not None:
        overrides.append(f"seed={args.seed}")
    circuit = load_circuit(args.circuit, overrides) if base is None else base.with_updates(*overrides)
    if getattr(args, "algorithm", None):
        circuit = circuit.with_algorithm(args.algorithm)
    return circuit
