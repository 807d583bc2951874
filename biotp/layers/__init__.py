"""Forward layers f_l and their feedback g_l.

`build_layer(spec, in_shape)` builds the populations of a layer spec, `feedback_for(layer,
...)` the learned feedback pathway of a layer, `analytical_feedback(layer, options)` its
analytical feedback G* (seed 003), all by dispatch on type, so a new layer type registers
itself without touching the core (see `registry`).
"""

from .activations import ACTIVATIONS, activation, derivative, varsigma
from .conv import Conv, ConvFeedback, ConvTranspose
from .dense import Dense, DenseFeedback, DenseTranspose
from .init import initialise
from .local import LocalFeedback, LocallyConnected, LocalTranspose
from .mixer import MixerBlock, MixerMLP
from .norm import LayerNorm
from .pool import Flatten, GlobalAvgPool, MaxPool, unpool
from .registry import (AnalyticalFeedback, FeedbackOptions, analytical_feedback, build_layer, feedback_for,
                       linear_transpose)

__all__ = [
    "ACTIVATIONS", "AnalyticalFeedback", "Conv", "ConvFeedback", "ConvTranspose", "Dense", "DenseFeedback",
    "DenseTranspose", "FeedbackOptions", "Flatten", "GlobalAvgPool", "LayerNorm", "LocalFeedback",
    "LocalTranspose", "LocallyConnected", "MaxPool", "MixerBlock", "MixerMLP", "activation",
    "analytical_feedback", "build_layer", "derivative", "feedback_for", "initialise", "linear_transpose", "unpool",
    "varsigma",
]
