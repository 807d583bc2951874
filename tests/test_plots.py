"""`biotp plot`: every file kind gives its figures, the figures show the file's series
(line data compared with the arrays in the file), the residual is on a log scale, and files
with nothing to plot give clear errors."""

import importlib.util
import json
import sys
import types

import h5py
import numpy as np
import pytest

import biotp
from biotp.cli import main
from biotp.compare import compare
from biotp.errors import BiotpError
from biotp.plots import angles, figures, jml, learning_curves, plot, settling, traces
from biotp.plots.common import metrics
from biotp.plots.curves import curves_over_seeds, over_seeds
from biotp.runs import Leaf, write_run

QUICK = ["data.limit=200", "data.batch_size=32"]
# filter pictures come with the default figures when biotp.plots.filters is there
HAS_FILTERS = importlib.util.find_spec("biotp.plots.filters") is not None


def _png(path):
    data = path.read_bytes()
    return len(data) > 1000 and data[:8] == b"\x89PNG\r\n\x1a\n"


def _lines(ax):
    return {line.get_label(): line for line in ax.get_lines() if not line.get_label().startswith("_")}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("plots")
    circuit = biotp.load_circuit("circuits/mlp.yaml", QUICK)
    biotp.train(circuit, epochs=2, out=d / "train.h5", progress=False, track_angles=True)
    biotp.simulate(circuit, examples=3, out=d / "sim.h5")
    compare(circuit, "bp,dtp", epochs=2, out=d / "cmp.h5", progress=False)
    return d


def _protocol_file(path, tau=(2e-3, 5e-3)):
    """Two sweep points laid out as `biotp run` writes them; the residual decays geometrically,
    r_l(t) = r0 exp(-t / tau_l), with a different r0 per example."""
    times = np.arange(0, 10e-3 + 1e-9, 0.5e-3)
    points = {}
    for p, beta in enumerate((0.1, 0.5)):
        r0 = np.array([1.0, 3.0])[None, :, None]  # two examples
        res = r0 * np.exp(-times[:, None, None] / np.asarray(tau)[None, None, :])  # [time, example, layer]
        trials = np.arange(0, 40, 10, dtype=float)
        points[f"p{p:03d}"] = {
            "metrics": {"trial": trials, "time": trials * 0.02, "phase": np.array([0, 0, 1, 1.0]),
                        "test_error": 0.9 - 0.1 * p - trials / 100, "test_loss": 2.0 - trials / 50,
                        "reference_test_error": 0.85 - trials / 100,
                        "angle_layer1": 30 + trials, "angle_layer2": 10 + trials,
                        "distance_layer1": trials / 10, "distance_layer2": trials / 20},
            "traces": {"layer1": {"h": Leaf(np.random.default_rng(p).normal(size=(21, 4, 6)),
                                            {"times": times, "trials": np.array([0, 10, 20, 30])})}},
            "residual": {"target": Leaf(res, {"times": times, "layers": np.array([1, 2])})},
        }
    write_run(path, {"kind": "protocol", "seed": 0}, {"points": points})
    with h5py.File(path, "a") as f:  # group attributes, as the protocol runner sets them
        for p, beta in enumerate((0.1, 0.5)):
            f[f"points/p{p:03d}"].attrs["params"] = json.dumps({"dynamics.target.beta": beta})
            f[f"points/p{p:03d}"].attrs["label"] = f"beta={beta}"
    return path


def test_train_file(files):
    path = files / "train.h5"
    written = plot(path, out=files / "figs")
    assert sorted(p.name for p in written) == ["train-angles.png", "train-curves.png"] + ["train-filters.png"] * HAS_FILTERS
    assert all(_png(p) for p in written)
    with h5py.File(path) as f:
        m = {k: f["metrics"][k][()] for k in f["metrics"]}
        curves = learning_curves(f)
        loss_ax, error_ax = curves.axes[:2]
        assert set(_lines(loss_ax)) == {"train_loss"}
        errors = _lines(error_ax)
        assert set(errors) == {"train_error", "val_error", "test_error"}
        np.testing.assert_allclose(errors["test_error"].get_ydata(), 100 * m["test_error"])
        np.testing.assert_allclose(errors["test_error"].get_xdata(), m["epoch"])
        fig = angles(f)
        assert [ax.get_title() for ax in fig.axes] == ["layer 1", "layer 2", "layer 3"]
        for l, ax in enumerate(fig.axes, start=1):
            lines = _lines(ax)
            assert "90°: orthogonal to BP" in lines  # the reference line says what it is
            np.testing.assert_allclose(lines[f"angle_layer{l}"].get_ydata(), m[f"angle_layer{l}"])


def test_jml_on_a_log_scale(tmp_path):
    epochs = np.arange(1.0, 4.0)
    cols = {"epoch": epochs, "train_loss": 1 / epochs, "test_error": 0.5 / epochs}
    for kind in ("ijml", "tjml"):
        for l in (1, 2):
            cols[f"{kind}_layer{l}"] = 10.0 ** (-epochs - l)
    path = write_run(tmp_path / "jml.h5", {"kind": "train"}, {"metrics": cols})
    assert sorted(p.name for p in plot(path)) == ["jml-curves.png", "jml-jml.png"]
    with h5py.File(path) as f:
        fig = jml(f)
    assert [ax.get_title() for ax in fig.axes] == ["IJML", "TJML"]
    for ax, kind in zip(fig.axes, ("ijml", "tjml")):
        assert ax.get_yscale() == "log"
        lines = _lines(ax)
        assert set(lines) == {"layer 1", "layer 2"}
        np.testing.assert_allclose(lines["layer 2"].get_ydata(), cols[f"{kind}_layer2"])


def test_curves_over_seeds_draw_each_rules_mean_and_spread(tmp_path):
    """Two seeds of dtp (the second run one epoch shorter) and one of bp that does not record
    its training set: the mean and sample s.d. over the epochs both seeds have, worked by hand."""
    nan = float("nan")
    columns = {"dtp": [{"epoch": [1.0, 2.0, 3.0], "train_loss": [2.0, 1.0, 0.5], "train_error": [0.4, 0.2, 0.1],
                        "test_error": [0.5, 0.3, 0.2]},
                       {"epoch": [1.0, 2.0], "train_loss": [1.0, 0.6], "train_error": [0.2, 0.1], "test_error": [0.3, 0.1]}],
               "bp": [{"epoch": [1.0, 2.0, 3.0], "train_loss": [nan] * 3, "train_error": [nan] * 3,
                       "test_error": [0.25, 0.15, 0.1]}]}
    paths = {rule: [write_run(tmp_path / f"{rule}{i}.h5", {"kind": "train"}, {"metrics": {k: np.array(v) for k, v in m.items()}})
                    for i, m in enumerate(runs)] for rule, runs in columns.items()}
    files = {rule: [h5py.File(p) for p in ps] for rule, ps in paths.items()}
    try:
        x, mean, sd = over_seeds([metrics(f) for f in files["dtp"]], "test_error")
        np.testing.assert_allclose(x, [1, 2])
        np.testing.assert_allclose(mean, [0.4, 0.2])
        np.testing.assert_allclose(sd, [0.02 ** 0.5, 0.02 ** 0.5])
        x, mean, sd = over_seeds([metrics(f) for f in files["bp"]], "test_error")
        np.testing.assert_allclose(mean, [0.25, 0.15, 0.1])
        np.testing.assert_allclose(sd, 0)
        fig = curves_over_seeds(files)
    finally:
        for fs in files.values():
            for f in fs:
                f.close()
    loss, error = fig.axes[:2]
    assert [l.get_linestyle() for l in loss.get_lines()] == ["--"]  # dtp's only: bp recorded no training loss
    np.testing.assert_allclose(loss.get_lines()[0].get_ydata(), [1.5, 0.8])
    lines = error.get_lines()
    assert [(l.get_color(), l.get_linestyle()) for l in lines] == [("C0", "--"), ("C0", "-"), ("C1", "-")]
    np.testing.assert_allclose(lines[0].get_ydata(), [30.0, 15.0])
    np.testing.assert_allclose(lines[2].get_ydata(), [25.0, 15.0, 10.0])
    band = error.collections[1].get_paths()[0].vertices[:, 1]  # dtp's test band: mean ± s.d., in %
    assert band.max() == pytest.approx(100 * (0.4 + 0.02 ** 0.5)) and band.min() == pytest.approx(100 * (0.2 - 0.02 ** 0.5))
    legend = [t.get_text() for t in error.get_legend().get_texts()]
    assert legend == ["dtp (2 seeds)", "bp (1 seed)", "train_error", "test_error"] and loss.get_legend() is None
    assert (loss.get_ylabel(), error.get_ylabel()) == ("train loss (a.u.)", "error (%)")
    with h5py.File(paths["bp"][0]) as f:  # test error only: one panel, the column on its axis
        fig = curves_over_seeds({"bp": [f]})
    assert [ax.get_ylabel() for ax in fig.axes] == ["test error (%)"]

def test_simulate_file(files):
    path = files / "sim.h5"
    written = plot(path, out=files / "figs")
    assert sorted(p.name for p in written) == ["sim-settling.png", "sim-traces.png"]
    assert all(_png(p) for p in written)
    with h5py.File(path) as f:
        recorded = [(pop, var) for pop in f["traces"] for var in f["traces"][pop]]
        fig = traces(f, example=1, neurons=4)
        assert len(fig.axes) == 2 * len(recorded) + len(recorded)  # heatmap, lines, colour bar
        heat, lines = fig.axes[0], fig.axes[1]
        data = f["traces/layer1/h"][()]
        image = heat.get_images()[0].get_array()
        np.testing.assert_allclose(image, data[:, 1, :].T)  # neuron x time of example 1
        shown = _lines(lines)
        assert set(shown) == {"neuron 0", "neuron 21", "neuron 42", "neuron 63", "forward → target phase"}
        switch = shown.pop("forward → target phase")  # where the target phase starts, in ms
        assert set(switch.get_xdata()) == {1e3 * biotp.load_circuit("circuits/mlp.yaml").dynamics.forward_phase}
        np.testing.assert_allclose(shown["neuron 21"].get_ydata(), data[:, 1, 21])
        np.testing.assert_allclose(shown["neuron 21"].get_xdata(), 1e3 * f["traces/layer1/h"].attrs["times"])
        fig = settling(f)
        assert fig.axes[0].get_yscale() == "log"
        res = f["settling/forward_residual"][()]
        np.testing.assert_allclose(_lines(fig.axes[0])["forward layer 1"].get_ydata(), res[:, 0])


def test_compare_file_overlays_rules(files):
    path = files / "cmp.h5"
    written = plot(path, out=files / "figs")
    assert sorted(p.name for p in written) == ["cmp-angles.png", "cmp-cost.png", "cmp-curves.png"] + \
        ["cmp-filters-bp.png", "cmp-filters-dtp.png"] * HAS_FILTERS + ["cmp-vs_bp.png"]
    with h5py.File(path) as f:
        figs = dict(figures(path))
        errors = _lines(figs["curves"].axes[1])
        for rule in ("bp", "dtp"):
            np.testing.assert_allclose(errors[f"{rule} test_error"].get_ydata(), 100 * f[f"runs/{rule}/metrics/test_error"][()])
            assert errors[f"{rule} train_error"].get_linestyle() == "--"  # train dashed, test solid
        assert errors["bp test_error"].get_color() != errors["dtp test_error"].get_color()
        for l, ax in enumerate(figs["angles"].axes, start=1):
            lines = _lines(ax)
            assert set(lines) == {"bp", "dtp", "90°: orthogonal to BP"}
            np.testing.assert_allclose(lines["dtp"].get_ydata(), f[f"runs/dtp/metrics/angle_layer{l}"][()])


def test_protocol_file(tmp_path):
    path = _protocol_file(tmp_path / "proto.h5", tau=(2e-3, 5e-3))
    written = plot(path, out=tmp_path / "figs")
    assert sorted(p.name for p in written) == ["proto-angles.png", "proto-curves.png", "proto-residual.png",
                                                "proto-traces-p000.png", "proto-traces-p001.png"]
    assert all(_png(p) for p in written)
    figs = dict(figures(path))
    errors = _lines(figs["curves"].axes[1])
    assert {"beta=0.1 test_error", "beta=0.5 test_error", "beta=0.5 reference_test_error"} <= set(errors)
    np.testing.assert_allclose(errors["beta=0.5 test_error"].get_xdata(), [0, 10, 20, 30])
    angle_axes = figs["angles"].axes
    # with a discrete reference, the angle is to the reference's update
    assert [ax.get_ylabel() for ax in angle_axes] == ["angle to the discrete update (°)"] * 2 + \
        ["relative distance ‖ΔW − ΔW_ref‖/‖ΔW_ref‖"] * 2
    (ax,) = figs["residual"].axes
    assert ax.get_yscale() == "log" and ax.get_title() == "target phase"
    lines = _lines(ax)
    assert len(lines) == 4  # two layers, two points
    for l, tau in ((1, 2e-3), (2, 5e-3)):
        line = lines[f"beta=0.1 layer {l}"]
        t = line.get_xdata() / 1e3
        # the geometric mean over examples of r0 e^{-t/tau}: sqrt(1 * 3) e^{-t/tau}, a straight line in log y
        np.testing.assert_allclose(line.get_ydata(), np.sqrt(3.0) * np.exp(-t / tau), rtol=1e-12)
        slope = np.polyfit(t, np.log(line.get_ydata()), 1)[0]
        assert slope == pytest.approx(-1 / tau, rel=1e-9)


def test_asked_for_kinds_only(files, tmp_path):
    written = plot(files / "train.h5", what="angles", out=tmp_path)
    assert [p.name for p in written] == ["train-angles.png"]
    with pytest.raises(BiotpError, match=r"sim.h5: --what angles: the file \(kind 'simulate'\) has nothing"):
        plot(files / "sim.h5", what="angles", out=tmp_path)
    with pytest.raises(BiotpError, match="--what wiggles: unknown figure kind; expected some of summary, curves"):
        plot(files / "train.h5", what="wiggles", out=tmp_path)
    with pytest.raises(BiotpError, match="--format gif"):
        plot(files / "train.h5", fmt="gif")


def test_nothing_to_plot(tmp_path):
    path = write_run(tmp_path / "empty.h5", {"kind": "train"}, {"summary": {"x": np.asarray(1.0)}})
    with pytest.raises(BiotpError, match=r"empty.h5: nothing to plot \(kind 'train'\)"):
        plot(path)
    with pytest.raises(BiotpError, match="no such file"):
        plot(tmp_path / "missing.h5")
    (tmp_path / "junk.h5").write_text("not hdf5")
    with pytest.raises(BiotpError, match="not a readable HDF5 file"):
        plot(tmp_path / "junk.h5")


def test_filters_use_the_first_layer_of_the_checkpoint(files, tmp_path, monkeypatch):
    """`--what filters` hands filter_figure the checkpoint's first-layer weights and the image shape."""
    from matplotlib.figure import Figure

    calls = []

    def filter_figure(weights, image_shape, title="", n=None):
        calls.append((np.asarray(weights), tuple(image_shape)))
        fig = Figure()
        fig.subplots().imshow(np.asarray(weights)[0].reshape(image_shape[-2:]))
        return fig

    monkeypatch.setitem(sys.modules, "biotp.plots.filters", types.SimpleNamespace(filter_figure=filter_figure))
    written = plot(files / "train.h5", what="filters", out=tmp_path)
    assert [p.name for p in written] == ["train-filters.png"] and _png(written[0])
    (weights, shape), = calls
    with h5py.File(files / "train.h5") as f:
        np.testing.assert_array_equal(weights, f["checkpoint/model/net.layers.0.weight"][()])
    assert shape == (1, 8, 8)
    calls.clear()
    assert sorted(p.name for p in plot(files / "cmp.h5", what="filters", out=tmp_path)) == ["cmp-filters-bp.png", "cmp-filters-dtp.png"]
    with pytest.raises(BiotpError, match="--what filters"):
        plot(files / "sim.h5", what="filters", out=tmp_path)


def test_cli(files, tmp_path, capsys):
    assert main(["plot", str(files / "train.h5"), "--what", "curves", "--out", str(tmp_path), "--format", "pdf"]) == 0
    out = tmp_path / "train-curves.pdf"
    assert str(out) in capsys.readouterr().out
    assert out.read_bytes()[:4] == b"%PDF"
    assert main(["plot", str(tmp_path / "nope.h5")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_overlay_runs_script(files, tmp_path):
    """analysis/overlay_runs.py: several run files in one figure, labelled as asked."""
    spec = importlib.util.spec_from_file_location("overlay_runs", "analysis/overlay_runs.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    other = tmp_path / "other.h5"
    biotp.train(biotp.load_circuit("circuits/mlp.yaml", QUICK).with_algorithm("fa"), epochs=2, out=other, progress=False)
    written = script.overlay([files / "train.h5", other], tmp_path / "both", labels=["dtp", "fa"])
    assert [p.name for p in written] == ["both-curves.png", "both-angles.png"] and all(_png(p) for p in written)
    with h5py.File(files / "train.h5") as a, h5py.File(other) as b:
        fig = learning_curves({"dtp": a, "fa": b})
        lines = _lines(fig.axes[1])
        np.testing.assert_allclose(lines["fa test_error"].get_ydata(), 100 * b["metrics/test_error"][()])
        np.testing.assert_allclose(lines["dtp test_error"].get_ydata(), 100 * a["metrics/test_error"][()])
        legend = [t.get_text() for t in fig.axes[1].get_legend().get_texts()]
        assert legend == ["dtp", "fa", "train_error", "val_error", "test_error"]  # one key per rule and column
    with pytest.raises(BiotpError, match="expected 2 distinct labels"):
        script.overlay([files / "train.h5", other], tmp_path / "x", labels=["a"])
    assert script.main([str(files / "sim.h5"), "--out", str(tmp_path / "y")]) == 2
