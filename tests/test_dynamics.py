"""The `dynamics:` block: quantities with units, checked; the equations as data."""

from pathlib import Path

import pytest
import yaml

from biotp.circuit import load_circuit, parse_circuit
from biotp.dynamics.model import build_model
from biotp.dynamics.units import parse_quantity
from biotp.errors import ConfigError

MLP = Path(__file__).parents[1] / "circuits" / "mlp.yaml"
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


@pytest.mark.parametrize("key, value, expected", [
    ("dt", "0 ms", "expected a positive, finite time"), ("dt", "-0.1 ms", "expected a positive, finite time"),
    ("dt", "1e400 s", "finite"), ("tau_f", "0 ms", "expected a positive, finite time"),
    ("tau_t", "-2 ms", "expected a positive, finite time"), ("record_dt", "0 s", "expected a positive, finite time"),
    ("target_phase", "-1 ms", "expected a duration ≥ 0 s"), ("forward_phase", "1e9 s", "expected at most 1e+07 steps"),
])
def test_non_physical_dynamics_are_refused_by_name(tmp_path, key, value, expected):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"network": LAYERS, "dynamics": {key: value}}))
    with pytest.raises(ConfigError) as err:
        load_circuit(path)
    msg = str(err.value)
    assert str(path) in msg and "dynamics" in msg and key in msg and expected in msg, msg


def test_a_simulation_that_diverges_stops_naming_population_variable_and_time(tmp_path):
    """τ_f = dt/20: Euler's factor 1 - dt/τ_f = -19 blows the first layer up in a few steps."""
    from biotp.errors import DivergenceError
    from biotp.simulation import simulate

    c = load_circuit(MLP, ["dynamics.tau_f=0.01 ms", "dynamics.record={layer1: [h], layer2: [h]}"])
    with pytest.raises(DivergenceError, match=r"example 0 of the stream .*: layer1\.h is not finite .* s into the "
                                              r"presentation"):
        simulate(c, examples=2, out=tmp_path / "run.h5", progress=False)
    assert not (tmp_path / "run.h5").exists()


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


@pytest.mark.parametrize("relaxation, rhs, couplings", [
    ("gradient", "back", {("back", "forward.layer2", "ec", "pre", 1), ("at", "forward.layer2", "tgt", "post", 0)}),
    ("difference", "-tgt + h + 1 / (1 + exp(-(vt + c))) - 1 / (1 + exp(-(vh + c)))",
     {("vt", "feedback.layer2", "tgt", "post", 0), ("vh", "feedback.layer2", "h", "post", 0)}),
    ("inverse_output", "1 / (1 + exp(-(vt + c))) - 1 / (1 + exp(-(vft + c)))",
     {("vt", "feedback.layer2", "tgt", "post", 0), ("vft", "feedback.layer2", "ft", "post", 1)}),
    ("inverse_input", None, {("vu", "feedback.layer2", "u", "post", 0), ("agu", "forward.layer2", "tgt", "post", 1),
                             ("vudot", "feedback.layer2", "udot", "post", 2)}),
])
def test_equations_as_data(relaxation, rhs, couplings):
    """Each relaxation is an entry of the catalogue: equation text with units, and the
    summed couplings it needs (who receives what, through which projection, at which stage)."""
    c = parse_circuit({"network": {"layers": [{"size": 4, "activation": "sigmoid", "repeat": 2},
                                              {"size": 3, "activation": "relu"}]},
                       "dynamics": {"relaxation": relaxation}})
    model = build_model(c, 5)
    assert model.relaxing == [2, 1] and model.targeted == [1, 2, 3]
    eqs = model.populations["layer1"].equations.splitlines()
    assert "hdot = fwd * (1 - hold_h) * (-h + 1 / (1 + exp(-(a + b + I_h)))) / tau_f" \
           " + sigma_h * sqrt(2 / (tau_f * dt)) * noise_h : 1/second" in eqs
    assert "hdot = fwd * (1 - hold_h) * (-h + ((a + b + I_h) + abs(a + b + I_h)) / 2) / tau_f" \
           " + sigma_h * sqrt(2 / (tau_f * dt)) * noise_h : 1/second" in model.populations["layer3"].equations.splitlines()
    if rhs is None:  # inverse_input: t_1 = g_2(u) is read out; u lives in layer 2
        assert "tgt = 1 / (1 + exp(-(vu + c))) : 1" in eqs
        assert "udot = on_u * (tgt - 1 / (1 + exp(-(agu + b)))) / tau_t : 1/second" in \
               model.populations["layer2"].equations.splitlines()
    else:
        assert f"tdot = on * (1 - hold_t) * ({rhs} + I_t) / tau_t + sigma_t * sqrt(2 / (tau_t * dt)) * noise_t" \
               " : 1/second" in eqs
    into_layer1 = {(k.target, k.projection, k.source, k.direction, k.stage) for k in model.couplings
                   if model.projections[k.projection].layer == 2 and k.weighted}
    assert couplings <= into_layer1


def test_gradient_step_top_steps_both_the_penultimate_and_the_output_target():
    c = parse_circuit({"network": LAYERS, "dynamics": {"target": {"mode": "gradient_step"}}})
    model = build_model(c, 5)
    assert model.relaxing == [] and model.targeted == [1, 2]
    onset = {(s.scope, s.var): s.expr for s in model.statements if s.event == "onset" and s.order == 5}
    assert onset[("layer1", "tgt")] == "hold_t * clamp_t + (1 - hold_t) * (h - beta * gL)"
    assert onset[("layer2", "tgt")] == "hold_t * clamp_t + (1 - hold_t) * (h - beta * dL)"


def test_user_equations_join_the_population_and_bad_ones_are_clear_errors():
    extra = {"equations": "dA/dt = (h - A) / tau_a : 1\nI_h = -g_a * A : 1", "parameters": {"tau_a": "50 ms", "g_a": 0.5}}
    c = parse_circuit({"network": LAYERS, "dynamics": {"populations": {"layer1": extra}}}, "c.yaml")
    pop = build_model(c, 5).populations["layer1"]
    assert "dA/dt = (h - A) / tau_a : 1" in pop.equations and "I_h = 0 : 1" not in pop.equations
    assert pop.parameters == {"tau_a": (pytest.approx(0.05), "second"), "g_a": (0.5, "1")}
    for bad, message in [
        ("dA/dt = h - A : 1", r"c\.yaml: dynamics\.populations\.layer1: .*'dA/dt = h - A : 1'.*units"),
        ("fwd = 2 : 1", r"layer1\.equations: 'fwd = 2 : 1' redefines the built-in variable 'fwd'"),
        ("dA/dt = (h - A) / tau_q : 1", r"layer1: .*tau_q"),
        ("A = h +* 2 : 1", r"layer1: "),
    ]:
        c = parse_circuit({"network": LAYERS, "dynamics": {"populations": {"layer1": {"equations": bad}}}}, "c.yaml")
        with pytest.raises(ConfigError, match=message):
            build_model(c, 5)
    with pytest.raises(ConfigError, match=r"c\.yaml: dynamics\.populations\.layer1\.parameters\.tau_a: .*got True"):
        parse_circuit({"network": LAYERS, "dynamics": {"populations": {"layer1": {
            "equations": "dA/dt = -A / tau_a : 1", "parameters": {"tau_a": True}}}}}, "c.yaml")
    with pytest.raises(ConfigError, match=r"parameters\.tau_a: '5 parsec': expected a number or a quantity"):
        build_model(parse_circuit({"network": LAYERS, "dynamics": {"populations": {"layer1": {
            "equations": "dA/dt = -A / tau_a : 1", "parameters": {"tau_a": "5 parsec"}}}}}, "c.yaml"), 5)


def test_misnamed_populations_and_variables_list_what_exists():
    c = parse_circuit({"network": LAYERS, "dynamics": {"record": {"layer9": ["h"]}}}, "c.yaml")
    with pytest.raises(ConfigError, match=r"dynamics\.record\.layer9: no population 'layer9'; the circuit's "
                                          r"populations are input, layer1, layer2"):
        build_model(c, 5)
    c = parse_circuit({"network": LAYERS, "dynamics": {"record": {"layer1": ["zz"]}}}, "c.yaml")
    with pytest.raises(ConfigError, match=r"population 'layer1' has no variable 'zz'; its variables are .*\bh\b"):
        build_model(c, 5)
    c = parse_circuit({"network": LAYERS, "dynamics": {"populations": {"layer7": {"equations": "x : 1"}}}}, "c.yaml")
    with pytest.raises(ConfigError, match=r"dynamics\.populations: no population 'layer7'"):
        build_model(c, 5)


def test_non_dense_circuits_are_refused_naming_the_layer():
    c = parse_circuit({"network": {"layers": [{"type": "conv", "channels": 2, "kernel": 3},
                                              {"size": 3, "activation": "linear"}]}}, "c.yaml")
    with pytest.raises(ConfigError, match=r"c\.yaml: network\.layers: layer 1 is 'conv'; the continuous-time "
                                          "model has dense populations only"):
        build_model(c, 25)


@pytest.mark.parametrize("args, expected", [(["--examples", "-5"], "--examples: -5"), (["--examples", "0"], "--examples: 0"),
                                            (["--batch-size", "0"], "--batch-size: 0"), (["--epochs", "two"], "--epochs: 'two'")])
def test_simulate_refuses_counts_below_one(capsys, args, expected):
    from biotp.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["simulate", str(MLP), *args])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and expected in err and "expected a whole number ≥ 1" in err and "Traceback" not in err


def test_simulate_records_each_trace_with_its_unit(tmp_path):
    import h5py

    from biotp.simulation import simulate

    c = load_circuit(MLP, ["dynamics.record={layer1: [h, t, r]}", "dynamics.forward_phase=1 ms",
                           "dynamics.target_phase=1 ms"])
    simulate(c, examples=2, out=tmp_path / "run.h5", progress=False)
    with h5py.File(tmp_path / "run.h5") as f:
        units = {var: f[f"traces/layer1/{var}"].attrs["unit"] for var in ("h", "t", "r")}
    assert units == {"h": "1", "t": "1", "r": "1/s"}
