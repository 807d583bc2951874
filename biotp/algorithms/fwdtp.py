"""DTP with fixed random feedback weights (Shibuya et al. 2023, cited in seed 003 §2)."""

from .dtp import DTP


class FWDTP(DTP):
    """DTP's targets through feedback g_l = σ(V_l h_l + c_l) with V_l random and never trained."""

    name = "fwdtp"
    feedback_kind = "random"
