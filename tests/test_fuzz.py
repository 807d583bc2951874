"""Fuzzed circuits (issue 12): seeded mutants of the shipped circuits -- keys deleted or
given twice, values swapped for other types, extreme numbers (0, -1, 1e400, nan, true, "",
[], huge sizes) -- must load, build and train one batch, or raise biotp's own error
(`biotp.errors.BiotpError`), within a time bound per mutant.  Never a traceback of another
type, never a hang or a giant allocation (the validation caps sizes, not this test).

BIOTP_FUZZ_MUTANTS (default 60 per base circuit, 9 bases) and BIOTP_FUZZ_SEED scale and vary
the run: `BIOTP_FUZZ_MUTANTS=2000 pytest tests/test_fuzz.py` for a long one.
"""

from __future__ import annotations

import math
import os
import random
import signal
import time
from pathlib import Path

import pytest
import torch
import yaml

import biotp
from biotp.errors import BiotpError
from biotp.training import Session

ROOT = Path(__file__).resolve().parents[1]
MUTANTS = int(os.environ.get("BIOTP_FUZZ_MUTANTS", 60))
SEED = int(os.environ.get("BIOTP_FUZZ_SEED", 12))
SECONDS = 10  # per mutant: load + build + one training pass over 100 digits
MAX_MESSAGE = 2000

# the shipped circuits that fit 8x8 digits once pointed at them (dense, local, mixer, sign,
# stochastic, gtp, dtp on Lee's 7x240)
BASES = ["mlp", "mlp_adaptation", "dtp_mnist_7x240", "bartunov_mnist_fc", "bartunov_mnist_lc", "dtp_mnist_sign",
         "dtp_mnist_stochastic", "gtp_mnist_784-100-10", "tjml_mixer_cifar10"]

EXTREMES = [0, -1, 1, 0.5, -0.5, 1e400, float("inf"), float("-inf"), float("nan"), "1e400", "nan", True, False,
            "", [], {}, None, 10**12, 10**9, 2**31, 2**63, -(10**12), 1e-300, "5 ms", "0 ms", "-1 ms", "1e9 s",
            "5 volt", "x", "../..", [1, 2, 3], {"a": 1}, [[]], "dense", "tanh", "label"]


def digits_sized(name: str) -> dict:
    """The shipped circuit on 100 digits (its dataset's shapes replaced by the digits')."""
    data = yaml.safe_load((ROOT / "circuits" / f"{name}.yaml").read_text())
    data.setdefault("data", {}).update({"dataset": "digits", "limit": 100, "val_split": 0.1})
    data["data"].pop("augment", None)
    data["network"].pop("input", None)
    data.setdefault("schedule", {})["epochs"] = 1
    return data


def _paths(node, prefix=()):
    """Every (path, value) in a nested structure, the root excluded."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        yield prefix + (key,), value
        yield from _paths(value, prefix + (key,))


def _parent(data, path):
    node = data
    for key in path[:-1]:
        node = node[key]
    return node


def mutate(data: dict, rng: random.Random) -> tuple[dict | str, list[str]]:
    """1-3 mutations of `data` (a deep copy); YAML text when a key is duplicated."""
    data = yaml.safe_load(yaml.safe_dump(data))
    done = []
    duplicate = False
    for _ in range(rng.choice((1, 1, 2, 3))):
        paths = [p for p, _ in _paths(data)]
        if not paths:
            break
        path = rng.choice(paths)
        parent, key = _parent(data, path), path[-1]
        what = rng.random()
        if what < 0.15:
            del parent[key]
            done.append(f"delete {'.'.join(map(str, path))}")
        elif what < 0.22 and isinstance(parent, dict):
            duplicate = True
            done.append("duplicate a key")
        elif what < 0.3 and isinstance(parent, list):
            parent.append(yaml.safe_load(yaml.safe_dump(parent[key])))
            done.append(f"repeat {'.'.join(map(str, path))}")
        elif what < 0.4 and isinstance(parent[key], (int, float)) and not isinstance(parent[key], bool):
            factor = rng.choice((0, -1, 1e6, 1e-6, 1e300, 2))
            parent[key] = parent[key] * factor
            done.append(f"{'.'.join(map(str, path))} *= {factor}")
        else:
            value = rng.choice(EXTREMES)
            parent[key] = value
            done.append(f"{'.'.join(map(str, path))} = {value!r}")
    if duplicate:  # a line of a block mapping written twice
        lines = yaml.safe_dump(data, sort_keys=False).splitlines()
        candidates = [i for i, line in enumerate(lines) if ":" in line and not line.lstrip().startswith("-")]
        if candidates:
            i = rng.choice(candidates)
            lines.insert(i + 1, lines[i])
            done[done.index("duplicate a key")] = f"duplicate line {lines[i].strip()!r}"
        return "\n".join(lines) + "\n", done
    return data, done


class Hang(Exception):
    pass


def _alarm(signum, frame):
    raise Hang


def _attempt(path: Path) -> BiotpError | None:
    """Load, build and train one pass on 100 digits; biotp's own error is a valid outcome."""
    try:
        circuit = biotp.load_circuit(path)
        session = Session(circuit, device="cpu")
        session.run_epoch(1)
    except BiotpError as err:
        return err
    return None


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("base", BASES)
def test_mutants_load_build_and_train_or_raise_biotps_own_error(tmp_path, base):
    original = digits_sized(base)
    rng = random.Random(f"{SEED}-{base}")
    failures, outcomes = [], {"ok": 0, "error": 0}
    warm = tmp_path / f"{base}.yaml"  # the unmutated circuit works (and pays the one-off start-up costs)
    warm.write_text(yaml.safe_dump(original, sort_keys=False))
    assert _attempt(warm) is None
    previous = signal.signal(signal.SIGALRM, _alarm)
    try:
        for i in range(MUTANTS):
            mutant, done = mutate(original, rng)
            path = tmp_path / f"{base}-{i}.yaml"
            path.write_text(mutant if isinstance(mutant, str) else yaml.safe_dump(mutant, sort_keys=False))
            t0 = time.perf_counter()
            signal.setitimer(signal.ITIMER_REAL, SECONDS)
            try:
                err = _attempt(path)
            except Hang:
                failures.append(f"{path.name} {done}: no answer within {SECONDS} s")
                continue
            except Exception as exc:  # noqa: BLE001  (what this test exists to find)
                failures.append(f"{path.name} {done}: {type(exc).__name__}: {str(exc)[:300]}")
                continue
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
            if err is None:
                outcomes["ok"] += 1
            else:
                outcomes["error"] += 1
                if len(str(err).encode()) >= MAX_MESSAGE:
                    failures.append(f"{path.name} {done}: a {len(str(err).encode())}-byte message")
            assert time.perf_counter() - t0 < SECONDS + 1
    finally:
        signal.signal(signal.SIGALRM, previous)
    assert not failures, f"{len(failures)} of {MUTANTS} mutants of {base} failed:\n" + "\n".join(failures[:15])
    assert outcomes["ok"] > 0 and outcomes["error"] > 0, outcomes  # the mutants exercise both outcomes


def test_the_fuzz_run_has_at_least_500_mutants():
    assert MUTANTS * len(BASES) >= 500 or "BIOTP_FUZZ_MUTANTS" in os.environ


def test_the_mutator_is_seeded_and_varied():
    base = digits_sized("mlp")
    a = [mutate(base, random.Random("s"))[1] for _ in range(1)]
    b = [mutate(base, random.Random("s"))[1] for _ in range(1)]
    assert a == b
    rng = random.Random(0)
    kinds = {d.split()[0] for _ in range(200) for d in mutate(base, rng)[1]}
    assert {"delete", "duplicate"} <= kinds and len(kinds) >= 4
    assert math.isinf(1e400)
