"""Simplified difference target propagation (Bartunov et al. 2018; seed 004 Algorithm 1)."""

from typing import Literal

from ..config import Spec
from .base import ALGORITHM_SPECS
from .dtp import DTP


@ALGORITHM_SPECS.register
class SDTPSpec(Spec):
    name: Literal["sdtp"]


class SDTP(DTP):
    """No gradient anywhere: ĥ_L = argmin L (the label), ĥ_{L-1} = h_{L-1} - g_L(h_L) + g_L(ĥ_L),
    and every inverse, g_L included, learns the de-noising loss ||h - g(f(h + ε))||²."""

    name = "sdtp"
    denoise = True

    def inverse_layers(self, L):
        return range(2, L + 1)

    def encode(self, l, h_prev):
        out = self.net.layers[l - 1](h_prev)
        return self.top_code(h_prev, out) if l == self.net.depth else out

    def top_code(self, h_prev, out):
        """What g_L reads from the output population: the class probabilities."""
        return self.loss.readout(out)

    def top_target(self, hs, y):
        g, h_prev = self.g(self.net.depth), hs[-2]
        code = self.top_code(h_prev, hs[-1])
        best = code.clone()
        best[:, : self.loss.n_classes] = self.loss.optimum(y, code.dtype)
        return h_prev - g(code) + g(best)
