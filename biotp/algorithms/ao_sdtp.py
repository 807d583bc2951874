"""Auxiliary-output SDTP (Bartunov et al. 2018; seed 004 §2.1, eq. 3)."""

from typing import Literal, final

import torch

from ..config import PositiveInt, Spec
from ..layers import DenseFeedback, initialise
from ..layers.activations import apply
from ..layers.registry import ActivationName
from .base import ALGORITHM_SPECS
from .propagation import TargetPropagation


@ALGORITHM_SPECS.register
class AOSDTPSpec(Spec):
    name: Literal["ao_sdtp"]
    aux_units: PositiveInt = 512
    aux_activation: ActivationName = "tanh"


@final
class AOSDTP(TargetPropagation):
    """SDTP whose g_L reads [o, z], z = σ(R h_{L-1}) fixed random features (R is never
    trained): ĥ_{L-1} = h_{L-1} - g_L(o, z) + g_L(ô, z) (seed 004 eq. 3)."""

    name = "ao_sdtp"
    top = "label"
    denoise = True

    def __init__(self, circuit, net, loss):
        super().__init__(circuit, net, loss)
        n_prev, n_aux = net.layers[-2].n_out, self.spec.aux_units
        g = torch.Generator().manual_seed(circuit.seed + 2)
        self.register_buffer("R", torch.randn(n_aux, n_prev, generator=g) / n_prev**0.5)
        top = DenseFeedback(loss.n_classes + n_aux, n_prev, net.feedback[str(net.depth)].act_name)
        initialise(top.weight, circuit.feedback.init, first=False, generator=g)
        net.feedback[str(net.depth)] = top

    def feedback_map(self, l):
        """g_L reads the code [o, z], not h_L alone: it is no map of h_L."""
        return None if l == self.net.depth else super().feedback_map(l)

    def top_code(self, h_prev, out):
        return torch.cat([self.loss.readout(out), apply(self.spec.aux_activation, h_prev @ self.R.T)], 1)
