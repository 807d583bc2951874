"""Jacobian matching losses (seed 003 defs. 1-3) stored in run files while training: the stored
values against `network_jmls` recomputed on the checkpointed network, TJML = 0 for tjml's
analytical feedback, nan where a rule has no feedback map, and resume keeps tracking."""

import math

import numpy as np
import pytest
import torch

from biotp.algorithms import build
from biotp.circuit import parse_circuit
from biotp.cli import main
from biotp.layers import FeedbackOptions
from biotp.metrics import JML_EXAMPLES, network_jmls, rule_jmls
from biotp.runs import open_run
from biotp.training import Session, train

LAYERS = [
    {"type": "conv", "channels": 4, "kernel": 3, "pool": 2, "activation": "leaky_relu"},
    {"type": "dense", "size": 16, "activation": "leaky_relu"},
    {"type": "dense", "size": 10, "activation": "linear"},
]


def circuit_for(algorithm, **extra):
    return parse_circuit({
        "network": {"layers": LAYERS}, "algorithm": {"name": algorithm, **extra},
        "optimizer": {"name": "adam", "lr": 0.003}, "init": {"scheme": "glorot"},
        "data": {"dataset": "digits", "batch_size": 50, "limit": 200}, "seed": 3,
    })


def columns(depth=3):
    return [f"{k}jml_layer{l}" for l in range(2, depth + 1) for k in "ipt"]


def recomputed(run, feedback, options=None):
    """network_jmls on a fresh session loaded from the run file's checkpoint, on the same batch."""
    session = Session(run.circuit, device="cpu")
    session.load_state(run.checkpoint)
    x, _ = next(session.batches(0))
    return network_jmls(session.rule.net, x, feedback, options, examples=JML_EXAMPLES)


@pytest.mark.parametrize("algorithm", ["dtp", "tjml"])
def test_stored_jmls_equal_network_jmls_on_the_checkpointed_network(tmp_path, algorithm):
    run = train(circuit_for(algorithm), epochs=2, out=tmp_path / "r.h5", progress=False, track_jml=True)
    for name in columns():
        assert run.metrics[name].shape == (2,), name
    if algorithm == "tjml":
        expected = recomputed(run, "analytical", FeedbackOptions(run.circuit.algorithm.activation_feedback))
    else:
        expected = recomputed(run, "learned")
    for layer, values in expected.items():
        for kind, value in values.items():
            stored = run.metrics[f"{kind.lower()}jml_{layer}"][-1]
            np.testing.assert_allclose(stored, value, rtol=1e-6, equal_nan=True, err_msg=f"{kind} {layer}")
    assert all(math.isnan(v) for v in run.metrics["ijml_layer2"])  # conv -> pooled map: J_f is not square
    assert np.isfinite(run.metrics["pjml_layer3"]).all()
    if algorithm == "tjml":  # G*_l = J_fᵀ (TJMC)
        for l in (2, 3):
            assert np.abs(run.metrics[f"tjml_layer{l}"]).max() < 1e-6
    else:  # learned inverses are not transposes: the measurement is not trivially zero
        assert run.metrics["tjml_layer2"].min() > 1e-3


def test_rules_without_a_feedback_map_store_nan_and_ao_sdtp_its_top_layer():
    for name in ("bp", "fa", "dfa"):
        rule = build(circuit_for(name), (1, 8, 8), 10)
        assert all(math.isnan(v) for v in rule_jmls(rule, torch.rand(4, 64)).values()), name
    row = rule_jmls(build(circuit_for("ao_sdtp", aux_units=8), (1, 8, 8), 10), torch.rand(4, 64))
    assert sorted(row) == sorted(columns())
    assert math.isnan(row["tjml_layer3"]) and math.isfinite(row["tjml_layer2"])


def test_resume_keeps_tracking_and_equals_the_uninterrupted_run(interrupted):
    _, resumed = interrupted(train, circuit_for("dtp"), 1, 2, track_jml=True)  # the resume has no flag
    assert set(columns()) <= set(resumed.metrics)


def test_cli_track_jml_writes_the_columns(tmp_path):
    out = tmp_path / "cli.h5"
    assert main(["train", "circuits/mlp.yaml", "--algorithm", "dtp", "--epochs", "1", "--quiet",
                 "--set", "data.limit=100", "--out", str(out), "--track-jml"]) == 0
    run = open_run(out)
    depth = len(run.circuit.network.expanded())
    for name in columns(depth):
        assert run.metrics[name].shape == (1,), name
    assert np.isfinite(run.metrics[f"tjml_layer{depth}"]).all()
