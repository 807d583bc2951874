"""Difference target propagation (Lee et al. 2015; seed 002 Algorithm 1, eq. 3.15)."""

from typing import Literal, final

from pydantic import Field

from ..config import PositiveFloat, Spec
from .base import ALGORITHM_SPECS
from .propagation import TargetPropagation


@ALGORITHM_SPECS.register
class DTPSpec(Spec):
    name: Literal["dtp"]
    eta_hat: PositiveFloat = Field(0.1, description="step of the penultimate target, seed 002 eq. 3.7")


@final
class DTP(TargetPropagation):
    """ĥ_{l-1} = h_{l-1} + g_l(ĥ_l) - g_l(h_l) (seed 002 eq. 3.15): the difference correction
    makes ĥ_{l-1} = h_{l-1} whenever ĥ_l = h_l, however imperfect g_l is.  Penultimate target
    ĥ_{L-1} = h_{L-1} - η̂ ∂L/∂h_{L-1} (eq. 3.7), noise-preserving inverse loss (eq. 3.13)."""

    name = "dtp"
