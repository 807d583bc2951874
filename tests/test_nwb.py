"""NWB export: simulate and protocol run files written by the real code on tiny circuits,
exported, read back with pynwb and compared with the run file read by h5py; nwbinspector
and pynwb's validator on the exports; the piecewise copy; errors on the wrong files."""

import datetime
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import yaml

from biotp import protocols as P
from biotp import data as D
from biotp.circuit import load_circuit
from biotp.cli import main
from biotp.dynamics.model import build_model
from biotp.errors import BiotpError, RunFileError
from biotp.nwb import export_nwb
from biotp.simulation import simulate

pynwb = pytest.importorskip("pynwb")
torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]
MLP = str(ROOT / "circuits" / "mlp.yaml")
# the tiny protocol: 6 trials of 2 examples, T = 10 + 10 + 5 ms; trials 0, 3, 5 recorded every 0.4 ms
PROTOCOL = {
    "name": "nwb_test", "description": "tiny protocol for the NWB export tests", "circuit": MLP,
    "stimuli": {"split": "train", "batch": 2, "inter_trial": "5 ms"},
    "phases": [{"name": "baseline", "trials": 2}, {"name": "lesion", "trials": 2}, {"name": "recovery", "trials": 2}],
    "interventions": [{"kind": "lesion", "projection": "feedback.layer3", "phases": ["lesion"]},
                      {"kind": "beta", "value": 0.3, "window": ["75 ms", "125 ms"]}],
    "record": {"populations": {"input": ["h"], "layer1": ["h", "t"], "layer3": ["h"]}, "every": "0.4 ms",
               "trials": [0, 3, 5], "residual": True},
    "evaluate": {"every": 2, "count": 30},
}
T, FORWARD, PRESENTATION = 0.025, 0.010, 0.020


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    """A simulate stream of 3 examples, exported by `biotp simulate --nwb`."""
    d = tmp_path_factory.mktemp("sim")
    code = main(["simulate", MLP, "--examples", "3", "--quiet", "--out", str(d / "s.h5"), "--nwb", str(d / "s.nwb"),
                 "--set", "dynamics.record_dt=0.4 ms", "--set", "dynamics.record={input: [h], layer1: [h, t, r], "
                 "layer3: [h]}"])
    assert code == 0
    return d / "s.h5", d / "s.nwb"


@pytest.fixture(scope="module")
def protocol_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("protocol")
    (d / "t.yaml").write_text(yaml.safe_dump(PROTOCOL))
    P.run_protocol(P.load_protocol(d / "t.yaml"), out=d / "p.h5", progress=False)
    return d / "p.h5", export_nwb(d / "p.h5", d / "p.nwb")


def read(path):
    io = pynwb.NWBHDF5IO(str(path), "r")
    return io, io.read()


def as_biotp(data, trials: int, batch: int) -> np.ndarray:
    """NWB rows (trial after trial) back to biotp's [time, example, neuron]."""
    d = np.asarray(data)
    d = d.reshape(trials, -1, batch, d.shape[-1])
    return d.swapaxes(0, 1).reshape(d.shape[1], trials * batch, d.shape[-1])


def equation_line(population: str, lhs: str) -> str:
    model = build_model(load_circuit(MLP), 64)
    return next(line.strip() for line in model.populations[population].equations.splitlines()
                if line.strip().startswith(lhs))


# ------------------------------------------------------------------ round trips


def test_a_simulate_file_round_trips(simulated):
    src, out = simulated
    io, nwb = read(out)
    with io, h5py.File(src) as f:
        n = int(f["summary/examples"][()])
        assert n == 3
        names = []
        for pop in f["traces"]:
            for var in f["traces"][pop]:
                ds = f["traces"][pop][var]
                ts = (nwb.stimulus if pop == "input" else nwb.acquisition)[f"{pop}_{var}"]
                names.append(ts.name)
                assert ts.data.dtype == ds.dtype
                np.testing.assert_array_equal(as_biotp(ts.data[:], n, 1), ds[()])
                times = ds.attrs["times"]
                expected = (np.arange(n)[:, None] * PRESENTATION + times[None, :]).ravel()
                np.testing.assert_allclose(ts.get_timestamps(), expected, rtol=0, atol=1e-12)
                # the run file marks every trace '1'; r is the norm of a rate, in 1/s
                assert ts.unit == ("1/s" if var == "r" else ds.attrs["unit"])
                assert f"Population {pop}, variable {var}" in ts.description
        assert sorted(names) == ["input_h", "layer1_h", "layer1_r", "layer1_t", "layer3_h"]
        assert equation_line("layer1", "dh/dt") in nwb.acquisition["layer1_h"].description
        assert equation_line("layer1", "tdot") in nwb.acquisition["layer1_t"].description

        trials = nwb.trials.to_dataframe()
        np.testing.assert_allclose(trials.start_time, np.arange(n) * PRESENTATION, atol=1e-12)
        np.testing.assert_allclose(trials.stop_time, (np.arange(n) + 1) * PRESENTATION, atol=1e-12)
        np.testing.assert_allclose(trials.target_onset_time, np.arange(n) * PRESENTATION + FORWARD, atol=1e-12)
        assert list(trials.presentation_index) == [0, 1, 2] and trials.recorded.all()
        for key in ("forward_steps", "target_steps", "forward_residual", "target_residual"):
            np.testing.assert_array_equal(np.stack(trials[key].to_numpy()), f[f"settling/{key}"][()])

        ev = nwb.processing["evaluation"]["evaluations"].to_dataframe()
        assert list(ev.test_error) == [f["summary/error_before"][()], f["summary/error_after"][()]]
        assert list(ev.test_loss) == [f["summary/loss_before"][()], f["summary/loss_after"][()]]
        summary = nwb.processing["evaluation"]["summary"].to_dataframe()
        assert {k: summary[k].iloc[0] for k in f["summary"]} == {k: f["summary"][k][()] for k in f["summary"]}

        attrs = dict(f.attrs)
        assert nwb.session_start_time == datetime.datetime.fromisoformat(attrs["created"])
        assert nwb.source_script == attrs["command"] and "--examples 3" in nwb.source_script
        assert attrs["circuit_yaml"] in nwb.notes and "biotp_version: " in nwb.notes
        assert ["biotp", attrs["biotp_version"]] in [list(row) for row in nwb.was_generated_by[:]]
        assert "Simulated" in nwb.subject.description and nwb.subject.species.endswith("NCBITaxon_32630")
        assert "weights" not in nwb.processing  # a simulate file keeps none


def test_a_protocol_file_round_trips(protocol_run):
    src, out = protocol_run
    recorded, batch = [0, 3, 5], 2
    io, nwb = read(out)
    with io, h5py.File(src) as f:
        g = f["points/p000"]
        for pop, variables in PROTOCOL["record"]["populations"].items():
            for var in variables:
                ds = g[f"traces/{pop}/{var}"]
                ts = (nwb.stimulus if pop == "input" else nwb.acquisition)[f"{pop}_{var}"]
                assert ts.data.shape == (len(recorded) * ds.shape[0], batch, ds.shape[2])
                np.testing.assert_array_equal(as_biotp(ts.data[:], len(recorded), batch), ds[()])
                expected = (np.array(recorded)[:, None] * T + ds.attrs["times"][None, :]).ravel()
                np.testing.assert_allclose(ts.get_timestamps(), expected, rtol=0, atol=1e-12)
                assert ts.unit == ds.attrs["unit"] == "1"
        for phase, shift in (("forward", 0.0), ("target", FORWARD)):  # residuals: the target phase starts late
            ds = g[f"residual/{phase}"]
            ts = nwb.processing["settling"][f"residual_{phase}"]
            np.testing.assert_array_equal(as_biotp(ts.data[:], len(recorded), batch), ds[()])
            expected = (np.array(recorded)[:, None] * T + shift + ds.attrs["times"][None, :]).ravel()
            np.testing.assert_allclose(ts.get_timestamps(), expected, rtol=0, atol=1e-12)
            assert ts.unit == ds.attrs["unit"]

        trials = nwb.trials.to_dataframe()
        k = np.arange(6)
        np.testing.assert_allclose(trials.start_time, k * T, atol=1e-12)
        np.testing.assert_allclose(trials.stop_time, (k + 1) * T, atol=1e-12)
        np.testing.assert_allclose(trials.presentation_stop_time, k * T + PRESENTATION, atol=1e-12)
        assert list(trials.presentation_index) == list(2 * k)
        assert list(trials.recorded) == [True, False, False, True, False, True]
        assert list(trials.phase) == ["baseline"] * 2 + ["lesion"] * 2 + ["recovery"] * 2
        assert list(trials.beta) == [0.5, 0.5, 0.5, 0.3, 0.3, 0.5]  # window [75, 125) ms: onsets 75 and 100 ms
        assert [("lesion" in s, "beta" in s) for s in trials.interventions] == \
            [(False, False)] * 2 + [(True, False), (True, True), (False, True), (False, False)]

        phases = nwb.intervals["phases"].to_dataframe()
        assert list(phases.phase) == ["baseline", "lesion", "recovery"]
        np.testing.assert_allclose(phases[["start_time", "stop_time"]].to_numpy(),
                                   [[0, 2 * T], [2 * T, 4 * T], [4 * T, 6 * T]], atol=1e-12)
        windows = nwb.intervals["interventions"].to_dataframe()
        assert list(windows.kind) == ["lesion", "beta"]
        np.testing.assert_allclose(windows[["start_time", "stop_time"]].to_numpy(),
                                   [[2 * T, 4 * T], [3 * T, 5 * T]], atol=1e-12)

        ev = nwb.processing["evaluation"]["evaluations"].to_dataframe()
        assert sorted(ev.columns) == sorted([*g["metrics"], "phase_name"])
        for name in g["metrics"]:
            np.testing.assert_array_equal(ev[name].to_numpy(), g[f"metrics/{name}"][()])
        assert list(ev.phase_name) == ["baseline", "baseline", "lesion", "recovery"]
        for l in (1, 2, 3):
            table = nwb.processing["weights"][f"forward.layer{l}"]
            np.testing.assert_array_equal(table["weights"].data[0], g[f"weights/W{l}"][()])
            assert table["time"].data[0] == pytest.approx(6 * T)
        assert nwb.protocol == f.attrs["protocol_yaml"]

    with h5py.File(out) as nf:  # written chunked and compressed
        data = nf["acquisition/layer1_h/data"]
        assert data.compression == "gzip" and data.chunks is not None


def train_split():
    """The training split of the circuit both fixtures run, loaded here as biotp.data does."""
    d = load_circuit(MLP).data
    return D.load(d.dataset, val_split=d.val_split, seed=load_circuit(MLP).seed, limit=d.limit,
                  synthetic=d.synthetic.model_dump()).train


def test_a_simulate_export_names_the_presented_examples(simulated):
    """example_index and label come from /stream, and are the dataset's: the input population's
    trace is the image at that index, the label that image's label."""
    src, out = simulated
    train = train_split()
    io, nwb = read(out)
    with io, h5py.File(src) as f:
        index, label = f["stream/index"][()], f["stream/label"][()]
        assert f["stream/index"].attrs["split"] == "train" and f["stream/index"].attrs["dataset"] == "digits"
        trials = nwb.trials.to_dataframe()
        np.testing.assert_array_equal(trials.example_index.to_numpy(), index)
        np.testing.assert_array_equal(trials.label.to_numpy(), label)
        np.testing.assert_array_equal(train.y[index].numpy(), label)
        shown = f["traces/input/h"][0]  # [example, neuron] at the forward phase's first sample
        np.testing.assert_allclose(shown, train.x[index].flatten(1).numpy(), rtol=0, atol=1e-6)
        assert list(index) != list(range(len(index)))  # shuffled: not the presentation order
        assert "example_index" in nwb.stimulus_notes


def test_a_protocol_export_names_each_trials_examples(protocol_run):
    src, out = protocol_run
    train = train_split()
    io, nwb = read(out)
    with io, h5py.File(src) as f:
        g = f["points/p000/stimuli"]
        index, label = g["index"][()], g["label"][()]
        assert index.shape == label.shape == (6, 2) and g["index"].attrs["split"] == "train"
        trials = nwb.trials.to_dataframe()
        np.testing.assert_array_equal(np.stack(trials.example_index.to_numpy()), index)
        np.testing.assert_array_equal(np.stack(trials.label.to_numpy()), label)
        np.testing.assert_array_equal(train.y[index].numpy(), label)
        shown = f["points/p000/traces/input/h"][0]  # recorded trials 0, 3, 5, two examples each
        np.testing.assert_allclose(shown, train.x[index[[0, 3, 5]].ravel()].flatten(1).numpy(), rtol=0, atol=1e-6)
        assert len(np.unique(index)) == index.size  # 12 distinct shuffled examples


@pytest.mark.parametrize("made, group", [("simulated", "stream"), ("protocol_run", "points/p000/stimuli")])
def test_older_run_files_without_the_presented_examples_still_export(made, group, request, tmp_path):
    old = tmp_path / "old.h5"
    old.write_bytes(request.getfixturevalue(made)[0].read_bytes())
    with h5py.File(old, "a") as f:
        del f[group]
    io, nwb = read(export_nwb(old, tmp_path / "old.nwb"))
    with io:
        columns = nwb.trials.colnames
        assert "presentation_index" in columns and "example_index" not in columns and "label" not in columns


def test_a_stream_given_as_tensors_is_indexed_by_position(tmp_path):
    x, y = torch.rand(2, 64), torch.tensor([7, 2])
    simulate(MLP, x=x, y=y, out=tmp_path / "s.h5")
    with h5py.File(tmp_path / "s.h5") as f:
        assert list(f["stream/index"][()]) == [0, 1] and list(f["stream/label"][()]) == [7, 2]
        assert f["stream/index"].attrs["split"] == "given"


def test_sweep_points_follow_each_other_on_the_session_time_axis(tmp_path):
    data = {"name": "sweep", "circuit": MLP, "stimuli": {"count": 2}, "evaluate": {"count": 10},
            "record": {"populations": {"layer3": ["h"]}, "every": "1 ms", "trials": [1]},
            "sweep": {"grid": {"stimuli.target_phase": ["5 ms", "10 ms"]}}}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(data))
    P.run_protocol(P.load_protocol(tmp_path / "s.yaml"), out=tmp_path / "s.h5", progress=False)
    io, nwb = read(export_nwb(tmp_path / "s.h5", tmp_path / "s.nwb"))
    with io, h5py.File(tmp_path / "s.h5") as f:
        durations = [0.015, 0.020]  # forward 10 ms + target 5 or 10 ms
        offset = 2 * durations[0]
        trials = nwb.trials.to_dataframe()
        np.testing.assert_allclose(trials.start_time, [0, 0.015, offset, offset + 0.020], atol=1e-12)
        assert list(trials.point) == [0, 0, 1, 1]
        for p, start in (("p000", 0.0), ("p001", offset)):
            ds = f[f"points/{p}/traces/layer3/h"]
            ts = nwb.acquisition[f"{p}_layer3_h"]
            np.testing.assert_array_equal(as_biotp(ts.data[:], 1, 1), ds[()])
            np.testing.assert_allclose(ts.get_timestamps(), start + durations[p == "p001"] + ds.attrs["times"],
                                       atol=1e-12)
            ev = nwb.processing["evaluation"][f"{p}_evaluations"]
            np.testing.assert_allclose(ev["time"].data[:], start + f[f"points/{p}/metrics/time"][()], atol=1e-12)


# ------------------------------------------------------------------ the field's tools


def findings(path) -> list:
    from nwbinspector import Importance, inspect_nwbfile

    serious = {Importance.ERROR, Importance.PYNWB_VALIDATION, Importance.CRITICAL, Importance.BEST_PRACTICE_VIOLATION}
    return [(m.importance.name, m.check_function_name, m.location, m.message)
            for m in inspect_nwbfile(nwbfile_path=str(path)) if m.importance in serious]


@pytest.mark.parametrize("made", ["simulated", "protocol_run"])
def test_exports_pass_nwbinspector_and_the_validator(made, request):
    pytest.importorskip("nwbinspector")
    out = request.getfixturevalue(made)[1]
    assert findings(out) == []
    assert list(pynwb.validate(path=str(out))) == []


def test_traces_are_copied_a_buffer_at_a_time(monkeypatch):
    """Buffers smaller than a trial, and spanning trials: the rows come out in NWB's order,
    and no read takes more than a buffer's worth of trials."""
    from biotp.nwb import chunks

    monkeypatch.setattr(chunks, "CHUNK_BYTES", 512)
    monkeypatch.setattr(chunks, "BUFFER_BYTES", 4096)

    class Recorded:
        def __init__(self, array):
            self.array, self.shape, self.dtype, self.reads = array, array.shape, array.dtype, []

        def __getitem__(self, key):
            out = self.array[key]
            self.reads.append(out.size)
            return out

    rng = np.random.default_rng(0)
    for samples, trials, batch, neurons in ((7, 30, 1, 16), (5, 40, 2, 8), (41, 12, 3, 10)):
        source = Recorded(rng.standard_normal((samples, trials * batch, neurons)).astype(np.float32))
        it = chunks.TrialMajor(source, batch)
        out = np.full(it.maxshape, np.nan, dtype=np.float32)
        for chunk in it:
            out[chunk.selection] = chunk.data
        assert out.shape[0] == trials * samples
        np.testing.assert_array_equal(as_biotp(out, trials, batch), source.array)
        assert max(source.reads) * 4 <= 4096 + 2 * samples * batch * neurons * 4  # a buffer and its edge trials
        assert len(source.reads) > 3


# ------------------------------------------------------------------ wrong files


@pytest.fixture(scope="module")
def train_file(tmp_path_factory):
    out = tmp_path_factory.mktemp("train") / "train.h5"
    assert main(["train", MLP, "--epochs", "1", "--quiet", "--set", "data.limit=100", "--out", str(out)]) == 0
    return out


def test_files_that_are_not_simulate_or_protocol_runs_are_refused(tmp_path, train_file, capsys):
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["x"] = np.arange(3)
    text = tmp_path / "notes.h5"
    text.write_text("not HDF5")
    cases = {train_file: "kind 'train' (written by `biotp train`)", foreign: "not a biotp run file",
             tmp_path / "missing.h5": "no such run file", text: "not a readable HDF5 run file"}
    expected = "expected a run file of `biotp simulate` (kind 'simulate') or `biotp run` (kind 'protocol')"
    for path, what in cases.items():
        with pytest.raises(BiotpError) as raised:
            export_nwb(path, tmp_path / "out.nwb")
        assert str(raised.value).startswith(f"{path}: ") and what in str(raised.value)
        assert main(["export", str(path), "--nwb", str(tmp_path / "out.nwb")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and str(path) in err and what in err and expected in err
        assert "Traceback" not in err
    with pytest.raises(RunFileError, match="kind 'train'.*expected a run file of `biotp simulate`"):
        export_nwb(train_file, tmp_path / "out.nwb")
    assert not (tmp_path / "out.nwb").exists()


def test_an_existing_output_needs_force(simulated, tmp_path, capsys):
    src, _ = simulated
    out = tmp_path / "o.nwb"
    out.write_text("old")
    assert main(["export", str(src), "--nwb", str(out)]) == 2
    assert "exists" in capsys.readouterr().err and out.read_text() == "old"
    assert main(["export", str(src), "--nwb", str(out), "--force"]) == 0
    io, nwb = read(out)
    with io:
        assert "layer1_h" in nwb.acquisition
    with pytest.raises(BiotpError, match="is the run file being exported"):
        export_nwb(src, src, force=True)


def test_nwb_option_needs_a_run_file_and_is_checked_before_running(tmp_path, capsys):
    assert main(["simulate", MLP, "--examples", "1", "--quiet", "--nwb", str(tmp_path / "s.nwb")]) == 2
    err = capsys.readouterr().err
    assert "give --out RUN.h5 too" in err and err.count("\n") == 1
    (tmp_path / "taken.nwb").write_text("")
    assert main(["simulate", MLP, "--examples", "1", "--quiet", "--out", str(tmp_path / "s.h5"),
                 "--nwb", str(tmp_path / "taken.nwb")]) == 2
    assert "exists" in capsys.readouterr().err and not (tmp_path / "s.h5").exists()  # refused before the run
