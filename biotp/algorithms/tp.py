"""Vanilla target propagation (Bengio 2014; seed 002 §3.1, eqs. 3.7, 3.9)."""

from typing import Literal, final

from ..config import PositiveFloat, Spec
from .base import ALGORITHM_SPECS
from .propagation import TargetPropagation


@ALGORITHM_SPECS.register
class TPSpec(Spec):
    """Vanilla target propagation; the penultimate target is a gradient step (seed 002 eq. 3.7)."""

    name: Literal["tp"]
    eta_hat: PositiveFloat = 0.1


@final
class TP(TargetPropagation):
    """ĥ_{l-1} = g_l(ĥ_l) (seed 002 eq. 3.9); ĥ_{L-1} = h_{L-1} - η̂ ∂L/∂h_{L-1} (seed 002
    eq. 3.7 at the penultimate layer, §3.3); g_l learns the noise-preserving inverse loss."""

    name = "tp"
    difference = False
