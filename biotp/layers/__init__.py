"""Forward layers f_l and their feedback g_l.

`feedback_for(layer, ...)` builds the feedback pathway of a layer by dispatch on its type,
so a new layer type registers its inverse without touching the core.
"""

from functools import singledispatch

from .activations import ACTIVATIONS, activation, derivative
from .dense import Dense, DenseFeedback
from .init import initialise


@singledispatch
def feedback_for(layer, act: str):
    """The approximate-inverse module g_l for forward layer `layer`, ending in `act`."""
    raise TypeError(f"no feedback pathway is registered for layer type {type(layer).__name__}")


@feedback_for.register
def _(layer: Dense, act: str):
    return DenseFeedback(layer.n_out, layer.n_in, act)


__all__ = ["ACTIVATIONS", "Dense", "DenseFeedback", "activation", "derivative", "feedback_for", "initialise"]
