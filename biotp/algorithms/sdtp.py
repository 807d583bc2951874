"""Simplified difference target propagation (Bartunov et al. 2018; seed 004 Algorithm 1)."""

from typing import Literal, final

from ..config import Spec
from .base import ALGORITHM_SPECS
from .propagation import TargetPropagation


@ALGORITHM_SPECS.register
class SDTPSpec(Spec):
    name: Literal["sdtp"]


@final
class SDTP(TargetPropagation):
    """No gradient anywhere: ĥ_L = argmin L (the label), ĥ_{L-1} = h_{L-1} - g_L(h_L) + g_L(ĥ_L),
    difference targets below (seed 004 Algorithm 1), and every inverse, g_L included, learns
    the de-noising loss ||h - g(f(h + ε))||²."""

    name = "sdtp"
    top = "label"
    denoise = True
