"""biotp sweep: trials equal plain `biotp train` runs, a killed sweep resumes without losing or
repeating a trial, Dask gives what the local pool gives, pruning stops a hopeless trial, and
malformed sweep files are named errors."""

from __future__ import annotations

import concurrent.futures
import math
import multiprocessing
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

from biotp.circuit import load_circuit
from biotp.cli import main
from biotp.errors import BiotpError, ConfigError
from biotp.runs import open_run
from biotp.sweep import RuleResult, SweepReport, archive, describe_storage, load_sweep, report, run_sweep, write_best
from biotp.training import train

MLP = Path(__file__).resolve().parents[1] / "circuits" / "mlp.yaml"


def write_sweep(directory: Path, name: str, search: dict, **top) -> Path:
    spec = {"circuit": str(MLP), "rules": ["bp"], "seeds": [0, 1], "epochs": 1, "limit": 200, **top,
            "search": search}
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def trials_of(sweep, rule="bp"):
    import optuna

    study = optuna.load_study(study_name=sweep.study_name(rule), storage=f"sqlite:///{sweep.out / 'study.db'}")
    return study.get_trials()


def reference(rule: str, params: dict, seed: int, epochs: int, limit: int = 200) -> dict:
    """The same configuration trained directly, as `biotp train --set ...` builds it, with the
    one torch thread each of two workers gets on two cores (sums are ordered by thread count)."""
    import torch

    sets = [f"{k}={v!r}" for k, v in params.items()] + [f"seed={seed}", f"schedule.epochs={epochs}"]
    sets += [] if limit is None else [f"data.limit={limit}"]
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, len(os.sched_getaffinity(0)) // 2))
    try:
        return train(load_circuit(MLP, sets).with_algorithm(rule), progress=False)
    finally:
        torch.set_num_threads(threads)


def assert_same_metrics(run_file, expected: dict) -> None:
    got = open_run(run_file).metrics
    assert set(got) == set(expected)
    for name in expected:
        if name != "seconds":  # wall time
            np.testing.assert_array_equal(got[name], expected[name], err_msg=name)


def completed(trials):
    return [t for t in trials if t.state.name == "COMPLETE"]


GRID = {"sampler": "grid", "space": {"optimizer.lr": {"categorical": [0.001, 0.003]},
                                     "data.batch_size": {"categorical": [16, 32]}}}
RANDOM = {"sampler": "random", "trials": 2, "pruner": {"name": "none"},
          "space": {"optimizer.lr": {"log_uniform": [1.0e-3, 1.0e-2]}, "data.batch_size": {"categorical": [16, 32]}}}


@pytest.fixture(scope="module")
def pool():
    """Two local worker processes shared by the tests (each process start imports torch)."""
    with concurrent.futures.ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as executor:
        yield executor


@pytest.fixture(scope="module")
def local_sweeps(tmp_path_factory, pool):
    directory = tmp_path_factory.mktemp("sweeps")
    sweeps = {}
    for name, search in (("grid", GRID), ("random", RANDOM)):
        sweep = load_sweep(write_sweep(directory, name, search), out=directory / name)
        run_sweep(sweep, workers=2, executor=pool, log=lambda line: None)
        sweeps[name] = sweep
    return sweeps


@pytest.mark.parametrize("name, n_configs", [("grid", 4), ("random", 2)])
def test_trials_are_train_runs_and_report_is_their_mean_and_sd(local_sweeps, name, n_configs):
    sweep = local_sweeps[name]
    trials = trials_of(sweep)
    assert len(trials) == len(completed(trials)) == 2 * n_configs  # two seeds per configuration
    keys = [(t.params["optimizer.lr"], t.params["data.batch_size"], t.user_attrs["seed"]) for t in trials]
    assert len(set(keys)) == len(keys) and {k[2] for k in keys} == {0, 1}
    if name == "grid":
        assert set(keys) == {(lr, bs, s) for lr in (0.001, 0.003) for bs in (16, 32) for s in (0, 1)}
    for t in trials:
        assert Path(t.user_attrs["run"]) == sweep.out.resolve() / "bp" / f"trial-{t.number:04d}.h5"
        assert_same_metrics(t.user_attrs["run"], reference("bp", t.params, t.user_attrs["seed"], epochs=1))

    # independently from the run files: best mean validation error over seeds, then its test errors
    by_config: dict = {}
    for run in sorted((sweep.out / "bp").glob("trial-*.h5")):
        with h5py.File(run) as f:
            circuit = yaml.safe_load(f.attrs["circuit_yaml"])
            val, test = f["metrics/val_error"][()], f["metrics/test_error"][()]
            train = f["metrics/train_error"][-1]
        config = (circuit["optimizer"]["lr"], circuit["data"]["batch_size"])
        by_config.setdefault(config, []).append((val.min(), test[-1], test[np.argmin(val)], train))
    best = min(by_config, key=lambda c: np.mean([v[0] for v in by_config[c]]))
    values = np.array(by_config[best])
    summary = report(sweep)
    result = summary.results["bp"]
    assert (result.params["optimizer.lr"], result.params["data.batch_size"]) == best
    for got, column in ((result.final_test, 1), (result.best_val_test, 2), (result.final_train, 3)):
        mean, sd = result.mean_std(got)
        assert mean == pytest.approx(values[:, column].mean()) and sd == pytest.approx(values[:, column].std(ddof=1))
    lines = (sweep.out / "report.md").read_text().strip().splitlines()
    mean, sd = values[:, 2].mean() * 100, values[:, 2].std(ddof=1) * 100
    assert lines[-1] == f"best: bp {mean:.4g}±{sd:.2g}"
    assert {p.name for p in summary.figures} >= {"history.png", "validation.png", "curves.png"}


def test_report_of_a_running_sweep_shows_the_seeds_done_and_best_to_waits(local_sweeps, tmp_path):
    # the grid's study (seeds 0, 1 done) read by the same sweep with a third seed still to run
    grid = local_sweeps["grid"]
    path = write_sweep(tmp_path, "grid", GRID, seeds=[0, 1, 2])
    running = load_sweep(path, out=grid.out)
    by_config: dict = {}
    for t in completed(trials_of(grid)):
        with h5py.File(t.user_attrs["run"]) as f:
            by_config.setdefault(t.user_attrs["config"], []).append(float(f["metrics/test_error"][-1]))
    best = min(by_config, key=lambda c: np.mean([t.value for t in completed(trials_of(grid))
                                                 if t.user_attrs["config"] == c]))
    summary = report(running, figures=False)
    result = summary.results["bp"]
    assert not result.complete and result.config == best and result.seeds == [0, 1]
    assert result.final_test == pytest.approx(by_config[best])
    row = next(line for line in summary.markdown().splitlines() if line.startswith("| bp |"))
    assert row.split(" | ")[1] == "2 of 3 so far"
    with pytest.raises(BiotpError, match="no configuration of bp has completed all its seeds"):
        write_best(running, summary, tmp_path / "seeds.yaml", seeds=[0])
    assert report(grid, figures=False).results["bp"].complete


def test_inspect_lists_every_trial_of_the_study_from_the_storage_alone(local_sweeps, capsys):
    """`biotp inspect study.db`: one row per trial (its seed, configuration, value and run file)
    and each configuration's values, checked against the trials' own run files."""
    sweep = local_sweeps["grid"]
    assert main(["inspect", str(sweep.out / "study.db")]) == 0
    text = capsys.readouterr().out
    assert f"study {sweep.name}-bp (minimize val_error at best; output {sweep.out.resolve()}): 8 trials, 8 complete" in text
    rows = {int(line.split()[0]): line.split() for line in text.splitlines() if line.split()[:1] and line.split()[0].isdigit()}
    runs = sorted((sweep.out / "bp").glob("trial-*.h5"))
    assert sorted(rows) == list(range(len(runs))) == list(range(8))
    configs = {}
    for run in runs:
        number = int(run.stem.split("-")[1])
        with h5py.File(run) as f:  # the trial's own record: its command and validation curve
            command = shlex.split(f.attrs["command"])
            value = float(np.min(f["metrics/val_error"][()]))
        trial, state, seed, config, shown, path = rows[number]
        assert (state, int(seed), path) == ("complete", int(command[command.index("--seed") + 1]), f"bp/{run.name}")
        assert float(shown) == pytest.approx(value, rel=1e-3)
        sets = dict(a.removeprefix("--set=").split("=") for a in command if a.startswith("--set="))
        configs.setdefault(config, set()).add((float(sets["optimizer.lr"]), int(sets["data.batch_size"])))
    assert len(configs) == 4 and all(len(v) == 1 for v in configs.values())  # a configuration's seeds agree
    for config, ((lr, batch),) in configs.items():
        assert f"config {config}: optimizer.lr={lr:.4g}, data.batch_size={batch}" in text


def test_sweep_curves_draw_each_sweeps_best_configuration_over_its_seeds(local_sweeps, tmp_path):
    """analysis/sweep_curves.py: one curve per sweep and rule, the mean over the seeds of the
    configuration with the best mean objective, found here from the run files alone."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("sweep_curves", Path(__file__).parents[1] / "analysis" / "sweep_curves.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    files = [write_sweep(tmp_path, name, search, out=str(local_sweeps[name].out)) for name, search in (("grid", GRID), ("random", RANDOM))]
    expected = []
    for name in ("grid", "random"):
        by_config: dict = {}
        for run in sorted((local_sweeps[name].out / "bp").glob("trial-*.h5")):
            with h5py.File(run) as f:
                circuit = yaml.safe_load(f.attrs["circuit_yaml"])
                by_config.setdefault((circuit["optimizer"]["lr"], circuit["data"]["batch_size"]), []).append(
                    (f["metrics/val_error"][()].min(), f["metrics/test_error"][()]))
        best = min(by_config.values(), key=lambda runs: np.mean([v for v, _ in runs]))
        expected.append(100 * np.mean([test for _, test in best], axis=0))
    fig = module.sweep_curves(files, ["grid best", "random best"], error_max=50, log_loss=True)
    error = next(ax for ax in fig.axes if ax.get_ylabel().endswith("(%)"))
    assert [ax.get_yscale() for ax in fig.axes] == ["log", "linear"]  # loss, error
    tests = [line for line in error.get_lines() if line.get_linestyle() == "-"]
    assert [line.get_color() for line in tests] == ["C0", "C1"] and error.get_ylim() == (0, 50)
    for line, mean in zip(tests, expected):
        np.testing.assert_allclose(line.get_ydata(), mean, rtol=1e-6)
    assert [t.get_text() for t in error.get_legend().get_texts()][:2] == ["grid best (2 seeds)", "random best (2 seeds)"]
    with pytest.raises(BiotpError, match=r"--label: expected 2 distinct labels, one per curve \(grid: bp, random: bp\)"):
        module.sweep_curves(files, ["one"])
    with pytest.raises(SystemExit):  # argparse's usage error, before any study is read
        module.main([str(files[0]), "--out", str(tmp_path / "curves.xyz")])
    (tmp_path / "a_file").write_text("")
    assert module.main([str(files[0]), "--out", str(tmp_path / "a_file" / "curves.png")]) == 2
    assert module.main([str(files[0]), "--out", str(tmp_path / "figures" / "curves.png")]) == 0
    assert (tmp_path / "figures" / "curves.png").stat().st_size > 0


def test_an_archive_keeps_the_studies_and_records_without_checkpoints_and_reports_alone(local_sweeps, tmp_path, capsys):
    """`--archive DIR`: the compact record of a finished sweep.  Read as the sweep's directory
    with the original moved away, it reports what the original reported, from run files that
    hold the original's metrics and no checkpoint; running the sweep on it trains nothing."""
    sweep = local_sweeps["random"]
    before = report(sweep, figures=False).results["bp"]
    kept = tmp_path / "results" / "random"
    assert main(["sweep", sweep.source, "--out", str(sweep.out), "--archive", str(kept)]) == 0
    assert capsys.readouterr().out.strip() == f"archived {sweep.source} to {kept}: bp 4 run files"
    originals = sorted((sweep.out / "bp").glob("trial-*.h5"))
    assert sorted(p.name for p in (kept / "bp").iterdir()) == [p.name for p in originals]
    for original in originals:
        with h5py.File(original) as f, h5py.File(kept / "bp" / original.name) as g:
            assert "checkpoint" in f and "checkpoint" not in g
            assert set(g["metrics"]) == set(f["metrics"])
            for name in f["metrics"]:
                np.testing.assert_array_equal(g["metrics"][name][()], f["metrics"][name][()])
            assert g.attrs["command"] == f.attrs["command"] and g.attrs["circuit_yaml"] == f.attrs["circuit_yaml"]
        assert (kept / "bp" / original.name).stat().st_size < original.stat().st_size / 5
    moved = sweep.out.with_name("moved-away")
    os.rename(sweep.out, moved)
    try:
        archived = load_sweep(sweep.source, out=kept)
        after = report(archived, figures=False).results["bp"]
        assert (after.config, after.seeds, after.objective) == (before.config, before.seeds, before.objective)
        assert (after.final_test, after.best_val_test) == (before.final_test, before.best_val_test)
        assert all(Path(run).parent == kept.resolve() / "bp" for run in after.runs)
        lines = []
        run_sweep(archived, workers=1, log=lines.append)
        assert lines == [] and len(trials_of(archived)) == 4
        assert main(["sweep", sweep.source, "--out", str(kept), "--archive", str(kept)]) == 2
        assert "inside the sweep's own directory" in capsys.readouterr().err
    finally:
        os.rename(moved, sweep.out)
    never = load_sweep(write_sweep(tmp_path, "never", RANDOM), out=tmp_path / "never")
    with pytest.raises(BiotpError, match="no study of this sweep"):
        archive(never, tmp_path / "never-kept")
    assert not (tmp_path / "never-kept").exists() and not list(tmp_path.glob("never-kept.tmp-*"))


def test_an_archived_unfinished_trial_is_trained_again_and_a_newer_record_replaces_the_old(tmp_path, pool):
    import shutil

    from biotp.sweep import Driver

    sweep = load_sweep(write_sweep(tmp_path, "one", RANDOM, seeds=[0]), out=tmp_path / "one")
    sweep.out.mkdir()
    driver = Driver(sweep)
    running = driver.next_trial(driver.studies["bp"])  # taken, as by a sweep killed mid-trial
    shutil.copytree(sweep.out, tmp_path / "early")
    kept = tmp_path / "kept"
    archive(sweep, kept)
    shutil.copytree(kept, tmp_path / "copy")
    (left,) = trials_of(load_sweep(sweep.source, out=kept))
    assert left.state.name == "RUNNING" and not (kept / "bp").exists()  # no run file to copy
    assert "one-bp (minimize val_error at best; output " in describe_storage(kept / "study.db").split("\n")[2]
    assert describe_storage(kept / "study.db").split("\n")[2].endswith("): 1 trial, 1 running")

    # run on a copy of the record, the unfinished trial is replaced and trained from the start
    again = load_sweep(sweep.source, out=tmp_path / "copy")
    run_sweep(again, workers=2, executor=pool, log=lambda line: None)
    trials = trials_of(again)
    assert trials[0].state.name == "FAIL" and trials[0].user_attrs["replaced_by"] == 1
    done = completed(trials)
    assert len(done) == 2  # the random search's two configurations, the unfinished one among them
    trial = next(t for t in done if t.params == running.params)
    assert trial.number == 1 and not (sweep.out / "bp").exists()  # written in the copy, under the
    assert_same_metrics(tmp_path / "copy" / "bp" / "trial-0000.h5",  # run file name the first trial was given
                        reference("bp", running.params, 0, epochs=1))

    # the original finishes too; its newer record replaces the old, the same as the copy's
    run_sweep(sweep, workers=2, executor=pool, log=lambda line: None)
    assert archive(sweep, kept) == {"bp": 2}
    assert [(t.number, t.state.name, t.value) for t in trials_of(load_sweep(sweep.source, out=kept))] == \
        [(t.number, t.state.name, t.value) for t in trials]
    assert sorted(p.name for p in (kept / "bp").iterdir()) == sorted(p.name for p in (sweep.out / "bp").iterdir())
    assert archive(again, kept) == {"bp": 2}  # the same record, from elsewhere
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name or ".old-" in p.name]

    # an older record, another sweep's or another directory does not replace what `kept` holds
    before = (kept / "study.db").read_bytes()
    with pytest.raises(BiotpError, match=r"kept: holds bp trial 1 \(complete\), which the sweep's study no longer has"):
        archive(load_sweep(sweep.source, out=tmp_path / "early"), kept)
    other = load_sweep(write_sweep(tmp_path, "other", RANDOM, seeds=[0]), out=tmp_path / "one")
    with pytest.raises(BiotpError, match=r"kept: exists and is not a record of .*other.yaml \(its study.db has no study 'other-bp'\)"):
        archive(other, kept)
    (tmp_path / "plain").mkdir()
    with pytest.raises(BiotpError, match=r"plain: exists and holds no study.db"):
        archive(sweep, tmp_path / "plain")
    (tmp_path / "a_file").write_text("")
    with pytest.raises(BiotpError, match=r"a_file/kept: cannot write .*a_file/kept.tmp-\d+ \(Not a directory\)"):
        archive(sweep, tmp_path / "a_file" / "kept")
    assert (kept / "study.db").read_bytes() == before


def test_inspect_names_a_database_that_holds_no_study(tmp_path, capsys):
    import sqlite3

    path = tmp_path / "empty.db"
    sqlite3.connect(path).execute("create table t (x)").connection.commit()
    before = path.read_bytes()
    assert main(["inspect", str(path)]) == 2
    assert "empty.db: an SQLite database with no Optuna study in it; expected a sweep's study.db" in capsys.readouterr().err
    assert path.read_bytes() == before  # not made into a study storage
    path.write_bytes(before[:100])  # a header, and the rest cut off
    assert main(["inspect", str(path)]) == 2
    assert "empty.db: not a readable SQLite database (database disk image is malformed)" in capsys.readouterr().err


def test_report_names_a_configuration_with_nothing_searched_as_the_circuits_own(tmp_path):
    sweep = load_sweep(write_sweep(tmp_path, "plain", GRID, seeds=[0]))
    done = RuleResult("bp", 0, {}, [0], [tmp_path / "trial-0000.h5"], [0.1], [0.02], [0.03], complete=True,
                      final_train=[0.01])
    none = RuleResult("bp", None, {}, [], [], [], [], [], complete=False)
    untrained = RuleResult("bp", 0, {}, [0, 1], [tmp_path / "trial-0000.h5"] * 2, [0.1, 0.2], [0.02, 0.04],
                           [0.03, 0.05], complete=True, final_train=[math.nan, math.nan])  # eval_train: false
    rows = [SweepReport(sweep, {"bp": r}, []).markdown().splitlines()[2] for r in (done, none, untrained)]
    assert rows[0].startswith("| bp | 1 | 0.1 ± nan | 1 ± nan | 2 ± nan | 3 ± nan |")
    assert rows[0].endswith("| (the circuit's own) |")
    assert rows[1].startswith("| bp | 0 of 1 so far |") and rows[1].endswith("| (none complete) |")
    assert rows[2].startswith("| bp | 2 | 0.15 ± 0.071 | – | 3 ± 1.4 | 4 ± 1.4 |")


def test_dask_cluster_gives_the_local_pool_results(local_sweeps, tmp_path):
    from distributed import LocalCluster

    local = {(t.params["optimizer.lr"], t.params["data.batch_size"], t.user_attrs["seed"]): t.user_attrs["run"]
             for t in trials_of(local_sweeps["grid"])}
    sweep = load_sweep(write_sweep(tmp_path, "grid", GRID), out=tmp_path / "dask")
    with LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None) as cluster:
        run_sweep(sweep, dask=cluster.scheduler_address, log=lambda line: None)
    trials = trials_of(sweep)
    assert len(completed(trials)) == len(trials) == len(local)
    for t in trials:
        expected = open_run(local[(t.params["optimizer.lr"], t.params["data.batch_size"], t.user_attrs["seed"])]).metrics
        assert t.value == pytest.approx(expected["val_error"].min())
        assert_same_metrics(t.user_attrs["run"], expected)


def test_killed_sweep_resumes_without_losing_or_repeating_trials(tmp_path, pool):
    # bp with batches of 4 on all of digits: about a second per epoch, time to kill inside epoch 2
    search = {"sampler": "grid", "space": {"optimizer.lr": {"categorical": [0.001, 0.002]},
                                           "data.batch_size": {"categorical": [4]}}}
    path = write_sweep(tmp_path, "kill", search, epochs=2, limit=1000)
    sweep = load_sweep(path, out=tmp_path / "out")
    command = [sys.executable, "-m", "biotp.cli", "sweep", str(path), "--out", str(sweep.out), "--workers", "2"]
    proc = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    first = sweep.out.resolve() / "bp" / "trial-0000.h5"
    deadline = time.time() + 120
    try:
        while time.time() < deadline and proc.poll() is None:
            if first.exists():
                try:
                    epochs = len(open_run(first).metrics["epoch"])
                except BiotpError:  # caught between write and rename
                    continue
                if epochs == 1:
                    break
            time.sleep(0.02)
        assert proc.poll() is None, f"the sweep ended before it could be killed: {proc.stderr.read().decode()}"
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and its workers, mid-epoch
    finally:
        proc.wait()
    before = trials_of(sweep)
    assert any(t.state.name == "RUNNING" for t in before)
    assert len(open_run(first).metrics["epoch"]) == 1
    first_epoch_seconds = open_run(first).metrics["seconds"][0]

    run_sweep(sweep, workers=2, executor=pool, log=lambda line: None)
    trials = trials_of(sweep)
    done = completed(trials)
    assert sorted((t.params["optimizer.lr"], t.user_attrs["seed"]) for t in done) == \
        [(lr, s) for lr in (0.001, 0.002) for s in (0, 1)]  # every unit once
    replaced = [t for t in trials if t.state.name == "FAIL"]
    assert replaced and all(t.user_attrs["replaced_by"] in {d.number for d in done} for t in replaced)
    resumed = {t.user_attrs["resumes"]: t for t in done if "resumes" in t.user_attrs}
    assert 0 in resumed and resumed[0].user_attrs["run"] == str(first)  # continued trial 0's run file,
    assert open_run(first).metrics["seconds"][0] == first_epoch_seconds  # from its checkpoint, not from scratch
    for t in resumed.values():  # the interrupted trials equal uninterrupted training
        expected = reference("bp", t.params, t.user_attrs["seed"], epochs=2, limit=1000)
        assert_same_metrics(t.user_attrs["run"], expected)


@pytest.mark.parametrize("sampler", ["random", "tpe"])
def test_a_search_run_again_draws_new_configurations_the_same_as_one_run(tmp_path, pool, sampler):
    # stopped after two configurations, then run again with four: the same four configurations as
    # one uninterrupted run, all different (a sampler seeded once per process redrew the first two)
    def configurations(name, budgets):
        for trials in budgets:
            search = {**RANDOM, "sampler": sampler, "trials": trials}
            sweep = load_sweep(write_sweep(tmp_path, name, search, seeds=[0]), out=tmp_path / name)
            run_sweep(sweep, workers=1, executor=pool, log=lambda line: None)
        return [(t.params["optimizer.lr"], t.params["data.batch_size"]) for t in trials_of(sweep)]

    resumed, whole = configurations("resumed", (2, 4)), configurations("whole", (4,))
    assert resumed == whole
    assert len({lr for lr, _ in whole}) == 4


def test_pruning_stops_a_hopeless_trial(tmp_path, pool):
    # a grid runs in file order with one worker: two good learning rates, then an almost-zero one
    search = {"sampler": "grid", "pruner": {"name": "median", "startup_trials": 2},
              "space": {"optimizer.lr": {"categorical": [0.01, 0.02, 1.0e-9]}}}
    sweep = load_sweep(write_sweep(tmp_path, "prune", search, seeds=[0], epochs=3), out=tmp_path / "out")
    run_sweep(sweep, workers=1, executor=pool, log=lambda line: None)
    states = {t.params["optimizer.lr"]: t for t in trials_of(sweep)}
    assert [states[lr].state.name for lr in (0.01, 0.02, 1.0e-9)] == ["COMPLETE", "COMPLETE", "PRUNED"]
    hopeless = states[1.0e-9]
    assert list(hopeless.intermediate_values) == [1]  # stopped after its first epoch of three
    good = [states[lr].intermediate_values[1] for lr in (0.01, 0.02)]
    assert hopeless.intermediate_values[1] > max(good)
    assert len(open_run(states[0.01].user_attrs["run"]).metrics["epoch"]) == 3


GOOD = {"circuit": str(MLP), "rules": ["dtp", "bp"], "seeds": [0], "epochs": 1,
        "search": {"sampler": "tpe", "trials": 2, "space": {"optimizer.lr": {"log_uniform": [1.0e-4, 1.0e-2]}}}}


def _with(path: str, value):
    spec = yaml.safe_load(yaml.safe_dump(GOOD))
    *parents, last = path.split("/")
    node = spec
    for key in parents:
        node = node[key]
    node[last] = value
    return spec


@pytest.mark.parametrize("spec, expected", [
    (_with("epoch", 3), ["epoch: unknown key; expected one of: name, circuit, rules"]),
    (_with("search/space/optimizer.lr", {"log_uniform": [1e-4, 1e-2], "step": 2}),
     ["search.space.optimizer.lr: unknown key 'step'; expected one of: uniform, log_uniform, categorical"]),
    (_with("search/space/optimizer.learning_rate", {"uniform": [0.1, 0.2]}),
     ["search.space.optimizer.learning_rate", "has no field 'optimizer.learning_rate'", "dtp, bp"]),
    (_with("search/space/feedback.noise", {"uniform": [0.3, 0.01]}),
     ["search.space.feedback.noise", "empty or inverted range: expected low < high; got [0.3, 0.01]"]),
    (_with("search/space/feedback.noise", {"uniform": [0.1, 0.1]}), ["empty or inverted range", "[0.1, 0.1]"]),
    (_with("epochs", True), ["epochs: expected a number, not a boolean; got True"]),
    (_with("search/space/feedback.noise", {"uniform": [True, 0.3]}),
     ["search.space.feedback.noise.uniform.0: expected a number, not a boolean; got True"]),
    (_with("rules", ["dtp", "backprop"]), ["rules: unknown rule 'backprop'; expected one of", "ao_sdtp"]),
    (_with("search/space/optimizer.eps", {"categorical": []}),
     ["search.space.optimizer.eps.categorical: List should have at least 1 item"]),
    (_with("search/space/optimizer.lr", {"uniform": [-0.1, 0.1]}),
     ["search.space.optimizer.lr: value -0.1 does not fit rule 'dtp'", "optimizer.lr: Input should be greater than 0"]),
    (_with("search/space/algorithm.eta_hat", {"uniform": [0.01, 0.2], "rules": ["bp"]}),
     ["search.space.algorithm.eta_hat", "has no field 'algorithm.eta_hat' under rule 'bp'"]),
    (_with("search", {"sampler": "random", "space": {"optimizer.lr": {"uniform": [0.001, 0.01]}}}),
     ["search: a random search needs `trials`"]),
    (_with("search", {"sampler": "grid", "space": {"optimizer.lr": {"uniform": [0.001, 0.01]}}}),
     ["search: space.optimizer.lr: a grid needs categorical values or `points` along the range"]),
    (_with("search/sampler", "grid"), ["search: a grid runs all of its points; got trials: 2, expected no `trials`"]),
    (_with("seeds", [0, True]), ["seeds.1: expected a number, not a boolean; got True"]),
    (_with("search/space/optimizer.eps", {"categorical": [1.0e-6, 1.0e-6]}),
     ["search.space.optimizer.eps: categorical values repeat; expected distinct values, got [1e-06, 1e-06]"]),
    (_with("fixed", {"fa": {"optimizer.lr": 0.01}}), ["fixed.fa: not among the sweep's rules ['dtp', 'bp']"]),
    (_with("fixed", {"bp": {"algorithm.eta_hat": 0.1}}),
     ["fixed.bp.algorithm.eta_hat: the circuit", "has no field 'algorithm.eta_hat' under rule 'bp'"]),
    (_with("fixed", {"dtp": {"optimizer.lr": -1.0}}),
     ["fixed.dtp.optimizer.lr: value -1.0 does not fit", "optimizer.lr: Input should be greater than 0"]),
    (_with("fixed", {"bp": 3}), ["fixed.bp: expected a mapping of key paths to values; got 3"]),
    (_with("fixed", {"bp": {"optimizer.lr": [0.1, 0.2]}}),
     ["fixed.bp.optimizer.lr: expected one number, string or boolean; got [0.1, 0.2]"]),
], ids=["unknown-key", "unknown-param-key", "missing-field", "inverted", "empty", "bool-epochs", "bool-bound",
        "unknown-rule", "empty-categorical", "value-unfit", "rule-without-field", "random-no-trials", "grid-range",
        "grid-trials", "bool-seed", "repeated-categorical", "fixed-unknown-rule", "fixed-missing-field",
        "fixed-value-unfit", "fixed-not-a-mapping", "fixed-list-value"])
def test_malformed_sweep_files_are_named_errors(tmp_path, spec, expected):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(ConfigError) as err:
        load_sweep(path)
    message = str(err.value)
    assert message.startswith(f"{path}: ")
    for part in expected:
        assert part in message


def test_best_to_writes_the_second_stage_a_sweep_of_each_rules_best_configuration(local_sweeps, tmp_path, pool):
    search = local_sweeps["random"]
    # the best configuration, from the study alone: the lowest mean objective over both seeds
    by_config: dict = {}
    for t in completed(trials_of(search)):
        by_config.setdefault(t.user_attrs["config"], []).append(t)
    best = min(by_config.values(), key=lambda ts: np.mean([t.value for t in ts]))[0].params
    path = tmp_path / "stage2" / "seeds.yaml"
    assert main(["sweep", search.source, "--out", str(search.out), "--report", "--best-to", str(path),
                 "--seeds", "3,4", "--epochs", "2"]) == 0
    seeds = load_sweep(path, out=tmp_path / "out")
    assert seeds.spec.search is None and seeds.spec.seeds == [3, 4] and seeds.spec.epochs == 2
    assert seeds.spec.fixed == {"bp": best}  # exactly, not rounded
    assert seeds.spec.limit is None  # all the data: the search's limit was its budget
    lines = []
    run_sweep(seeds, workers=2, executor=pool, log=lines.append)
    done = completed(trials_of(seeds))
    assert sorted(t.user_attrs["seed"] for t in done) == [3, 4]
    assert sorted(line.split(": val_error")[0] for line in lines if "val_error" in line) == \
        ["bp trial 0 (config 0, seed 3)", "bp trial 1 (config 0, seed 4)"]  # nothing searched, nothing listed
    for t in done:  # each trial is the best configuration trained as `biotp train --set` would
        assert_same_metrics(t.user_attrs["run"], reference("bp", best, t.user_attrs["seed"], epochs=2, limit=None))
    # the command a run file records (fixed fields included) trains that run again
    run = done[0].user_attrs["run"]
    argv = shlex.split(open_run(run).attrs["command"])
    argv[argv.index("--out") + 1] = str(tmp_path / "again.h5")
    assert argv[:2] == ["biotp", "train"] and {a.split("=")[1] for a in argv if a.startswith("--set=")} == set(best)
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, len(os.sched_getaffinity(0)) // 2))  # as the trial's worker had
    try:
        assert main([*argv[1:], "--quiet"]) == 0
    finally:
        torch.set_num_threads(threads)
    assert_same_metrics(tmp_path / "again.h5", open_run(run).metrics)
    assert main(["sweep", search.source, "--out", str(search.out), "--report", "--best-to", str(path)]) == 2  # kept


def test_an_objective_the_circuit_does_not_record_is_a_named_error(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({**GOOD, "objective": {"metric": "train_loss"},
                                    "fixed": {"bp": {"schedule.eval_train": False}}}))
    with pytest.raises(ConfigError, match=r"bad.yaml: objective.metric: train_loss is not recorded: .* "
                                          r"schedule.eval_train: false \(rule 'bp'\)"):
        load_sweep(path)


def test_cli_reports_a_bad_sweep_in_one_line(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(_with("rules", ["dtp", "backprop"])))
    assert main(["sweep", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"biotp: error: {path}: rules: unknown rule 'backprop'")


def test_a_changed_sweep_file_does_not_continue_the_study(local_sweeps):
    sweep = local_sweeps["grid"]
    spec = yaml.safe_load(Path(sweep.source).read_text())
    spec["epochs"] = 2
    changed = Path(sweep.source).with_name("grid-2-epochs.yaml")
    changed.write_text(yaml.safe_dump({**spec, "name": "grid"}))
    with pytest.raises(ConfigError, match=r"other epochs; only search.trials may change"):
        run_sweep(load_sweep(changed, out=sweep.out), workers=1, log=lambda line: None)


def test_a_field_of_an_optional_block_the_circuit_leaves_out_can_be_fixed_and_searched(tmp_path):
    # circuits/mlp.yaml has no data.augment block; --set data.augment.noise=... creates one
    path = write_sweep(tmp_path, "noise", {"sampler": "grid", "space": {"data.augment.noise": {"categorical": [0.0, 0.2]}}},
                       rules=["dtp", "bp"], fixed={"bp": {"data.augment.flip": "horizontal"}})
    sweep = load_sweep(path)
    assert set(sweep.spaces["dtp"]) == set(sweep.spaces["bp"]) == {"data.augment.noise"}
    circuit = sweep.trial_circuit("bp", {"data.augment.noise": 0.2}, seed=0)
    assert (circuit.data.augment.noise, circuit.data.augment.flip) == (0.2, "horizontal")
    assert sweep.circuits["dtp"].data.augment is None  # what is not asked is not added
    bad = write_sweep(tmp_path, "bad", {"sampler": "grid", "space": {"data.augment.nois": {"categorical": [0.1]}}})
    with pytest.raises(ConfigError, match=r"search.space.data.augment.nois: .*has no field 'data.augment.nois'"):
        load_sweep(bad)

@pytest.mark.parametrize("name", ["mlp_digits", "dtp_mnist_7x240", "bartunov_mnist_fc"])
def test_shipped_sweeps_are_valid(name):
    sweep = load_sweep(Path(__file__).resolve().parents[1] / "analysis" / "sweeps" / f"{name}.yaml")
    assert sweep.spec.search.sampler in ("tpe", "random") and len(sweep.spec.seeds) >= 2
    for rule in sweep.spec.rules:
        assert "optimizer.lr" in sweep.spaces[rule]
        assert ("algorithm.eta_hat" in sweep.spaces[rule]) == (rule == "dtp")


def test_table4_fields_reach_the_trial_circuit():
    sweep = load_sweep(Path(__file__).resolve().parents[1] / "analysis" / "sweeps" / "bartunov_mnist_fc.yaml")
    assert set(sweep.spaces["fa"]) == {"optimizer.lr", "optimizer.betas.1", "optimizer.eps"}
    params = {"optimizer.lr": 2e-5, "optimizer.betas.1": 0.99, "feedback.optimizer.eps": 1e-6,
              "feedback.noise": 0.05, "algorithm.eta_hat": 0.15}
    circuit = sweep.trial_circuit("dtp", params, seed=3)
    assert circuit.optimizer.betas == (0.9, 0.99) and circuit.optimizer.lr == 2e-5
    assert circuit.feedback.optimizer.eps == 1e-6 and circuit.feedback.optimizer.betas == (0.9, 0.999)
    assert (circuit.feedback.noise, circuit.algorithm.eta_hat, circuit.seed, circuit.schedule.epochs) == (0.05, 0.15, 3, 100)
    assert circuit.schedule.feedback_training == "alternating" and circuit.algorithm.name == "dtp"


def test_every_shipped_sweep_file_loads():
    """Every file in analysis/sweeps/ parses, and each search field exists in its rules' circuits."""
    paths = sorted((Path(__file__).resolve().parents[1] / "analysis" / "sweeps").glob("*.yaml"))
    assert len(paths) >= 5
    for path in paths:
        sweep = load_sweep(path)
        assert sweep.spec.rules and all(rule in sweep.spaces for rule in sweep.spec.rules), path


def test_threads_per_worker_reach_every_trial(tmp_path, pool):
    """`--threads` sets each trial's torch threads (default: the cores shared by the workers)."""
    seen = []

    class Recording(concurrent.futures.Executor):
        def submit(self, fn, task, *args):
            seen.append(task.threads)
            return pool.submit(fn, task, *args)

    sweep = load_sweep(write_sweep(tmp_path, "t", {"sampler": "grid", "pruner": {"name": "none"},
                                                   "space": {"optimizer.lr": {"categorical": [0.01]}}}), out=tmp_path / "t")
    run_sweep(sweep, workers=2, executor=Recording(), threads=3, log=lambda line: None)
    assert seen == [3, 3]
    with pytest.raises(SystemExit):
        main(["sweep", str(tmp_path / "t.yaml"), "--threads", "0"])
