"""Circuit files: validation, defaults, overrides and the promised error messages."""

import pytest
import yaml

from biotp.circuit import algorithm_names, load_circuit
from biotp.errors import ConfigError

BASE = {
    "network": {"layers": [{"size": 16, "repeat": 2}, {"size": 10, "activation": "linear"}]},
    "algorithm": {"name": "dtp", "eta_hat": 0.2},
    "optimizer": {"name": "adam", "lr": 0.001},
}


def write(tmp_path, data, name="c.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


def test_defaults_and_repeat(tmp_path):
    c = load_circuit(write(tmp_path, BASE))
    assert [l.size for l in c.network.expanded()] == [16, 16, 10]
    assert c.algorithm.eta_hat == 0.2 and c.optimizer.betas == (0.9, 0.999)
    assert c.data.dataset == "digits" and c.schedule.feedback_training == "parallel"


def test_circuit_is_frozen(tmp_path):
    from pydantic import ValidationError

    c = load_circuit(write(tmp_path, BASE))
    for block, key, value in ((c, "seed", 3), (c.optimizer, "lr", 0.5), (c.network.layers[0], "size", 3)):
        with pytest.raises(ValidationError, match=r"Instance is frozen") as info:
            setattr(block, key, value)
        assert info.value.errors()[0]["type"] == "frozen_instance" and info.value.errors()[0]["loc"] == (key,)
    assert c.seed == 0 and c.optimizer.lr != 0.5 and c.network.layers[0].size != 3


@pytest.mark.parametrize(
    "override, message",
    [
        ("data.batchsize=3", r"c.yaml: data.batchsize: unknown key; expected one of: dataset, batch_size"),
        ("network.layers.0.size=-3", r"c.yaml: network.layers.0.size: Input should be greater than 0; got -3"),
        ("optimizer.lr=fast", r"c.yaml: optimizer.lr: .*number.*got 'fast'"),
        ("algorithm.name=backprop", r"c.yaml: algorithm: .*'backprop'.*'bp'"),
        ("network.layers.0.activation=swish", r"c.yaml: network.layers.0.activation: .*'tanh'.*got 'swish'"),
        ("optimizer.momentum=0.9", r"c.yaml: optimizer.momentum: unknown key; expected one of: name, lr, betas"),
        ("data.val_split=1.5", r"c.yaml: data.val_split: .*less than 1; got 1.5"),
        ("layers=3", r"c.yaml: layers: unknown key; expected one of: name, description, seed, network"),
    ],
)
def test_bad_input_names_file_key_value_and_expectation(tmp_path, override, message):
    with pytest.raises(ConfigError, match=message):
        load_circuit(write(tmp_path, BASE), [override])


def test_unreadable_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match=r"missing.yaml: cannot read"):
        load_circuit(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match=r"bad.yaml: not valid YAML"):
        load_circuit(write(tmp_path, "network: [1, 2\n", "bad.yaml"))
    with pytest.raises(ConfigError, match=r"list.yaml: expected a mapping"):
        load_circuit(write(tmp_path, "- 1\n- 2\n", "list.yaml"))
    with pytest.raises(ConfigError, match=r"empty.yaml: network: Field required"):
        load_circuit(write(tmp_path, "", "empty.yaml"))


def test_overrides_reach_any_field(tmp_path):
    c = load_circuit(write(tmp_path, BASE), ["optimizer.lr=0.5", "network.layers.1.size=10", "data.limit=100",
                                             "feedback.optimizer={name: sgd, lr: 0.1}"])
    assert c.optimizer.lr == 0.5 and c.data.limit == 100 and c.feedback.optimizer.name == "sgd"
    with pytest.raises(ConfigError, match=r"--set network.layers.7.size.*index below 2"):
        load_circuit(write(tmp_path, BASE), ["network.layers.7.size=3"])
    with pytest.raises(ConfigError, match=r"expected key.path=value"):
        load_circuit(write(tmp_path, BASE), ["optimizer.lr"])


def test_switching_optimizer_or_algorithm_drops_fields_of_the_old_one(tmp_path):
    c = load_circuit(write(tmp_path, BASE))
    assert c.with_updates("optimizer.name=sgd").optimizer.name == "sgd"
    assert c.with_algorithm("sdtp").algorithm.name == "sdtp"
    assert c.with_algorithm("fwdtp").algorithm.eta_hat == 0.2  # shared hyperparameters are kept
    with pytest.raises(ConfigError, match=r"algorithm: unknown name 'nope'"):
        c.with_algorithm("nope")


def test_resolved_yaml_round_trips(tmp_path):
    c = load_circuit(write(tmp_path, BASE))
    again = load_circuit(write(tmp_path, c.to_yaml(), "again.yaml"))
    assert again.model_dump() == c.model_dump()


def test_shipped_circuits_parse():
    from pathlib import Path

    files = sorted(Path("circuits").glob("*.yaml"))
    assert any(f.name == "mlp.yaml" for f in files)
    for f in files:
        assert load_circuit(f).algorithm.name in algorithm_names()


SHIPPED = sorted(__import__("pathlib").Path(__file__).resolve().parents[1].glob("circuits/*.yaml"))
DATA_DIR = __import__("os").environ.get("BIOTP_DATA") or "/work/shared/data"


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_circuit_builds_on_its_dataset_and_trains_a_batch(path):
    """Not only parsed: built against its dataset's real shapes, two batches trained, the loss
    finite; a continuous-time circuit also settles one example.  A dataset absent from
    $BIOTP_DATA (default /work/shared/data) skips, naming it."""
    import math

    import torch

    import biotp
    from biotp.errors import DataError
    from biotp.training import Session

    torch.set_num_threads(1)
    circuit = load_circuit(path)
    circuit = circuit.with_updates(f"data.limit={2 * circuit.data.batch_size}", "schedule.eval_train=true")
    try:
        session = Session(circuit, data_dir=DATA_DIR, device="cpu")
    except DataError as err:
        if "not found" in str(err):
            pytest.skip(f"dataset {circuit.data.dataset!r} is not in {DATA_DIR}: {str(err)[:200]}")
        raise
    assert tuple(session.rule.net.shapes[0]) in {(session.train[0].shape[1],), tuple(session.input_shape)}
    session.run_epoch(1)
    row = session.evaluate()
    scores = ("train_loss", "train_mse", "test_mse") if circuit.autoencoder else ("train_loss", "train_error", "test_error")
    assert all(math.isfinite(row[k]) for k in scores), row  # (an auto-encoder reports nan errors by design)
    if circuit.dynamics is not None:
        run = biotp.simulate(circuit, examples=1, data_dir=DATA_DIR, progress=False)
        assert run is not None
