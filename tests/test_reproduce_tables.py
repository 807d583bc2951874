"""analysis/reproduce_tables.py: measured numbers from the run files beside the papers',
"not run" for rows without a file, notes for files that do not match their row, and paper
numbers that are really in the seed texts."""

import dataclasses
import importlib.util
import re
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

import biotp
from biotp.errors import BiotpError

ROOT = Path(__file__).resolve().parents[1]
SEEDS_DIR = ROOT.parent / "shared" / "seeds"


@pytest.fixture(scope="module")
def tables():
    spec = importlib.util.spec_from_file_location("reproduce_tables", ROOT / "analysis" / "reproduce_tables.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("runs")
    circuit = biotp.load_circuit(ROOT / "circuits" / "mlp.yaml", ["data.limit=200", "data.batch_size=32"])
    biotp.train(circuit.with_algorithm("dtp"), epochs=2, out=d / "lee_7x240_dtp.h5", progress=False)
    biotp.train(circuit.with_algorithm("dtp"), epochs=1, out=d / "bartunov_fc_fa.h5", progress=False)  # the wrong rule
    return d


def _row(text: str, start: str) -> list[str]:
    line = next(l for l in text.splitlines() if l.startswith(start))
    return [c.strip() for c in line.strip("|").split("|")]


def test_measured_numbers_beside_the_paper(tables, runs_dir):
    text = tables.render(runs_dir, ["002"])
    m = biotp.open_run(runs_dir / "lee_7x240_dtp.h5").metrics
    best = int(np.argmin(m["val_error"]))
    cells = _row(text, "| tanh | DTP |")
    assert cells == ["tanh", "DTP", "1.94", "4.584e-05", "2",
                     f"{100 * m['test_error'][-1]:.2f}", f"{100 * m['test_error'][best]:.2f}",
                     f"{m['train_loss'][-1]:.3e}", "`lee_7x240_dtp.h5`", ""]
    assert _row(text, "| tanh | BP |")[4:] == ["not run", "", "", "", "`lee_7x240_bp.h5`", ""]
    assert _row(text, "| DTP | 50.71 |")[2] == "not run"  # CIFAR-10, §3.3.1
    assert text.count("not run") == 8  # every row of seed 002 (4 + 2 + 2 + 1) but the one run


def test_a_file_that_does_not_match_its_row_is_flagged(tables, runs_dir):
    text = tables.render(runs_dir, ["004"])
    fa = _row(text, "| FA | 0.00 | 1.85 |")
    m = biotp.open_run(runs_dir / "bartunov_fc_fa.h5").metrics
    assert fa[3:6] == ["1", f"{100 * m['train_error'][-1]:.2f}", f"{100 * m['test_error'][-1]:.2f}"]
    assert fa[-1] == "file has data.dataset=digits, algorithm.name=dtp"
    arch = _row(text, "| MNIST | FC |")
    assert arch[3] == "FC 64, FC 64, Softmax 10" and arch[-1] == "differs from the paper"
    assert _row(text, "| MNIST | LC |")[3] == "not run"


def test_found_only_and_errors(tables, runs_dir, tmp_path):
    text = tables.render(runs_dir, found_only=True)
    assert "not run" not in text and "| tanh | DTP |" in text and "| FA | 0.00 | 1.85 |" in text
    assert "Seed 000" not in text and "Seed 003" not in text  # nothing of theirs was run
    assert tables.render(tmp_path, found_only=True).count("|") == 0
    with pytest.raises(BiotpError, match="--seed 001: expected some of 000, 002, 003, 004"):
        tables.render(runs_dir, ["001"])
    assert tables.main([str(runs_dir), "--seed", "005"]) == 2


@pytest.mark.skipif(not SEEDS_DIR.exists(), reason="the seed texts are not beside the repository")
def test_paper_numbers_are_in_the_seed_texts(tables):
    """Every number in a paper column occurs in that seed's text (extraction spacing aside)."""
    for seed, (_, make) in tables.SEEDS.items():
        (path,) = SEEDS_DIR.glob(f"{seed}_*.txt")
        source = re.sub(r"\s+", "", path.read_text())
        for table in make():
            for row in table.rows:
                for cell in row.paper:
                    for number in re.findall(r"\d+(?:\.\d+)?(?:e-\d+)?", cell.replace("×", "")):
                        if "e-" in number:  # written as 4.584 \times 10^{-5} in the text
                            mantissa, exponent = number.split("e-")
                            assert mantissa in source and f"10^{{-{int(exponent)}}}" in source, (seed, number)
                        else:
                            assert number in source, (seed, table.title, row.labels, number)


def test_verdict_against_two_standard_deviations(tables):
    errors = [1.0, 1.2, 1.4]  # mean 1.2, sample s.d. 0.2
    assert tables.verdict(1.3, errors) == "yes: at or below the paper"
    assert tables.verdict(0.85, errors) == "yes: the paper within mean ± 2 s.d."
    assert tables.verdict(0.7, errors) == "no: the paper lies 2.5 s.d. below our mean"
    assert tables.verdict(5.0, [1.0, 1.2]).startswith("open: 2 of at least 3 seeds")


def test_seeds_table_reads_a_sweep(tables, tmp_path, monkeypatch):
    """A row trained by a sweep over three seeds: our mean ± s.d. read from the run files here
    (h5py), and a row whose sweep has not run says so."""
    from biotp.sweep import load_sweep, run_sweep

    spec = {"circuit": str(ROOT / "circuits" / "mlp.yaml"), "rules": ["bp"], "seeds": [0, 1, 2], "epochs": 1,
            "limit": 200, "search": {"sampler": "grid", "pruner": {"name": "none"},
                                     "space": {"optimizer.lr": {"categorical": [0.01]}}}}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(spec))
    runs = tmp_path / "runs"
    run_sweep(load_sweep(path, out=runs / "sweeps" / "tiny"), workers=1, log=lambda *_: None)
    finals = []
    for f in sorted((runs / "sweeps" / "tiny" / "bp").glob("trial-*.h5")):
        with h5py.File(f, "r") as h:
            finals.append(100 * float(h["metrics/test_error"][-1]))
    assert len(finals) == 3
    rows = [tables.Reproduction("t", "net", "BP", 0.5, "final", str(path), "bp"),
            tables.Reproduction("t", "net", "DTP", 0.5, "final", str(tmp_path / "none.yaml"), "dtp")]
    monkeypatch.setattr(tables, "REPRODUCTIONS", rows)
    text = tables.render_reproductions(runs)
    cells = _row(text, "| t | net | BP |")
    mean, sd = np.mean(finals), np.std(finals, ddof=1)
    assert cells[6] == cells[7] == f"{mean:.2f} ± {sd:.2f}"
    assert cells[5] == "1" and cells[8] == "3 seeds" and cells[9] == tables.verdict(0.5, finals)
    assert _row(text, "| t | net | DTP |")[8] == "not run (no sweep file yet)"
    # the sweep's committed record (`biotp sweep --archive`) read where no run directory has it
    from biotp.sweep import archive

    archive(load_sweep(path, out=runs / "sweeps" / "tiny"), tmp_path / "results" / "sweeps" / "tiny")
    kept = _row(tables.render_reproductions(tmp_path / "elsewhere", tmp_path / "results"), "| t | net | BP |")
    assert kept[:10] == cells[:10] and kept[10].endswith(f"(record: `{tmp_path / 'results' / 'sweeps' / 'tiny'}`)")
    # the same study read by the sweep with a fourth seed still to run: the three done so far
    (tmp_path / "more").mkdir()
    spec["seeds"] = [0, 1, 2, 3]
    (tmp_path / "more" / "tiny.yaml").write_text(yaml.safe_dump(spec))
    more = dataclasses.replace(rows[0], sweep=str(tmp_path / "more" / "tiny.yaml"))
    monkeypatch.setattr(tables, "REPRODUCTIONS", [more])
    cells = _row(tables.render_reproductions(runs), "| t | net | BP |")
    assert cells[7] == f"{mean:.2f} ± {sd:.2f}" and cells[8] == "3 of 4 seeds so far"
