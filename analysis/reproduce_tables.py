"""Each seed paper's results tables as Markdown: the paper's numbers beside the numbers
measured in the run files of a runs directory.

    python analysis/reproduce_tables.py [RUNS_DIR] [--seed 000,002,003,004] [--found]
    python analysis/reproduce_tables.py [RUNS_DIR] --seeds-table [--archive analysis/results]

Every table row names the run files that reproduce it (the first that exists is used; the
names are those analysis/reproduce_mnist.sh writes, or `biotp train`'s default
<circuit name>-<rule>.h5); a row without one says "not run".  A run file whose circuit does
not match the row (another rule, schedule or dataset) is still shown, with a note.  `--found`
keeps only rows that have a run file.

Measured numbers are read from /metrics: the last epoch ("final") and the epoch of lowest
validation error ("best val").  The papers report means over several seeds and
hyperparameters chosen by search; one run with our hyperparameters is not expected to land
on them, and short runs (few epochs) say little about final errors.  Paper numbers are
transcribed from the seed texts (shared/seeds/*.txt), table by table.
"""

from __future__ import annotations

import argparse
import functools
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import yaml

from biotp.errors import BiotpError
from biotp.runs import Run, open_run


@dataclass(frozen=True)
class Row:
    labels: tuple[str, ...]  # the row's label cells (network, method, ...)
    paper: tuple[str, ...]  # the paper's numbers, as printed
    files: tuple[str, ...]  # run files that reproduce the row, first found wins
    expect: dict = field(default_factory=dict, hash=False)  # circuit key path -> value the run must have


@dataclass(frozen=True)
class Measure:
    header: str
    value: Callable  # (run, row, runs of the table by row) -> str


@dataclass
class Table:
    seed: str
    title: str
    label_headers: tuple[str, ...]
    paper_headers: tuple[str, ...]
    measures: tuple[Measure, ...]
    rows: list[Row]
    note: str = ""


# ------------------------------------------------------------------- measured values


def _m(run: Run, name: str) -> np.ndarray:
    return np.asarray(run.metrics[name], dtype=float)


def _best(run: Run) -> int | None:
    val = _m(run, "val_error") if "val_error" in run.metrics else np.array([])
    return int(np.nanargmin(val)) if np.isfinite(val).any() else None


def _pct(x: float) -> str:
    return "—" if not math.isfinite(x) else f"{x:.2f}"


def epochs(run, row, runs) -> str:
    return str(int(run.metrics["epoch"][-1]))


def test_error(run, row, runs) -> str:
    return _pct(100 * _m(run, "test_error")[-1])


def test_error_best_val(run, row, runs) -> str:
    best = _best(run)
    return "—" if best is None else _pct(100 * _m(run, "test_error")[best])


def train_error(run, row, runs) -> str:
    return _pct(100 * _m(run, "train_error")[-1])


def test_accuracy(run, row, runs) -> str:
    return _pct(100 * (1 - _m(run, "test_error")[-1]))


def test_accuracy_best_val(run, row, runs) -> str:
    best = _best(run)
    return "—" if best is None else _pct(100 * (1 - _m(run, "test_error")[best]))


def train_accuracy(run, row, runs) -> str:
    return _pct(100 * (1 - _m(run, "train_error")[-1]))


def train_loss(run, row, runs) -> str:
    return f"{_m(run, 'train_loss')[-1]:.3e}"


def top5_error(run, row, runs) -> str:
    return _pct(100 * _m(run, "test_top5_error")[-1]) if "test_top5_error" in run.metrics else "—"


def seconds_per_epoch(run, row, runs) -> str:
    return f"{np.median(_m(run, 'seconds')):.3g}"


def speed_vs_ldrl(run, row, runs) -> str:
    """Epoch time of LDRL on the same network and data divided by this rule's (seed 003's
    "Speed" column is the speed-up of feedback training against LDRL; ours is whole epochs)."""
    ldrl = next((r for other, r in runs.items() if other.labels[:-1] == row.labels[:-1] and other.labels[-1] == "LDRL"), None)
    if ldrl is None or row.labels[-1] == "Back Propagation":
        return "—"
    return f"×{np.median(_m(ldrl, 'seconds')) / np.median(_m(run, 'seconds')):.2f}"


def network(run, row, runs) -> str:
    """The layers of the run's circuit in the notation of seed 004 Table 3."""
    try:
        layers = run.circuit.network.expanded()
    except (BiotpError, KeyError, ValueError) as err:
        return f"(unreadable circuit: {err})"
    parts = []
    for i, layer in enumerate(layers):
        spec = layer.model_dump()
        if spec.get("type") == "dense":
            last = i == len(layers) - 1
            parts.append(f"{'Softmax' if last else 'FC'} {spec['size']}")
        elif spec.get("type") == "local":
            stride = f", {spec['stride']}" if spec.get("stride", 1) != 1 else ""
            parts.append(f"({spec['kernel']}×{spec['kernel']}, {spec['channels']}{stride})")
        else:
            parts.append(str(spec.get("type")))
    return ", ".join(parts)


# ------------------------------------------------------------------ the papers' tables


def _seed000() -> list[Table]:
    """Farias & Maziero, Tables 1-3: test accuracy (%) with τ and η; 30 epochs for 1-2 hidden
    layers, 60 for 3 (§4)."""
    data = {
        1: ("MNIST", "mnist", [("784-100-10", "97.21", "400", "0.01"), ("784-200-10", "97.5", "400", "0.01"),
                               ("784-500-10", "97.81", "400", "0.01"), ("784-100-100-10", "97.31", "50", "0.001"),
                               ("784-500-500-10", "98.23", "50", "0.001"), ("784-500-500-500-10", "98.23", "25", "0.0005")]),
        2: ("Fashion-MNIST", "fashion", [("784-100-10", "87.03", "100", "0.01"), ("784-500-10", "87.29", "100", "0.01"),
                                         ("784-100-100-10", "87.71", "25", "0.0005"), ("784-500-500-10", "87.77", "25", "0.0005"),
                                         ("784-100-100-100-10", "87.92", "25", "0.000025")]),
        3: ("CIFAR-10", "cifar10", [("3072-100-10", "42.30", "50", "0.001"), ("3072-500-10", "44.74", "50", "0.001"),
                                    ("3072-100-100-10", "44.89", "50", "0.0001"), ("3072-500-500-10", "47.06", "50", "0.0001"),
                                    ("3072-500-500-500-10", "47.11", "50", "0.000005")]),
    }
    tables = []
    for number, (dataset, slug, rows) in data.items():
        tables.append(Table(
            "000", f"Table {number}: {dataset}, GTP test accuracy (%)", ("network", "τ", "η"), ("accuracy %",),
            (Measure("epochs", epochs), Measure("accuracy % (final)", test_accuracy),
             Measure("accuracy % (best val)", test_accuracy_best_val)),
            [Row((net, tau, eta), (score,), (f"gtp_{slug}_{net}.h5", f"gtp_{slug}_{net}-gtp.h5"), {"algorithm.name": "gtp"})
             for net, score, tau, eta in rows],
        ))
    return tables


def _seed002() -> list[Table]:
    """Lee et al. 2015 (thesis): §3.3.1 (MNIST 784-7×240-10, CIFAR-10 3072-1000×3-10),
    Table 3.1 (stochastic 784-200-200-10), §3.3.4 (auto-encoder, fine-tuned by BP)."""
    mnist = Table(
        "002", "§3.3.1: MNIST, 784-7×240-10, test error (%) and final training NLL",
        ("units", "rule"), ("test error %", "train NLL"),
        (Measure("epochs", epochs), Measure("test error % (final)", test_error),
         Measure("test error % (best val)", test_error_best_val), Measure("train NLL (final)", train_loss)),
        [Row(("tanh", "DTP"), ("1.94", "4.584e-05"), ("lee_7x240_dtp.h5", "dtp_mnist_7x240-dtp.h5"), {"algorithm.name": "dtp"}),
         Row(("tanh", "BP"), ("1.86", "1.797e-05"), ("lee_7x240_bp.h5", "dtp_mnist_7x240-bp.h5"), {"algorithm.name": "bp"}),
         Row(("ReLU", "DTP"), ("3.15", ""), ("lee_7x240_relu_dtp.h5",), {"algorithm.name": "dtp", "network.layers.0.activation": "relu"}),
         Row(("ReLU", "BP"), ("1.62", ""), ("lee_7x240_relu_bp.h5",), {"algorithm.name": "bp", "network.layers.0.activation": "relu"})],
    )
    cifar = Table(
        "002", "§3.3.1: CIFAR-10, 3072-1000-1000-1000-10 tanh, test accuracy (%)", ("rule",), ("accuracy %",),
        (Measure("epochs", epochs), Measure("accuracy % (final)", test_accuracy),
         Measure("accuracy % (best val)", test_accuracy_best_val)),
        [Row(("DTP",), ("50.71",), ("lee_cifar_dtp.h5", "dtp_cifar10_fc-dtp.h5"), {"algorithm.name": "dtp", "data.dataset": "cifar10"}),
         Row(("BP",), ("53.72",), ("lee_cifar_bp.h5", "dtp_cifar10_fc-bp.h5"), {"algorithm.name": "bp", "data.dataset": "cifar10"})],
    )
    stochastic = Table(
        "002", "Table 3.1: MNIST, stochastic binary 784-200-200-10, test error (%), M = 1 sample in training",
        ("method",), ("test error %",),
        (Measure("epochs", epochs), Measure("test error % (final)", test_error),
         Measure("test error % (best val)", test_error_best_val)),
        [Row(("Difference target propagation, M=1",), ("1.54",), ("lee_stochastic_dtp.h5", "dtp_mnist_stochastic-dtp.h5"),
             {"algorithm.name": "dtp"}),
         Row(("Straight-through estimator + BP, M=1 (Raiko et al. 2014)",), ("1.71",),
             ("lee_stochastic_bp.h5", "dtp_mnist_stochastic-bp.h5"), {"algorithm.name": "bp"})],
        "The table's other rows (M = 20, Tang & Salakhutdinov 3.99, Raiko et al. 1.63) are other papers' models.",
    )
    autoencoder = Table(
        "002", "§3.3.4: MNIST, DTP-trained denoising auto-encoder (1000 hidden units) fine-tuned by BP, test error (%)",
        ("method",), ("test error %",),
        (Measure("epochs", epochs), Measure("test error % (final)", test_error),
         Measure("test error % (best val)", test_error_best_val)),
        [Row(("DTP auto-encoder + BP fine-tuning",), ("1.35",), ("lee_autoencoder_finetune.h5",))],
    )
    return [mnist, cifar, stochastic, autoencoder]


def _seed003() -> list[Table]:
    """Bao et al., Tables 1-3: train and test accuracy (%, mean ± std over 5 seeds) and the
    speed-up of feedback training against LDRL."""
    rules = (("LDRL", "ldrl"), ("FWDTP", "fwdtp"), ("TJML-DTP", "tjml"), ("Back Propagation", "bp"))
    data = [  # (table, network, circuit stem, dataset, rows (train, test, speed) in the order of `rules`)
        (1, "LeNet", "tjml_lenet_mnist", "MNIST", "mnist",
         [("100.0 ± 0.00", "99.3 ± 0.05", "×1.00"), ("100.0 ± 0.00", "98.6 ± 0.04", "×3.57"),
          ("100.0 ± 0.00", "99.3 ± 0.05", "×3.45"), ("100.0 ± 0.00", "99.3 ± 0.02", "-")]),
        (1, "LeNet", "tjml_lenet_fashion_mnist", "FMNIST", "fashion_mnist",
         [("100.0 ± 0.00", "90.7 ± 0.26", "×1.00"), ("98.1 ± 1.47", "88.3 ± 0.18", "×25.00"),
          ("100.0 ± 0.00", "91.4 ± 0.07", "×14.29"), ("100.0 ± 0.00", "92.7 ± 0.17", "-")]),
        (1, "LeNet", "tjml_lenet_cifar10", "CIFAR-10", "cifar10",
         [("98.2 ± 2.48", "74.7 ± 0.60", "×1.00"), ("80.1 ± 1.92", "66.5 ± 0.63", "×10.00"),
          ("100.0 ± 0.00", "76.7 ± 0.22", "×3.45"), ("100.0 ± 0.00", "81.4 ± 0.13", "-")]),
        (2, "Simplified-VGG", "tjml_vgg_cifar10", "CIFAR-10", "cifar10",
         [("98.7 ± 0.65", "89.5 ± 0.54", "×1.00"), ("77.5 ± 1.72", "62.4 ± 0.56", "×5.88"),
          ("100.0 ± 0.00", "85.2 ± 0.21", "×5.00"), ("100.0 ± 0.00", "89.0 ± 0.22", "-")]),
        (3, "MLP Mixer", "tjml_mixer_cifar10", "CIFAR-10", "cifar10",
         [("55.9 ± 1.13", "37.3 ± 1.48", "×1.00"), ("81.6 ± 1.30", "56.1 ± 0.35", "×4.17"),
          ("80.2 ± 3.17", "56.9 ± 0.49", "×4.00"), ("81.8 ± 0.71", "69.1 ± 0.52", "-")]),
    ]
    measures = (Measure("epochs", epochs), Measure("train % (final)", train_accuracy),
                Measure("test % (final)", test_accuracy), Measure("s/epoch", seconds_per_epoch),
                Measure("speed (epoch time vs LDRL)", speed_vs_ldrl))
    tables: dict[int, Table] = {}
    for number, net, stem, dataset, slug, paper in data:
        table = tables.setdefault(number, Table(
            "003", f"Table {number}: {net}, accuracy (%) and speed against LDRL", ("dataset", "method"),
            ("train %", "test %", "speed"), measures, [],
            "The paper's speed is that of feedback training; ours divides whole-epoch times."))
        for (method, rule), (train, test, speed) in zip(rules, paper):
            table.rows.append(Row((dataset, method), (train, test, speed), (f"{stem}-{rule}.h5",),
                                  {"algorithm.name": rule, "data.dataset": slug}))
    return list(tables.values())


def _seed004() -> list[Table]:
    """Bartunov et al. 2018: Table 1 (final train/test errors %, FC and LC nets on MNIST and
    CIFAR), Table 2 (ImageNet top-1/top-5 test errors %), Table 3 (architectures)."""
    methods = [("DTP, parallel", "dtp", "parallel"), ("DTP, alternating", "dtp", "alternating"),
               ("SDTP, parallel", "sdtp", "parallel"), ("SDTP, alternating", "sdtp", "alternating"),
               ("AO-SDTP, parallel", "ao_sdtp", "parallel"), ("AO-SDTP, alternating", "ao_sdtp", "alternating"),
               ("FA", "fa", None), ("DFA", "dfa", None), ("BP", "bp", None), ("BP ConvNet", None, None)]
    table1 = {  # (network, dataset, file prefix): (train, test) per method, in the order of `methods`
        ("MNIST", "FC", "bartunov_fc", "mnist"): [
            ("0.44", "2.86"), ("0.00", "1.83"), ("1.14", "3.52"), ("0.00", "2.28"), ("0.96", "2.93"),
            ("0.00", "1.86"), ("0.00", "1.85"), ("0.85", "2.75"), ("0.00", "1.48"), ("–", "–")],
        ("MNIST", "LC", "bartunov_lc", "mnist"): [
            ("0.00", "1.52"), ("0.00", "1.46"), ("0.00", "1.98"), ("0.00", "1.90"), ("0.00", "1.92"),
            ("0.00", "1.91"), ("0.00", "1.26"), ("0.23", "2.05"), ("0.00", "1.17"), ("0.00", "1.01")],
        ("CIFAR", "FC", "bartunov_cifar_fc", "cifar10"): [
            ("59.45", "59.14"), ("30.41", "42.32"), ("51.48", "55.32"), ("48.65", "54.27"), ("4.28", "47.11"),
            ("0.00", "45.40"), ("25.62", "41.97"), ("33.35", "47.80"), ("28.97", "41.32"), ("–", "–")],
        ("CIFAR", "LC", "bartunov_cifar_lc", "cifar10"): [
            ("28.69", "39.47"), ("28.54", "39.47"), ("43.00", "46.63"), ("40.40", "45.66"), ("32.67", "40.05"),
            ("34.11", "40.21"), ("17.46", "37.44"), ("32.74", "44.41"), ("0.83", "32.41"), ("1.39", "31.87")],
    }
    error_measures = (Measure("epochs", epochs), Measure("train % (final)", train_error),
                      Measure("test % (final)", test_error), Measure("test % (best val)", test_error_best_val))
    tables = []
    for (dataset, arch, prefix, slug), paper in table1.items():
        rows = []
        for (method, rule, schedule), (train, test) in zip(methods, paper):
            if (train, test) == ("–", "–"):  # not in the paper (a ConvNet has no FC version)
                continue
            if rule is None:  # a convolutional net trained by BP: no circuit of ours
                files = (f"{prefix}_bp_convnet.h5",)
            elif schedule == "parallel":
                files = (f"{prefix}_{rule}_parallel.h5",)
            else:  # alternating, or no feedback to train (FA, DFA, BP): the names reproduce_mnist.sh writes
                files = (f"{prefix}_{rule}.h5",)
            expect = {"data.dataset": slug}
            if rule is not None:
                expect["algorithm.name"] = rule
            if schedule is not None:
                expect["schedule.feedback_training"] = schedule
            rows.append(Row((method,), (train, test), files, expect))
        letter = "a" if dataset == "MNIST" else "b"
        tables.append(Table("004", f"Table 1{letter}: {dataset}, {arch} network, final errors (%)", ("method",),
                            ("train %", "test %"), error_measures, rows))
    imagenet = [("DTP, parallel", "dtp_parallel", "98.34", "94.56"), ("SDTP, parallel", "sdtp_parallel", "99.28", "97.15"),
                ("FA", "fa", "93.08", "82.54"), ("Backpropagation", "bp", "71.79", "49.54"),
                ("Backpropagation, ConvNet", "bp_convnet", "63.93", "40.17")]
    tables.append(Table(
        "004", "Table 2: ImageNet, test errors (%)", ("method",), ("top-1 %", "top-5 %"),
        (Measure("epochs", epochs), Measure("top-1 % (final)", test_error), Measure("top-5 % (final)", top5_error)),
        [Row((method,), (top1, top5), (f"bartunov_imagenet_{stem}.h5",), {"data.dataset": "imagenet32"})
         for method, stem, top1, top5 in imagenet],
        "Our ImageNet loader is the 32×32 down-sampled set; the paper trains on 224×224 images.",
    ))
    architectures = [
        ("MNIST", "FC", "FC 256, FC 256, FC 256, FC 256, FC 256, Softmax 10", "bartunov_fc"),
        ("MNIST", "LC", "(3×3, 32, 2), (3×3, 64, 2), FC 1024, Softmax 10", "bartunov_lc"),
        ("CIFAR", "FC", "FC 1024, FC 1024, FC 1024, Softmax 10", "bartunov_cifar_fc"),
        ("CIFAR", "LC", "(5×5, 64, 2), (5×5, 128, 2), (3×3, 256), FC 1024, Softmax 10", "bartunov_cifar_lc"),
        ("ImageNet", "LC", "(9×9, 48, 4), (3×3, 48, 2), (5×5, 96, 1), (3×3, 96, 2), (3×3, 192, 1), (3×3, 192, 2), "
                           "(3×3, 384, 1), Softmax 1000", "bartunov_imagenet"),
    ]
    any_rule = [m[1] for m in methods if m[1] and m[2] != "parallel"] + [m[1] + "_parallel" for m in methods if m[2] == "parallel"]
    tables.append(Table(
        "004", "Table 3: architectures (locally connected: kernel, channels, stride)", ("dataset", "network"),
        ("layers",), (Measure("layers of the run file's circuit", network),),
        [Row((dataset, arch), (layers,), tuple(dict.fromkeys(f"{prefix}_{r}.h5" for r in any_rule)))
         for dataset, arch, layers, prefix in architectures],
    ))
    return tables


SEEDS = {
    "000": ("Farias & Maziero, Gradient target propagation", _seed000),
    "002": ("Lee et al. 2015, Difference target propagation", _seed002),
    "003": ("Bao et al., Efficient target propagation by deriving analytical solution", _seed003),
    "004": ("Bartunov et al. 2018, Assessing the scalability of biologically-motivated deep learning", _seed004),
}


# ------------------------------------------------------------- reproduction over seeds


@dataclass(frozen=True)
class Reproduction:
    """One row of the papers' MNIST tables trained over seeds at the paper's length: by a sweep
    file (its best configuration of `rule`) or, where no sweep ran it, by run files (globs
    under the runs directory).  `at` is the paper's measure: the test error at the epoch of
    best validation error ("best_val") or at the end ("final")."""

    source: str
    network: str
    method: str
    paper: float  # test error %, as the paper prints it (or 100 - its accuracy)
    at: str
    sweep: str = ""
    rule: str = ""
    runs: tuple[str, ...] = ()


ROOT = Path(__file__).resolve().parents[1]
SWEEPS = "analysis/sweeps"
REPRODUCTIONS = [
    Reproduction("002 §3.3.1", "784-7×240-10 tanh, searched", "DTP", 1.94, "best_val", f"{SWEEPS}/dtp_mnist_7x240_searched_dtp.yaml", "dtp"),
    Reproduction("002 §3.3.1", "784-7×240-10 tanh, searched", "BP", 1.86, "best_val", f"{SWEEPS}/dtp_mnist_7x240_searched_bp.yaml", "bp"),
    Reproduction("002 §3.3.1", "784-7×240-10 tanh, the code's values", "DTP", 1.94, "best_val",
                 f"{SWEEPS}/dtp_mnist_7x240_lee_code_seeds.yaml", "dtp"),
    Reproduction("002 §3.3.1", "784-7×240-10 tanh, the code's values", "BP", 1.86, "best_val",
                 f"{SWEEPS}/dtp_mnist_7x240_lee_code_seeds.yaml", "bp"),
    Reproduction("002 Table 3.1", "stochastic binary 784-200-200-10", "DTP", 1.54, "best_val",
                 f"{SWEEPS}/dtp_mnist_stochastic_seeds.yaml", "dtp"),
    Reproduction("002 Table 3.1", "stochastic binary 784-200-200-10", "BP, straight-through", 1.71, "best_val",
                 f"{SWEEPS}/dtp_mnist_stochastic_seeds.yaml", "bp"),
    Reproduction("002 Table 3.1", "stochastic binary 784-200-200-10, the code's input noise", "DTP", 1.54, "best_val",
                 f"{SWEEPS}/dtp_mnist_stochastic_input_noise_seeds.yaml", "dtp"),
    Reproduction("002 Table 3.1", "stochastic binary 784-200-200-10, the code's input noise", "BP, straight-through",
                 1.71, "best_val", f"{SWEEPS}/dtp_mnist_stochastic_input_noise_seeds.yaml", "bp"),
    *(Reproduction("004 Table 1a", "5 × FC 256 tanh", method, paper, "final", f"{SWEEPS}/bartunov_mnist_fc_searched.yaml", rule)
      for method, rule, paper in [("DTP, alternating", "dtp", 1.83), ("SDTP, alternating", "sdtp", 2.28),
                                  ("AO-SDTP, alternating", "ao_sdtp", 1.86), ("FA", "fa", 1.85), ("DFA", "dfa", 2.75),
                                  ("BP", "bp", 1.48)]),
    Reproduction("000 Table 1", "784-500-500-10 sigmoid, 30 epochs", "GTP", 1.77, "final",
                 runs=("gtp_study/first_sigmoid.h5", "gtp_study/first_sigmoid_seed*.h5")),
    Reproduction("003 Table 1", "LeNet", "TJML-DTP", 0.7, "final", f"{SWEEPS}/tjml_lenet_mnist_searched.yaml", "tjml"),
    Reproduction("003 Table 1", "LeNet", "BP", 0.7, "final", f"{SWEEPS}/tjml_lenet_mnist_searched.yaml", "bp"),
]
MIN_SEEDS = 3


def verdict(paper: float, errors: list[float]) -> str:
    """Reproduced when our mean is at or below the paper's error, or the paper's error lies
    within our mean ± 2 sample s.d. (errors in %)."""
    if len(errors) < MIN_SEEDS:
        return f"open: {len(errors)} of at least {MIN_SEEDS} seeds"
    mean, std = float(np.mean(errors)), float(np.std(errors, ddof=1))
    if mean <= paper:
        return "yes: at or below the paper"
    if mean - 2 * std <= paper:
        return "yes: the paper within mean ± 2 s.d."
    return f"no: the paper lies {(mean - paper) / std:.1f} s.d. below our mean" if std > 0 else "no"


def sweep_directory(path: Path, runs_dir: Path, archive: Path) -> Path:
    """Where the sweep file `path` ran: `runs_dir/sweeps/<stem>`, else its committed record
    (`biotp sweep --archive`) under `archive/sweeps/<stem>`."""
    out, kept = runs_dir / "sweeps" / path.stem, archive / "sweeps" / path.stem
    return kept if not (out / "study.db").exists() and (kept / "study.db").exists() else out


def _seeds_of(row: Reproduction, runs_dir: Path, archive: Path) -> tuple[list[float], list[float], str, str]:
    """(final test errors %, test errors % at best val, length, where) of the row's seeds, or
    empty lists and why ("where" is the sweep file or the run files)."""
    if row.sweep:
        from biotp.sweep import best_of

        path = ROOT / row.sweep
        if not path.exists():
            return [], [], "–", "not run (no sweep file yet)"
        sweep, studies, never_ran = _sweep(path, sweep_directory(path, runs_dir, archive))
        length = f"{sweep.spec.epochs}"
        if never_ran:
            return [], [], length, "not run"
        result = best_of(sweep, row.rule, studies[row.rule])
        n = len(result.runs)
        where = f"{n} seeds" if result.complete else f"{n} of {len(sweep.spec.seeds)} seeds so far"
        return [100 * e for e in result.final_test], [100 * e for e in result.best_val_test], length, where
    files = sorted({p for pattern in row.runs for p in runs_dir.glob(pattern)})
    final, best, lengths = _errors(files)
    return final, best, "/".join(map(str, sorted(lengths))) or "–", f"{len(files)} seeds" if files else "not run"


@functools.lru_cache(maxsize=None)
def _sweep(path: Path, out: Path):
    """(the sweep, its studies by rule, or the error saying it never ran), read once however
    many rows the sweep file serves."""
    from biotp.sweep import load_studies, load_sweep

    sweep = load_sweep(path, out=out)
    try:
        return sweep, load_studies(sweep), None
    except BiotpError as err:
        return sweep, {}, err


def _errors(files: list[Path]) -> tuple[list[float], list[float], set[int]]:
    """(final test errors %, test errors % at the best validation epoch, run lengths) of run files."""
    final, best, lengths = [], [], set()
    for path in files:
        m = open_run(path).metrics
        val = np.asarray(m["val_error"], dtype=float)
        final.append(100 * float(m["test_error"][-1]))
        best.append(100 * float(m["test_error"][int(np.nanargmin(val))]))
        lengths.add(int(m["epoch"][-1]))
    return final, best, lengths


def _pm(values: list[float]) -> str:
    if not values:
        return "–"
    return f"{np.mean(values):.2f}" + (f" ± {np.std(values, ddof=1):.2f}" if len(values) > 1 else "")


ARCHIVE = ROOT / "analysis" / "results"


def render_reproductions(runs_dir: str | Path = "runs", archive: str | Path = ARCHIVE) -> str:
    """The reproduction table: each row's paper number beside our mean ± sample s.d. over seeds
    (a sweep that has not run under `runs_dir` is read from its record under `archive`)."""
    runs_dir, archive = Path(runs_dir), Path(archive)
    lines = ["| paper | network | method | paper: test error % | measure | epochs | test error % (mean ± s.d.) "
             "| final test error % | seeds | reproduced? | sweep file or runs |",
             "|---|---|---|---:|---|---:|---:|---:|---|---|---|"]
    for row in REPRODUCTIONS:
        final, best, length, where = _seeds_of(row, runs_dir, archive)
        measured = best if row.at == "best_val" else final
        source = f"`{row.sweep}`" if row.sweep else ", ".join(f"`{runs_dir / r}`" for r in row.runs)
        if row.sweep and (directory := sweep_directory(ROOT / row.sweep, runs_dir, archive)).is_relative_to(archive):
            source += f" (record: `{_shown(directory)}`)"
        measure = "at best val" if row.at == "best_val" else "final"
        lines.append(f"| {row.source} | {row.network} | {row.method} | {row.paper:.2f} | {measure} | {length} "
                     f"| {_pm(measured)} | {_pm(final)} | {where} | {verdict(row.paper, measured)} | {source} |")
    lines += ["", f"mean ± sample s.d. over seeds; \"reproduced\": our mean at or below the paper's error, or "
                  f"the paper's error within our mean ± 2 s.d. (at least {MIN_SEEDS} seeds)."]
    return "\n".join(lines)


def _shown(path: Path) -> str:
    path = path.resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


# ------------------------------------------------------------------------- rendering


def _lookup(tree: dict, path: str):
    node = tree
    for part in path.split("."):
        if isinstance(node, list):
            node = node[int(part)] if part.isdigit() and int(part) < len(node) else None
        elif isinstance(node, dict):
            node = node.get(part)
        else:
            return None
    return node


def mismatches(run: Run, expect: dict) -> list[str]:
    """`key=value` of the run's circuit for every expected key it does not match."""
    if not expect:
        return []
    circuit = yaml.safe_load(run.attrs.get("circuit_yaml", "")) or {}
    return [f"{k}={_lookup(circuit, k)}" for k, v in expect.items() if _lookup(circuit, k) != v]


def find_run(runs_dir: Path, row: Row) -> tuple[Path | None, Run | None]:
    for name in row.files:
        path = runs_dir / name
        if path.exists():
            try:
                return path, open_run(path)
            except BiotpError:
                return path, None
    return None, None


def _layers(text: str) -> str:
    return text.replace(", 1)", ")")  # Table 3 writes stride 1 sometimes, sometimes not


def render_table(table: Table, runs_dir: Path, found_only: bool = False) -> str | None:
    found = {row: find_run(runs_dir, row) for row in table.rows}
    runs = {row: run for row, (_, run) in found.items() if run is not None}
    header = [*table.label_headers, *(f"paper: {h}" for h in table.paper_headers),
              *(m.header for m in table.measures), "run file", "note"]
    lines = [f"### {table.title}", "", "| " + " | ".join(header) + " |",
             "|" + "|".join(["---"] * len(table.label_headers) + ["---:"] * (len(header) - len(table.label_headers) - 2)
                            + ["---", "---"]) + "|"]
    shown = 0
    for row in table.rows:
        path, run = found[row]
        if run is None:
            if found_only:
                continue
            measured = ["not run" if path is None else "unreadable"] + [""] * (len(table.measures) - 1)
            note = ""
        else:
            measured = [m.value(run, row, runs) for m in table.measures]
            wrong = mismatches(run, row.expect)
            note = f"file has {', '.join(wrong)}" if wrong else ""
            if table.measures[0].value is network and _layers(measured[0]) != _layers(row.paper[0]):
                note = "differs from the paper"
        shown += 1
        file_cell = f"`{(path or runs_dir / row.files[0]).name}`"
        lines.append("| " + " | ".join([*row.labels, *row.paper, *measured, file_cell, note]) + " |")
    if found_only and not shown:
        return None
    if table.note:
        lines += ["", table.note]
    return "\n".join(lines)


def render(runs_dir: str | Path = "runs", seeds: list[str] | None = None, found_only: bool = False) -> str:
    """The Markdown of every table of `seeds` (default: all), measured in `runs_dir`."""
    runs_dir = Path(runs_dir)
    parts = [f"Paper numbers beside runs in `{runs_dir}` (python analysis/reproduce_tables.py).", ""]
    for seed in seeds or list(SEEDS):
        if seed not in SEEDS:
            raise BiotpError(f"--seed {seed}: expected some of {', '.join(SEEDS)}")
        title, tables = SEEDS[seed]
        rendered = [t for t in (render_table(table, runs_dir, found_only) for table in tables()) if t]
        if rendered:
            parts += [f"## Seed {seed}: {title}", "", *("\n\n".join(rendered).split("\n")), ""]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs_dir", nargs="?", default="runs", help="directory of run files (default runs)")
    p.add_argument("--seed", help=f"comma-separated seeds, some of {','.join(SEEDS)} (default all)")
    p.add_argument("--found", action="store_true", help="only rows that have a run file")
    p.add_argument("--seeds-table", action="store_true",
                   help="instead: the rows trained over seeds (sweeps under RUNS_DIR/sweeps, else their records "
                        "under --archive), mean ± s.d. beside the paper, and whether each is reproduced")
    p.add_argument("--archive", type=Path, default=ARCHIVE, metavar="DIR",
                   help="with --seeds-table: the sweeps' committed records, DIR/sweeps/<name> (written by "
                        "`biotp sweep SWEEP.yaml --archive`; default analysis/results)")
    args = p.parse_args(argv)
    try:
        if args.seeds_table:
            print(render_reproductions(args.runs_dir, args.archive))
            return 0
        print(render(args.runs_dir, args.seed.split(",") if args.seed else None, args.found))
    except BiotpError as err:
        print(f"reproduce_tables: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
