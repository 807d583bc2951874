"""The `dynamics:` block: quantities with units, checked; the equations as data."""

import pytest
import yaml

from biotp.circuit import load_circuit, parse_circuit
from biotp.dynamics import model as M
from biotp.dynamics.units import parse_quantity
from biotp.errors import ConfigError
from biotp.network import Network

LAYERS = {"layers": [{"size": 4, "activation": "tanh"}, {"size": 3, "activation": "linear"}]}


@pytest.mark.parametrize("text, dimension, seconds", [
    ("2 ms", "time", 2e-3), ("2ms", "time", 2e-3), ("2*ms", "time", 2e-3), ("0.5 s", "time", 0.5),
    ("100 us", "time", 1e-4), ("10 Hz", "frequency", 10.0), ("10 / s", "frequency", 10.0),
    ("3/ms", "frequency", 3000.0), ("1e-3 s", "time", 1e-3),
])
def test_quantities(text, dimension, seconds):
    assert parse_quantity(text, dimension) == pytest.approx(seconds, rel=1e-12)


@pytest.mark.parametrize("value, why", [("2 mV", "'mV' has dimension voltage"), (2, "a bare number has no unit"),
                                        ("2 parsec", "unknown unit 'parsec'"), ("fast", "no unit found")])
def test_wrong_unit_names_file_key_value_and_dimension(tmp_path, value, why):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"network": LAYERS, "dynamics": {"tau_f": value}}))
    with pytest.raises(ConfigError) as err:
        load_circuit(path)
    msg = str(err.value)
    assert str(path) in msg and "dynamics.tau_f" in msg and repr(value) in msg
    assert "expected a time" in msg and why in msg


def test_rate_must_be_a_frequency():
    with pytest.raises(ConfigError, match=r"dynamics.plasticity.gamma: .*expected a frequency.*'2 ms'"):
        parse_circuit({"network": LAYERS, "dynamics": {"plasticity": {"gamma": "2 ms"}}})


def test_phases_are_whole_steps_and_resolved_yaml_round_trips():
    with pytest.raises(ConfigError, match="forward_phase .* whole number of steps"):
        parse_circuit({"network": LAYERS, "dynamics": {"dt": "0.3 ms", "forward_phase": "1 ms"}})
    c = parse_circuit({"network": LAYERS, "dynamics": {"tau_f": "3 ms", "plasticity": {"gamma": "5 Hz"}}})
    again = parse_circuit(yaml.safe_load(c.to_yaml()))
    assert again.dynamics == c.dynamics and again.dynamics.tau_f == pytest.approx(3e-3)
    assert "tau_f: 0.003 s" in c.to_yaml() and "gamma: 5.0 Hz" in c.to_yaml()


def test_unknown_key_is_an_error():
    with pytest.raises(ConfigError, match="dynamics.tau_x: unknown key"):
        parse_circuit({"network": LAYERS, "dynamics": {"tau_x": "1 ms"}})


@pytest.mark.parametrize("relaxation, rhs", [
    ("gradient", "back"), ("difference", "-t + h + gt - gh"), ("inverse_output", "gt - gft"),
    ("inverse_input", "tup - fgu"),
])
def test_equations_as_data(relaxation, rhs):
    c = parse_circuit({"network": {"layers": [{"size": 4, "activation": "sigmoid", "repeat": 2},
                                              {"size": 3, "activation": "relu"}]},
                       "dynamics": {"relaxation": relaxation}})
    model = M.build_model(c.dynamics, Network(c, 5, with_feedback=True))
    assert model.top == 3 and model.relaxing == [2, 1]
    assert model.forward[1].text == "fwd * (-h + 1 / (1 + exp(-a))) / tau_f"
    assert model.forward[3].text == "fwd * (-h + clip(a, 0, inf)) / tau_f"
    assert model.target[1].text == f"on * ({rhs}) / tau_t"


def test_gradient_step_top_leaves_the_output_alone():
    c = parse_circuit({"network": LAYERS, "dynamics": {"target": {"mode": "gradient_step"}}})
    model = M.build_model(c.dynamics, Network(c, 5, with_feedback=True))
    assert model.top == 1 and model.relaxing == []
