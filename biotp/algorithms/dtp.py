"""Difference target propagation (Lee et al. 2015; seed 002 Algorithm 1, eq. 3.15)."""

import torch

from .tp import TP


class DTP(TP):
    """ĥ_{l-1} = h_{l-1} + g_l(ĥ_l) - g_l(h_l): the difference correction makes ĥ_{l-1} = h_{l-1}
    whenever ĥ_l = h_l, however imperfect g_l is.  Penultimate target and noise-preserving
    inverse loss as in `tp`."""

    name = "dtp"

    def propagate(self, l, hs, t_l):
        # g_l of target and activity in one call: one matrix product instead of two
        g_t, g_h = self.g(l)(torch.cat([t_l, hs[l]])).chunk(2)
        return hs[l - 1] + g_t - g_h
