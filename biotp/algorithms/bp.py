"""Backpropagation: the exact gradient of the global loss, the baseline of every table."""

from typing import Literal, final

from ..config import Spec
from .base import ALGORITHM_SPECS, Algorithm, Step


@ALGORITHM_SPECS.register
class BPSpec(Spec):
    name: Literal["bp"]


@final
class BP(Algorithm):
    name = "bp"
    supports_transmission = True

    def grads(self, x, y, *, forward=True, feedback=True):
        out = self.net(x)[-1]
        loss = self.loss(out, y)
        if forward:
            loss.backward()
        return Step(loss.detach(), out.detach())
