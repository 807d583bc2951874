"""Difference target propagation (Lee et al. 2015; seed 002 Algorithm 1, eq. 3.15)."""

from typing import Literal

import torch
from pydantic import Field

from ..config import PositiveFloat, Spec
from .base import ALGORITHM_SPECS
from .tp import TP


@ALGORITHM_SPECS.register
class DTPSpec(Spec):
    name: Literal["dtp"]
    eta_hat: PositiveFloat = Field(0.1, description="step of the penultimate target, seed 002 eq. 3.7")


class DTP(TP):
    """ĥ_{l-1} = h_{l-1} + g_l(ĥ_l) - g_l(h_l): the difference correction makes ĥ_{l-1} = h_{l-1}
    whenever ĥ_l = h_l, however imperfect g_l is.  Penultimate target and noise-preserving
    inverse loss as in `tp`."""

    name = "dtp"

    def propagate(self, l, hs, t_l):
        # g_l of target and activity in one call: one matrix product instead of two
        g_t, g_h = self.g(l)(torch.cat([t_l, hs[l]])).chunk(2)
        return hs[l - 1] + g_t - g_h
