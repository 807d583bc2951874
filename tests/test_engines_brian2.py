"""The brian2 engine is the model compiled into brian2 objects: its own equations, couplings
as Synapses' summed variables, no torch in the loop; what it cannot run is refused.
(Its agreement with the torch engine: tests/test_engines_agree.py.)"""

import pytest
import torch

pytest.importorskip("brian2")

from biotp.circuit import parse_circuit  # noqa: E402
from biotp.dynamics.model import build_model  # noqa: E402
from biotp.engines.base import Parameters  # noqa: E402
from biotp.engines.brian2 import Brian2Engine  # noqa: E402
from biotp.engines.torch import TorchEngine  # noqa: E402
from biotp.errors import ConfigError  # noqa: E402
from biotp.network import Network  # noqa: E402

D = torch.float64


def circuit(**dynamics):
    layers = [{"size": 5, "activation": "tanh"}, {"size": 4, "activation": "sigmoid"}, {"size": 3, "activation": "linear"}]
    dyn = {"tau_f": "1 ms", "tau_t": "1.5 ms", "dt": "0.25 ms", "forward_phase": "2 ms", "target_phase": "2 ms",
           "plasticity": {"rule": "dtp1", "eta": 0.5}, "record": {"layer1": ["h", "t"]}, **dynamics}
    return parse_circuit({"network": {"layers": layers}, "dynamics": dyn}, "<test>")


def build(c, **kw):
    net = Network(c, 4, with_feedback=True, seed=3)
    model = build_model(c, 4)
    return model, Brian2Engine(model, Parameters.from_network(net), **kw), Parameters.from_network(net)


def test_groups_run_the_models_equations_and_synapses_carry_the_couplings():
    import brian2

    model, eng, _ = build(circuit(relaxation="difference"))
    for name, pop in model.populations.items():
        text = str(eng.groups[name].equations)
        for line in pop.equations.splitlines():
            if not line.startswith("noise_"):  # the noise placeholders read the drawn tables
                lhs = line.split(":")[0].split("=")[0].strip()
                assert lhs.replace("d", "", 1).replace("/dt", "") in text or lhs in text, line
    # each coupling is a summed variable of the projection's Synapses, ordered by stage
    for c in model.couplings:
        S = eng.synapses[c.projection]
        side = "post" if c.direction == "post" else "pre"
        assert S.summed_updaters[f"{c.target}_{side}"].order == c.stage
    # nothing in the network is a Python operation except the steady check and the reader
    ops = [o for o in eng.net.objects if isinstance(o, brian2.NetworkOperation)]
    assert sorted(o.name for o in ops) == ["reader", "steady_check"]


@pytest.mark.parametrize("change, message", [
    ({"solver": "rk4"}, "euler or exponential_euler"),
    ({"plasticity": {"rule": "dtp1", "influence": True}}, "torch engine only"),
    ({"feedback_plasticity": {"rule": "inverse_loss"}}, "inverse_loss runs on the torch engine only"),
])
def test_what_brian2_cannot_run_is_refused(change, message):
    with pytest.raises(ConfigError, match=message):
        build(circuit(**change))


@pytest.mark.slow
def test_cython_target_agrees_with_torch():
    pytest.importorskip("Cython")
    c = circuit(relaxation="difference")
    model, eng, params = build(c, codegen="cython")
    te = TorchEngine(model, params)
    x, y = torch.rand(1, 4, dtype=D), torch.tensor([2])
    pb, pt = eng.present(x, y), te.present(x, y)
    torch.testing.assert_close(pb.traces[("layer1", "t")], pt.traces[("layer1", "t")], atol=1e-9, rtol=0)
    for l in (1, 2, 3):
        torch.testing.assert_close(eng.parameters().W[l], te.parameters().W[l], atol=1e-9, rtol=0)
