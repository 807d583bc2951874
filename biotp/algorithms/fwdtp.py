"""DTP with fixed random feedback weights (Shibuya et al. 2023, cited in seed 003 §2)."""

from typing import Literal, final

from ..config import PositiveFloat, Spec
from .base import ALGORITHM_SPECS
from .propagation import TargetPropagation


@ALGORITHM_SPECS.register
class FWDTPSpec(Spec):
    name: Literal["fwdtp"]
    eta_hat: PositiveFloat = 0.1


@final
class FWDTP(TargetPropagation):
    """DTP's targets through feedback g_l = σ(V_l h_l + c_l) with V_l random and never trained."""

    name = "fwdtp"
    feedback_kind = "random"
