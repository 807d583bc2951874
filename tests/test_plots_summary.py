"""Figures a researcher would put in a paper: every shipped protocol's summary figure (from a
tiny run of it), error bars equal to the spread over seeds, phase lines at the configured
trials with the interventions shaded, settling against the discrete rule, every rule against
BP, the cost chart, and logs without carriage returns when output is not a terminal."""

import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

import biotp
from biotp import protocols as P
from biotp.compare import compare
from biotp.errors import ConfigError
from biotp.plots import figures
from biotp.plots.common import notes
from biotp.plots.phases import BOUNDARY, WINDOW
from biotp.plots.traces import SWITCH

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]
SHIPPED = {p.stem: p for p in sorted((ROOT / "protocols").glob("*.yaml"))}
PHASE_TRIALS = (2, 3, 3)  # boundaries at trials 2 and 5; evaluations every 3 trials miss both


def _tiny(name: str) -> P.Protocol:
    """The shipped protocol shrunk to seconds."""
    path = SHIPPED[name]
    p = P.load_protocol(path)
    if p.engine == "discrete":
        p = P.load_protocol(path, ["epochs=2", "circuit.data.limit=200"])
        return p.model_copy(update={"sweep": P.SweepSpec(grid={"circuit.algorithm.name": ["fa", "dtp"]})})
    if p.phases:
        sets = [f"phases.{i}.trials={n}" for i, n in enumerate(PHASE_TRIALS)] + ["evaluate.every=3"]
    elif name == "settle":
        sets = []
    else:
        sets = ["stimuli.count=3", "evaluate.every=1"]
    return P.load_protocol(path, sets + ["evaluate.count=50"])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """name -> run file of every shipped protocol, run tiny."""
    d = tmp_path_factory.mktemp("summary")
    out = {}
    for name in SHIPPED:
        out[name] = d / f"{name}.h5"
        P.run_protocol(_tiny(name), out=out[name], progress=False)
    return out


def _summary(path):
    figs = dict(figures(path))
    assert "summary" in figs, f"{path.name}: no summary figure among {sorted(figs)}"
    return figs["summary"], figs


def _labelled(ax) -> dict:
    return {line.get_label(): line for line in ax.get_lines() if not line.get_label().startswith("_")}


def _vertical_lines(ax, gid) -> list[float]:
    return sorted({float(line.get_xdata()[0]) for line in ax.get_lines() if line.get_gid() == gid})


def _spans(ax) -> list[tuple[float, float]]:
    """The shaded intervention windows as (start, stop) in data coordinates."""
    return [(p.get_x(), p.get_x() + p.get_width()) for p in ax.patches if p.get_gid() == WINDOW]


def _errorbars(ax):
    """(x, y, half-widths) of the panel's one errorbar series."""
    (container,) = ax.containers
    line, _caps, (bars,) = container.lines
    segments = bars.get_segments()
    half = np.array([(s[1, 1] - s[0, 1]) / 2 for s in segments])
    return np.asarray(line.get_xdata()), np.asarray(line.get_ydata()), half


def _point_labels(path) -> list[str]:
    with h5py.File(path) as f:
        return [f["points"][k].attrs["label"] for k in sorted(f["points"])]


def _context_ok(fig, *words):
    title = " ".join(fig._suptitle.get_text().split())  # wrapped to the figure's width
    for word in ("circuit mlp on digits", "seed", *words):
        assert word in title, f"{word!r} missing from the title {title!r}"


# ------------------------------------------------------------------ sweeps


@pytest.mark.parametrize("name, xlabel, xscale", [
    ("settle_time_sweep", "target-phase duration (ms)", "log"),
    ("noise_robustness", "target noise σ (rate units)", "linear"),
])
def test_a_sweep_draws_the_final_metric_against_the_swept_value(runs, name, xlabel, xscale):
    fig, figs = _summary(runs[name])
    protocol = P.load_protocol(SHIPPED[name])
    key = protocol.figure.x
    with h5py.File(runs[name]) as f:
        points = {json.loads(g.attrs["params"])[key]: g["metrics/test_error"][-1] for g in f["points"].values()}
        trials = int(f["points/p000/metrics/trial"][-1])
    ax = fig.axes[0]
    x, y, half = _errorbars(ax)
    expected_x = [biotp.plots.summary.swept_value(v, key)[0] for v in points]
    np.testing.assert_allclose(x, sorted(expected_x))
    by_x = dict(zip(expected_x, points.values()))
    np.testing.assert_allclose(y, [100 * by_x[v] for v in sorted(expected_x)])
    assert not half.any()  # one run per value
    assert ax.get_xlabel() == xlabel and ax.get_xscale() == xscale
    assert ax.get_ylabel() == f"test error (%), after {trials} trials"
    assert "one run per value" in ax.get_title()
    assert len(fig.axes) == 2  # and the learning curves: more than two evaluations each
    assert len(_labelled(fig.axes[1])) == len(points)
    loss_ax = figs["curves"].axes[0]  # one column (test_loss): the key names the points, not the column
    assert [t.get_text() for t in loss_ax.get_legend().get_texts()] == [g for g in _point_labels(runs[name])]
    assert loss_ax.get_ylabel() == "test loss (nats)"  # ... and the axis names the column
    _context_ok(fig, "dtp plasticity", f"protocol {name}")


def test_error_bars_are_the_spread_over_seeds(tmp_path):
    """Two seeds per swept value: the bar is the mean ± the sample s.d. (ddof 1) of the last
    evaluation, computed here from the run file."""
    p = P.load_protocol(SHIPPED["settle_time_sweep"], ["stimuli.count=3", "evaluate.count=60"])
    p = p.model_copy(update={"sweep": P.SweepSpec(grid={"stimuli.target_phase": ["1 ms", "4 ms"], "seed": [0, 1]}),
                             "figure": None})
    assert p.summary_figure().x == "stimuli.target_phase"  # the seed is not the x axis
    path = tmp_path / "seeds.h5"
    P.run_protocol(p, out=path, progress=False)
    finals: dict = {}
    with h5py.File(path) as f:
        for g in f["points"].values():
            ms = float(json.loads(g.attrs["params"])["stimuli.target_phase"].split()[0])
            finals.setdefault(ms, []).append(100 * g["metrics/test_error"][-1])
    assert all(len(v) == 2 for v in finals.values())
    fig, _ = _summary(path)
    x, y, half = _errorbars(fig.axes[0])
    np.testing.assert_allclose(x, [1.0, 4.0])
    np.testing.assert_allclose(y, [np.mean(finals[v]) for v in (1.0, 4.0)])
    np.testing.assert_allclose(half, [abs(finals[v][0] - finals[v][1]) / np.sqrt(2) for v in (1.0, 4.0)])
    assert half.any(), "two seeds gave identical errors: the test would not see a wrong spread"
    assert "mean ± 1 s.d. over 2 runs" in fig.axes[0].get_title()
    _context_ok(fig, "seeds 0, 1")


def test_a_sweep_over_names_places_them_in_order(tmp_path):
    """Values without an order (modes, rule names) stand at 0, 1, ... named on the axis."""
    from biotp.runs import ATTRS, write_run

    modes = ["nudged", "clamped", "nudged"]  # a repeated value: its two runs give the spread
    p = P.parse_protocol({"name": "modes", "circuit": "c.yaml",
                          "sweep": {"points": [{"circuit.dynamics.target.mode": m} for m in modes]}}, "m.yaml")
    assert p.summary_figure().kind == "sweep"
    finals = [0.30, 0.10, 0.50]
    points = {f"p{i:03d}": {ATTRS: {"params": json.dumps({"circuit.dynamics.target.mode": m}), "label": m},
                            "metrics": {"trial": np.array([0.0, 5.0]), "test_error": np.array([0.9, e])}}
              for i, (m, e) in enumerate(zip(modes, finals))}
    path = write_run(tmp_path / "modes.h5", {"kind": "protocol", "protocol_yaml": p.to_yaml(), "protocol": "modes"},
                     {"points": points})
    fig, _ = _summary(path)
    ax = fig.axes[0]
    x, y, half = _errorbars(ax)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["nudged", "clamped"]
    np.testing.assert_allclose(x, [0, 1])
    np.testing.assert_allclose(y, [40.0, 10.0])
    np.testing.assert_allclose(half, [100 * np.std([0.30, 0.50], ddof=1), 0.0])


# ------------------------------------------------------------------ phases


@pytest.mark.parametrize("name, label", [("feedback_lesion", "lesion: feedback.layer3"),
                                         ("plasticity_block", "block plasticity: forward.layer1, forward.layer2")])
def test_a_phased_protocol_marks_its_phases_and_shades_its_intervention(runs, name, label):
    fig, figs = _summary(runs[name])
    error_ax, loss_ax, dw_ax = fig.axes[:3]
    boundaries = list(np.cumsum(PHASE_TRIALS)[:-1].astype(float))  # [2, 5], between evaluations 0, 3, 6, 8
    with h5py.File(runs[name]) as f:
        m = {k: v[()] for k, v in f["points/p000/metrics"].items()}
    assert list(m["trial"]) == [0, 3, 6, 8]
    for ax in (error_ax, loss_ax, dw_ax):
        assert _vertical_lines(ax, BOUNDARY) == boundaries
        assert _spans(ax) == [(2.0, 5.0)]  # the middle phase, where the intervention acts
        legend = [t.get_text() for t in ax.get_legend().get_texts()]
        assert label in legend and BOUNDARY in legend
    assert [t.get_text() for t in error_ax.texts] == ["baseline", name.split("_")[1] if name == "feedback_lesion"
                                                      else "blocked", "recovery"]
    assert error_ax.get_ylabel() == "test error (%)" and loss_ax.get_ylabel() == "test loss (nats)"
    assert dw_ax.get_xlabel() == "trial" and dw_ax.get_ylabel() == "‖ΔW_l‖ per 3 trials"
    np.testing.assert_allclose(_labelled(error_ax)["test error"].get_ydata(), 100 * m["test_error"])
    for l in (1, 2, 3):  # the change since the previous evaluation spans its window
        line = _labelled(dw_ax)[f"layer {l}"]
        np.testing.assert_allclose(line.get_ydata(), np.r_[m[f"dW_layer{l}"][1], m[f"dW_layer{l}"][1:]])
        assert line.get_drawstyle() == "steps-pre"
    # ‖ΔW_l‖ has its own figure, not -angles, with the same phase marks
    assert "angles" not in figs and "dW" in figs
    for ax in figs["dW"].axes[:3]:
        if ax.get_visible() and ax.get_label() != "<colorbar>":
            assert _vertical_lines(ax, BOUNDARY) == boundaries and _spans(ax) == [(2.0, 5.0)]
    _context_ok(fig, f"protocol {name}")


# ---------------------------------------------------------------- settling


def test_settle_draws_traces_with_the_switch_and_the_residual_on_a_log_scale(runs):
    fig, figs = _summary(runs["settle"])
    forward_ms = 10.0  # circuits/mlp.yaml's forward phase
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in panels] == ["layer1, example 0", "layer2, example 0", "layer3, example 0",
                                                 "residual (geometric mean over examples)"]
    for ax in panels:
        assert _vertical_lines(ax, SWITCH) == [forward_ms]
        assert ax.get_xlabel() == "time in the presentation (ms)"
    residual_ax = panels[-1]
    assert residual_ax.get_yscale() == "log" and residual_ax.get_ylabel() == "‖dy_l/dt‖ (1/s)"
    with h5py.File(runs["settle"]) as f:
        h1 = f["points/p000/traces/layer1/h"][()]
        target = f["points/p000/residual/target"][()]
    traces = [line for line in panels[0].get_lines() if line.get_gid() != SWITCH]
    assert len(traces) == 8  # h and t of 4 neurons
    np.testing.assert_allclose(traces[0].get_ydata(), h1[:, 0, 0])
    layer2 = _labelled(residual_ax)["layer 2"].get_ydata()
    np.testing.assert_allclose(layer2[-len(target):], np.exp(np.log(target[:, :, 1]).mean(1)))
    assert any("layer 3: target held" in n for n in notes(residual_ax))  # the output target does not relax
    # plasticity off: flat curves and ‖ΔW‖ = 0 are not drawn by default
    assert "curves" not in figs and "dW" not in figs
    _context_ok(fig, "plasticity off")


# -------------------------------------------------- settling against discrete


def _check_reference(fig, path, group, x_name):
    error_ax, angle_ax = fig.axes[:2]
    with h5py.File(path) as f:
        m = {k: v[()] for k, v in f[group]["metrics"].items()}
    lines = _labelled(error_ax)
    np.testing.assert_allclose(lines["settling (continuous)"].get_ydata(), 100 * m["test_error"])
    np.testing.assert_allclose(lines["discrete dtp"].get_ydata(), 100 * m["reference_test_error"])
    angles = _labelled(angle_ax)
    assert set(angles) == {"layer 1", "layer 2", "layer 3"}
    np.testing.assert_allclose(angles["layer 2"].get_ydata(), m["angle_layer2"])
    assert error_ax.get_xlabel() == x_name and angle_ax.get_ylabel() == "angle between updates (°)"


def test_settling_vs_discrete_protocol(runs):
    fig, _ = _summary(runs["compare_settling_vs_discrete"])
    _check_reference(fig, runs["compare_settling_vs_discrete"], "points/p000", "trial")
    _context_ok(fig, "dtp plasticity")


def test_settling_vs_discrete_training_run(tmp_path):
    """`biotp simulate --epochs N --reference`'s file: both learning curves and the angle per
    layer between the two updates, over epochs."""
    from biotp.continuous import train_continuous

    circuit = biotp.load_circuit(ROOT / "circuits/mlp.yaml", ["data.limit=120", "data.batch_size=40",
                                                               "dynamics.target={mode: gradient_step, beta: 0.5}"])
    train_continuous(circuit, epochs=2, out=tmp_path / "ref.h5", reference=True, progress=False)
    figs = dict(figures(tmp_path / "ref.h5"))
    _check_reference(figs["reference"], tmp_path / "ref.h5", "/", "epoch")
    _context_ok(figs["reference"], "dtp plasticity")


# ---------------------------------------------------- every rule against BP


def test_alignment_protocol_draws_every_rule_against_bp(runs):
    fig, _ = _summary(runs["alignment_vs_bp"])
    error_ax, *angle_axes = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in angle_axes] == ["layer 1", "layer 2", "layer 3"]
    with h5py.File(runs["alignment_vs_bp"]) as f:
        m = {json.loads(g.attrs["params"])["circuit.algorithm.name"]: {k: v[()] for k, v in g["metrics"].items()}
             for g in f["points"].values()}
    np.testing.assert_allclose(_labelled(error_ax)["dtp"].get_ydata(), 100 * m["dtp"]["test_error"])
    for l, ax in enumerate(angle_axes, start=1):
        lines = _labelled(ax)
        assert {"fa", "dtp", "90°: orthogonal to BP"} <= set(lines)
        np.testing.assert_allclose(lines["fa"].get_ydata(), m["fa"][f"angle_layer{l}"])
        assert ax.get_ylabel() == "angle to BP's update (°)"
    assert notes(angle_axes[-1]) == ["output layer: every rule uses the loss gradient here, so 0°"]
    assert not notes(angle_axes[0])
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == ["fa", "dtp", "90°: orthogonal to BP"]  # one legend, outside the panels
    _context_ok(fig, "fa, dtp", "protocol alignment_vs_bp")


def test_compare_file_gives_rules_against_bp_and_the_cost_chart(tmp_path):
    circuit = biotp.load_circuit(ROOT / "circuits/mlp.yaml", ["data.limit=200", "data.batch_size=32"])
    compare(circuit, "bp,fa,dtp", epochs=2, out=tmp_path / "cmp.h5", progress=False)
    figs = dict(figures(tmp_path / "cmp.h5"))
    with h5py.File(tmp_path / "cmp.h5") as f:
        seconds = {a: np.median(f[f"runs/{a}/metrics/seconds"][()]) for a in ("bp", "fa", "dtp")}
    (ax,) = figs["cost"].axes
    heights = [bar.get_height() for bar in ax.patches]
    np.testing.assert_allclose(heights, [seconds[a] / seconds["bp"] for a in ("bp", "fa", "dtp")])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["bp", "fa", "dtp"]
    assert ax.get_ylabel() == "seconds per epoch ÷ BP's (median epoch)"
    page = figs["vs_bp"]
    layer3 = [a for a in page.axes if a.get_title() == "layer 3"][0]
    assert notes(layer3) == ["output layer: every rule uses the loss gradient here, so 0°"]
    bp = _labelled(layer3)["bp"]
    assert bp.get_linewidth() > _labelled(layer3)["dtp"].get_linewidth() and bp.get_zorder() < 2  # underneath
    assert _labelled(layer3)["dtp"].get_marker() not in ("None", "", None)
    _context_ok(page, "bp, fa, dtp")
    _context_ok(figs["filters-dtp"], "bp, fa, dtp")
    assert "64 of 64 units" in figs["filters-dtp"].axes[0].get_title()
    assert "after epoch 2" in figs["filters-dtp"].axes[0].get_title()


# ---------------------------------------------------------------- schema


@pytest.mark.parametrize("figure, message", [
    ({"kind": "phases"}, "figure.kind: phases needs `phases` in the protocol"),
    ({"kind": "sweep", "x": "stimuli.count"}, "figure.x: 'stimuli.count' is not a sweep key; expected one of "
                                              "stimuli.target_phase"),
    ({"kind": "sweep", "metric": "angle"}, "figure.metric: String should match pattern"),
    ({"kind": "histogram"}, "figure.kind: Input should be 'sweep', 'phases', 'settling', 'reference' or 'rules'"),
])
def test_a_figure_the_protocol_cannot_give_is_an_error(figure, message):
    data = {"name": "t", "circuit": "c.yaml", "sweep": {"grid": {"stimuli.target_phase": ["1 ms", "2 ms"]}},
            "figure": figure}
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("`", "`")):
        P.parse_protocol(data, "t.yaml")


# ---------------------------------------------------------------- logs


def _logged(tmp_path, *args) -> list[str]:
    """The lines `biotp ARGS` writes with stdout and stderr redirected to a file."""
    log = tmp_path / "out.log"
    with open(log, "wb") as out:
        subprocess.run([sys.executable, "-m", "biotp.cli", *args], stdout=out, stderr=subprocess.STDOUT, check=True,
                       cwd=tmp_path)
    text = log.read_bytes()
    assert b"\r" not in text and b"\x1b[" not in text  # no carriage return, no cursor movement
    return text.decode().splitlines()


def test_logs_have_no_carriage_returns(tmp_path):
    """Output to a file: one plain line per epoch, or per protocol point."""
    lines = _logged(tmp_path, "train", str(ROOT / "circuits/mlp.yaml"), "--epochs", "2", "--set", "data.limit=200",
                    "--out", str(tmp_path / "t.h5"))
    epochs = [line for line in lines if line.startswith("mlp [dtp]:")]
    assert [line.split()[2] for line in epochs] == ["1/2", "2/2"]
    lines = _logged(tmp_path, "run", str(SHIPPED["noise_robustness"]), "--set", "stimuli.count=2",
                    "--set", "evaluate.count=20", "--out", str(tmp_path / "n.h5"))
    assert [line.split(":")[0] for line in lines if line.startswith("[")] == \
        [f"[noise_robustness] point {i}/4" for i in range(1, 5)]
