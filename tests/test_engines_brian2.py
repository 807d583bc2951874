"""brian2 and torch run the same description: float64 trajectories agree to 1e-9."""

import pytest
import torch

pytest.importorskip("brian2")

from biotp.algorithms.base import Loss  # noqa: E402
from biotp.circuit import parse_circuit  # noqa: E402
from biotp.dynamics import model as M  # noqa: E402
from biotp.engines.brian2 import Brian2Engine, population_equations  # noqa: E402
from biotp.engines.torch import TorchEngine  # noqa: E402
from biotp.errors import ConfigError  # noqa: E402
from biotp.network import Network  # noqa: E402

torch.set_num_threads(1)
D = torch.float64


def circuit(**dynamics):
    layers = [{"size": 6, "activation": "tanh"}, {"size": 5, "activation": "sigmoid"}, {"size": 4, "activation": "linear"}]
    dyn = {"dtype": "float64", "tau_f": "1 ms", "tau_t": "1.5 ms", "dt": "0.1 ms", "forward_phase": "4 ms",
           "target_phase": "3 ms", "record_dt": "0.2 ms",
           "record": {"layer1": ["h", "t", "u"], "layer2": ["h", "t"], "layer3": ["t"]}, **dynamics}
    return parse_circuit({"network": {"layers": layers}, "dynamics": dyn}, "<test>")


def run_both(c, n=2, codegen="numpy"):
    net = Network(c, 5, with_feedback=True, seed=3)
    x = torch.rand(n, 5, dtype=D, generator=torch.Generator().manual_seed(4))
    y = torch.tensor([1, 3, 0][:n])
    out = []
    for make in (lambda *a, **k: TorchEngine(*a, **k), lambda *a, **k: Brian2Engine(*a, codegen=codegen, **k)):
        w = M.Weights.of(net, D)
        eng = make(M.build_model(c.dynamics, net), w, Loss("cross_entropy", 4), generator=torch.Generator().manual_seed(5))
        out.append(([eng.present(x[i : i + 1], y[i : i + 1]) for i in range(n)], w))
    return out


def assert_agree(torch_run, brian_run):
    (pt, wt), (pb, wb) = torch_run, brian_run
    for a, b in zip(pt, pb):
        assert a.traces.keys() == b.traces.keys()
        for k in a.traces:
            assert a.traces[k].shape == b.traces[k].shape, k
            torch.testing.assert_close(a.traces[k], b.traces[k], atol=1e-9, rtol=0, equal_nan=True, msg=str(k))
        for l in range(1, 4):
            torch.testing.assert_close(a.t[l], b.t[l], atol=1e-9, rtol=0)
    for l in range(1, 4):
        torch.testing.assert_close(wt.W[l], wb.W[l], atol=1e-9, rtol=0)
        if wt.V[l] is not None:
            torch.testing.assert_close(wt.V[l], wb.V[l], atol=1e-9, rtol=0)


@pytest.mark.parametrize("relaxation", ["difference", "gradient", "inverse_output", "inverse_input"])
def test_trajectories_agree_with_online_plasticity(relaxation):
    c = circuit(relaxation=relaxation, plasticity={"rule": "dtp1", "eta": 0.5, "gamma": "20 Hz"})
    torch_run, brian_run = run_both(c)
    assert_agree(torch_run, brian_run)
    t_trace = torch_run[0][0].traces[("layer1", "t")]
    assert (t_trace[-1] - t_trace[0]).abs().max() > 1e-3  # the target did move


def test_layerwise_gradient_step_top_and_feedback_plasticity_agree():
    c = circuit(relaxation="difference", schedule="layerwise", target={"mode": "gradient_step", "beta": 0.2},
                plasticity={"rule": "dtp1", "eta": 0.3, "influence": True},
                feedback_plasticity={"rule": "inverse_loss", "beta": 0.05, "noise": 0.1})
    assert_agree(*run_both(c))


def test_equations_carry_units_and_come_from_the_model():
    c = circuit(relaxation="difference", plasticity={"rule": "dtp1"})
    net = Network(c, 5, with_feedback=True)
    model = M.build_model(c.dynamics, net)
    eqs = population_equations(model, 1)
    assert "dh/dt = fwd * (-h + tanh(a)) / tau_f : 1" in eqs
    assert "dtgt/dt = on * (-tgt + h + gt - gh) / tau_t : 1" in eqs
    assert "tdot = on * (-tgt + h + gt - gh) / tau_t : 1/second" in eqs


def test_brian2_rejects_rk4():
    c = circuit(solver="rk4")
    net = Network(c, 5, with_feedback=True)
    with pytest.raises(ConfigError, match="Euler only"):
        Brian2Engine(M.build_model(c.dynamics, net), M.Weights.of(net, D), Loss("cross_entropy", 4))


@pytest.mark.slow
def test_cython_target_agrees():
    pytest.importorskip("Cython")
    c = circuit(relaxation="difference", plasticity={"rule": "dtp1", "eta": 0.5})
    assert_agree(*run_both(c, n=1, codegen="cython"))
