"""Training end to end on real data (digits): every rule learns, runs repeat, resume equals
an uninterrupted run, divergence stops with a clear message, run files are atomic."""

import h5py
import numpy as np
import pytest
import torch

import biotp
from biotp import runs
from biotp.algorithms import ALGORITHMS
from biotp.errors import DivergenceError
from biotp.training import Session, make_optimizer, train

QUICK = ["data.limit=600", "data.batch_size=32"]

RULES = ["bp", "fa", "dfa", "tp", "dtp", "sdtp", "ao_sdtp", "fwdtp"]


@pytest.fixture(scope="module")
def circuit():
    return biotp.load_circuit("circuits/mlp.yaml", QUICK)


@pytest.mark.parametrize("name", RULES)
def test_every_rule_lowers_the_training_loss_on_digits(circuit, name):
    c = circuit.with_algorithm(name)
    session = Session(c)
    before = session.evaluate()
    metrics = train(c, epochs=4, progress=False)
    assert metrics["train_loss"][-1] < 0.6 * before["train_loss"], (name, before, metrics["train_loss"])
    assert metrics["train_error"][-1] < 0.5 * before["train_error"]


def test_a_resume_may_grow_the_epochs_only_and_the_file_keeps_its_history(tmp_path, circuit, capsys):
    from biotp.cli import main
    from biotp.errors import BiotpError

    path = tmp_path / "run.h5"
    first = train(circuit, epochs=1, out=path, progress=False, command="biotp train first")
    with pytest.raises(BiotpError, match=r"only the epochs may grow.*optimizer.lr: 0.001 -> 0.5"):
        train(circuit.with_updates("optimizer.lr=0.5"), resume=path, epochs=2, progress=False)
    code = main(["train", "--resume", str(path), "--epochs", "2", "--seed", "7", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "seed: 0 -> 7" in err and "Traceback" not in err
    assert list(runs.open_run(path).metrics["epoch"]) == [1]  # nothing was applied
    second = train(resume=path, epochs=2, progress=False, command="biotp train second")
    assert second.attrs["command"] == "biotp train first" and second.attrs["created"] == first.attrs["created"]
    assert second.attrs["resumes"].endswith(" biotp train second") and list(second.metrics["epoch"]) == [1, 2]
    third = train(resume=path, epochs=3, progress=False, command="biotp train third")
    assert third.attrs["resumes"].splitlines()[1].endswith(" biotp train third")
    capsys.readouterr()
    assert main(["inspect", str(path)]) == 0  # inspect shows the whole command history
    shown = capsys.readouterr().out
    assert all(f"biotp train {n}" in shown for n in ("first", "second", "third")), shown


# rule -> tests that compare it with an independent computation (hand-written formulas, autograd,
# an equivalent rule on exact inverses, BP's gradient), each as file::function
INDEPENDENT = {
    "bp": ["test_algorithms.py::test_bp_is_autograd_gradient"],
    "fa": ["test_algorithms.py::test_fa_with_transposed_weights_is_bp",
           "test_fa_conv.py::test_fa_conv_net_matches_a_backward_pass_written_by_hand"],
    "dfa": ["test_algorithms.py::test_dfa_matches_hand_written_deltas"],
    "tp": ["test_algorithms.py::test_dtp_with_exact_inverse_gives_tp_targets"],
    "dtp": ["test_algorithms.py::test_dtp_with_exact_inverse_gives_tp_targets",
            "test_algorithms.py::test_dtp_penultimate_update_is_bp_direction"],
    "sdtp": ["test_algorithms.py::test_inverse_losses_noise_preserving_versus_denoising",
             "test_algorithms.py::test_sdtp_top_target_uses_the_label_not_the_gradient"],
    "ao_sdtp": ["test_algorithms.py::test_ao_sdtp_auxiliary_features_are_fixed_and_used"],
    "fwdtp": ["test_algorithms.py::test_fwdtp_targets_are_the_difference_correction_through_its_fixed_feedback"],
    "gtp": ["test_algorithms_seed_rules.py::test_gtp_targets_are_euler_solution_of_eq3",
            "test_algorithms_seed_rules.py::test_gtp_weight_update_is_eq5"],
    "dtp_gn": ["test_algorithms_seed_rules.py::test_dtp_gn_update_is_dtp1_formula",
               "test_algorithms_seed_rules.py::test_dtp_gn_decoder_rule"],
    "ldrl": ["test_algorithms_seed_rules.py::test_ldrl_feedback_loss_is_ip_plus_rr"],
    "tjml": ["test_tjml.py::test_small_beta_error_is_first_order_in_beta",
             "test_tjml.py::test_pseudo_inverse_and_inverse_conditions"],
}
COMPARISONS = ("assert_close", "assert_allclose", "assert_array_equal", "approx(", "allclose(", "angle_deg(")


def test_every_registered_rule_is_covered():
    """Every rule in the registry (and only those) has a test comparing it with an independent
    computation: the test exists, builds that rule (names it, or its helper does) and asserts
    a numerical comparison."""
    import ast
    import re
    from pathlib import Path

    assert set(INDEPENDENT) == set(ALGORITHMS), (set(ALGORITHMS) ^ set(INDEPENDENT))
    here = Path(__file__).parent
    for rule, tests in INDEPENDENT.items():
        for ref in tests:
            file, name = ref.split("::")
            source = (here / file).read_text()
            functions = {f.name: f for f in ast.walk(ast.parse(source)) if isinstance(f, ast.FunctionDef)}
            assert name in functions, f"{rule}: {ref} does not exist"
            node = functions[name]
            text = "\n".join(ast.get_source_segment(source, d) for d in node.decorator_list)
            text += ast.get_source_segment(source, node)
            seen, todo = set(), [node]  # and the helpers it calls, helpers of helpers ...
            while todo:
                for call in ast.walk(todo.pop()):
                    if isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id in functions \
                            and call.func.id not in seen:
                        seen.add(call.func.id)
                        todo.append(functions[call.func.id])
                        text += ast.get_source_segment(source, functions[call.func.id])
            assert re.search(rf"(?<![a-z]){rule}(?![a-z])", text), f"{ref} never names rule {rule!r}"
            assert any(c in ast.get_source_segment(source, node) for c in COMPARISONS), \
                f"{ref} asserts no numerical comparison"


def _same_metrics(a, b):
    for key in a:
        if key != "seconds":
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_same_seed_same_metrics(circuit):
    c = circuit.with_updates("schedule.feedback_training=alternating")
    _same_metrics(train(c, epochs=2, progress=False), train(c, epochs=2, progress=False))
    other = train(c.with_updates("seed=1"), epochs=2, progress=False)
    assert not np.array_equal(other["train_loss"], train(c, epochs=2, progress=False)["train_loss"])


@pytest.mark.parametrize("schedule", ["parallel", "alternating"])
def test_resume_equals_uninterrupted(interrupted, circuit, schedule):
    c = circuit.with_updates(f"schedule.feedback_training={schedule}", "feedback.noise_decay=2")
    _, resumed = interrupted(train, c, 2, 4, track_angles=True)
    assert list(resumed.metrics["epoch"]) == [1, 2, 3, 4] and "angle_layer1" in resumed.metrics


def test_run_file_layout(tmp_path, circuit):
    run = train(circuit, epochs=2, out=tmp_path / "r.h5", progress=False, track_angles=True, command="biotp train x")
    with h5py.File(tmp_path / "r.h5") as f:
        for attr in ("biotp_version", "seed", "command", "created", "circuit_yaml"):
            assert attr in f.attrs
        assert f.attrs["command"] == "biotp train x"
        for m in ("epoch", "train_loss", "train_error", "val_error", "test_error", "seconds",
                  "angle_layer1", "angle_layer2", "angle_layer3"):
            assert f["metrics"][m].shape == (2,), m
        assert "layer1.weight" not in f["checkpoint/model"]  # keys are the state-dict names
        assert f["checkpoint/model/net.layers.0.weight"].shape == (64, 64)
        assert "opt_forward" in f["checkpoint"] and "opt_feedback" in f["checkpoint"]
    assert run.circuit.model_dump() == circuit.with_updates("schedule.epochs=2").model_dump()  # round-trips
    assert 0 <= run.metrics["angle_layer1"][-1] <= 180


def test_dtp_penultimate_angle_to_bp_is_zero_in_training(circuit):
    """DTP's penultimate target is a gradient step, so that layer moves along BP exactly."""
    metrics = train(circuit, epochs=1, progress=False, track_angles=True)
    assert metrics["angle_layer2"][-1] < 1e-2
    assert metrics["angle_layer3"][-1] < 1e-2  # output layer: the global loss itself
    assert 1 < metrics["angle_layer1"][-1] < 90


def test_divergence_names_layer_and_step_and_keeps_checkpoint(tmp_path, circuit):
    c = circuit.with_algorithm("bp").with_updates("network.layers.0.activation=linear", "optimizer.name=sgd")
    out = tmp_path / "run.h5"
    train(c.with_updates("optimizer.lr=0.01"), epochs=1, out=out, progress=False)
    good = runs.open_run(out).checkpoint["model"]["net.layers.0.weight"]
    with pytest.raises(DivergenceError, match=r"epoch 1, step \d+: .*layer\d.*not finite"):
        train(c.with_updates("optimizer.lr=1e38"), epochs=1, out=tmp_path / "other.h5", progress=False)
    assert not (tmp_path / "other.h5").exists()
    np.testing.assert_array_equal(runs.open_run(out).checkpoint["model"]["net.layers.0.weight"], good)


def test_deferred_divergence_check_names_the_first_bad_step(circuit):
    """The GPU's check (no host sync per batch): one sync at the end of the pass, the same step
    and cause, for a loss that overflows at once and for one that explodes."""
    for lr, cause in (("1e38", "not finite"), ("1e10", "grew from")):
        c = circuit.with_algorithm("bp").with_updates("network.layers.0.activation=linear", "optimizer.name=sgd",
                                                      f"optimizer.lr={lr}")
        steps = []
        for defer in (False, True):
            session = Session(c)
            session.defer_checks = defer
            with pytest.raises(DivergenceError, match=r"epoch 1, step (\d+):") as err:
                session.run_epoch(1)
            steps.append(err.value.args[0].split("step ")[1].split(":")[0])
            assert cause in str(err.value) and "optimizer.lr" in str(err.value)
            assert ("checked at the end of the pass" in str(err.value)) == defer
        assert steps[0] == steps[1], lr


@pytest.mark.parametrize("name", ["dtp", "sdtp"])
def test_resume_equals_uninterrupted_on_the_fast_path(interrupted, circuit, name):
    """The closed-form, layer-batched path of the TP rules (algorithms/fused.py) resumes exactly."""
    c = circuit.with_algorithm(name).with_updates("network.layers.0.repeat=3")
    assert Session(c).rule.fusable()
    interrupted(train, c, 1, 3)


def test_interrupted_write_leaves_previous_file_intact(tmp_path, monkeypatch):
    path = tmp_path / "run.h5"
    runs.write_run(path, {"a": 1}, {"metrics": {"x": np.arange(3.0)}})

    def broken(group, tree):
        group.create_dataset("partial", data=np.zeros(3))
        raise KeyboardInterrupt

    monkeypatch.setattr(runs, "_write_tree", broken)
    with pytest.raises(KeyboardInterrupt):
        runs.write_run(path, {"a": 2}, {"metrics": {"x": np.arange(5.0)}})
    run = runs.open_run(path)
    assert run.attrs["a"] == 1 and list(run.metrics["x"]) == [0, 1, 2]
    assert [p.name for p in tmp_path.iterdir()] == ["run.h5"]


def test_optimizers_receive_every_field(circuit):
    params = [torch.nn.Parameter(torch.zeros(2))]
    adam = make_optimizer(circuit.with_updates("optimizer={name: adam, lr: 0.01, betas: [0.8, 0.9], eps: 1e-6, amsgrad: true}").optimizer, params)
    assert adam.defaults["betas"] == (0.8, 0.9) and adam.defaults["eps"] == 1e-6 and adam.defaults["amsgrad"]
    rms = make_optimizer(circuit.with_updates("optimizer={name: rmsprop, lr: 0.01, alpha: 0.9, centered: true, momentum: 0.5}").optimizer, params)
    assert isinstance(rms, torch.optim.RMSprop) and rms.defaults["alpha"] == 0.9 and rms.defaults["centered"]
    sgd = make_optimizer(circuit.with_updates("optimizer={name: sgd, lr: 0.1, momentum: 0.9, nesterov: true}").optimizer, params)
    assert sgd.defaults["nesterov"] and sgd.defaults["momentum"] == 0.9


def test_alternating_schedule_trains_feedback_and_forward_in_separate_passes(circuit):
    session = Session(circuit.with_updates("schedule.feedback_training=alternating"))
    assert session.passes(1) == [(False, True), (True, False)]
    assert Session(circuit).passes(1) == [(True, True)]
    assert Session(circuit.with_algorithm("bp")).passes(1) == [(True, False)]
    warm = Session(circuit.with_updates("schedule.feedback_warmup_epochs=1"))
    assert warm.passes(1) == [(False, True)] and warm.passes(2) == [(True, True)]


def test_noise_decay(circuit):
    session = Session(circuit.with_updates("feedback.noise=0.4", "feedback.noise_decay=2"))
    session.rule.set_epoch(0)
    assert session.rule.noise == pytest.approx(0.4)
    session.rule.set_epoch(4)
    assert session.rule.noise == pytest.approx(0.4 / 3)  # σ0 / (1 + e/e0), seed 002 §3.3


def test_data_kept_on_the_host_train_as_on_the_device(circuit, monkeypatch):
    """Data too large for the device stay on the host (pinned on a GPU) and go over batch by
    batch: the same batches, the same run, as with the data on the device."""
    import biotp.training as training

    c = circuit.with_algorithm("dtp")
    on_device = train(c, epochs=2, progress=False)
    asked = []
    monkeypatch.setattr(training, "fits", lambda device, nbytes: asked.append(nbytes) or False)
    session = Session(c)
    assert not session.data_on_device
    n = sum(len(x) for x, _ in (session.train, session.val, session.test))
    assert asked == [4 * n * session.train[0].shape[1]]  # the float32 inputs of all three splits
    _same_metrics(on_device, train(c, epochs=2, progress=False))


def test_to_device_moves_only_what_is_elsewhere():
    from biotp.devices import fits, host, to_device

    cpu = torch.device("cpu")
    t = torch.arange(6.0)
    assert to_device(t, cpu) is t and host(t, cpu) is t  # nothing to copy or pin on the CPU
    assert fits(cpu, 10**15)  # the CPU holds whatever was loaded


def test_without_eval_train_the_training_set_is_not_evaluated_and_the_rest_is_unchanged(circuit):
    whole = train(circuit.with_algorithm("dtp"), epochs=2, progress=False)
    held_out = train(circuit.with_updates("schedule.eval_train=false").with_algorithm("dtp"), epochs=2, progress=False)
    assert np.isnan(held_out["train_loss"]).all() and np.isnan(held_out["train_error"]).all()
    for k in ("val_error", "test_error"):
        np.testing.assert_array_equal(held_out[k], whole[k], err_msg=k)


def test_eval_every_records_the_evaluated_epochs_only_and_resumes_between(tmp_path, circuit):
    """`schedule.eval_every: 2` over 5 epochs: rows at epochs 2, 4 and the last, equal to those
    of an every-epoch run (a deterministic net: evaluation draws no random numbers); a run
    killed after epoch 3 (its checkpoint written, no row) resumes to the uninterrupted run."""
    every = train(circuit.with_algorithm("dtp"), epochs=5, progress=False)
    sparse = circuit.with_updates("schedule.eval_every=2").with_algorithm("dtp")
    run = train(sparse, epochs=5, out=tmp_path / "whole.h5", progress=False)
    assert list(run.metrics["epoch"]) == [2, 4, 5] and int(run.checkpoint["epoch"]) == 5
    for k in ("train_loss", "val_error", "test_error"):
        np.testing.assert_array_equal(run.metrics[k], every[k][[1, 3, 4]], err_msg=k)

    def kill_at_4(row):
        if row["epoch"] == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(sparse, epochs=5, out=tmp_path / "part.h5", progress=False, log=kill_at_4)
    with h5py.File(tmp_path / "part.h5") as f:
        assert list(f["metrics/epoch"]) == [2] and int(f["checkpoint/epoch"][()]) == 3
    resumed = train(resume=tmp_path / "part.h5", progress=False)
    assert list(resumed.metrics["epoch"]) == [2, 4, 5]
    _same_metrics(run.metrics, resumed.metrics)
    for key, value in run.checkpoint["model"].items():
        np.testing.assert_array_equal(value, resumed.checkpoint["model"][key], err_msg=key)
