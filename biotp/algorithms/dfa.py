"""Direct feedback alignment (Nøkland 2016; seed 004 §2.1.1): the output error e = ∂L/∂a_L is
sent straight to every hidden layer through a fixed random B_l, projected to the shape of the
layer's output (units, or channels x positions of a convolutional or locally connected map)."""

import math
from typing import Literal, final

import torch

from ..config import Spec
from ..errors import ConfigError
from ..layers import Dense
from .base import ALGORITHM_SPECS, Algorithm, Step
from .fa import has_weights


@ALGORITHM_SPECS.register
class DFASpec(Spec):
    name: Literal["dfa"]


@final
class DFA(Algorithm):
    """δ_l = (e B_l) reshaped to h_l, taken back through layer l's own activation (and pooling)
    to its weights, for every weighted hidden layer;  the output layer follows the true gradient.
    Parameter-free layers need no feedback: nothing in them learns."""

    name = "dfa"
    feedback_kind = "random"

    def __init__(self, circuit, net, loss):
        super().__init__(circuit, net, loss)
        if not isinstance(net.layers[-1], Dense):
            raise ConfigError(
                f"{circuit.source or '<circuit>'}: network.layers: dfa sends the error of a dense output layer; "
                f"the last layer is {type(net.layers[-1]).__name__}"
            )
        g = torch.Generator().manual_seed(circuit.seed + 1)
        n_out = math.prod(net.shapes[-1])
        for l, layer in enumerate(net.layers[:-1], start=1):
            if has_weights(layer):
                self.fixed_random(f"B{l}", (n_out, math.prod(net.shapes[l])), n_out, g)

    def grads(self, x, y, *, forward=True, feedback=True):
        hs = self.net(x, local=True)
        out = hs[-1]
        loss = self.loss(out, y)
        if forward:
            top = self.net.layers[-1]
            (e,) = torch.autograd.grad(loss, out, retain_graph=True)
            e = e * top.derivative(out.detach())
            # Σ_l <h_l, e B_l>: its gradient through the local graph of layer l is e B_l taken
            # back through f_l's own activation (and pooling) to W_l, i.e. exactly the DFA update.
            surrogate = loss
            for l, h in enumerate(hs[1:-1], start=1):
                B = getattr(self, f"B{l}", None)
                if B is not None:
                    surrogate = surrogate + (h * (e.flatten(1) @ B).reshape(h.shape)).sum()
            surrogate.backward()
        return Step(loss.detach(), out.detach())
