"""Optimisers: each spec (a circuit's `optimizer:` and `feedback.optimizer:` blocks) beside
the torch optimiser it configures; every field of a spec is passed on to it."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

import torch
from pydantic import Field

from .config import Bool, Float, NonNegativeFloat, PositiveFloat, Registry, Spec

# optimiser specs by `name`
OPTIMIZER_SPECS = Registry("optimizer", "name")


class OptimizerSpec(Spec):
    """The base of every optimiser spec: `torch_class` is the optimiser it configures."""

    torch_class: ClassVar[type[torch.optim.Optimizer]]


@OPTIMIZER_SPECS.register
class SGDSpec(OptimizerSpec):
    torch_class = torch.optim.SGD
    name: Literal["sgd"]
    lr: PositiveFloat
    momentum: NonNegativeFloat = 0.0
    dampening: NonNegativeFloat = 0.0
    nesterov: Bool = False
    weight_decay: NonNegativeFloat = 0.0


@OPTIMIZER_SPECS.register
class RMSpropSpec(OptimizerSpec):
    torch_class = torch.optim.RMSprop
    name: Literal["rmsprop"]
    lr: PositiveFloat
    alpha: Float = Field(0.99, gt=0, lt=1)
    eps: PositiveFloat = 1e-8
    momentum: NonNegativeFloat = 0.0
    centered: Bool = False
    weight_decay: NonNegativeFloat = 0.0


@OPTIMIZER_SPECS.register
class AdamSpec(OptimizerSpec):
    torch_class = torch.optim.Adam
    name: Literal["adam"]
    lr: PositiveFloat
    betas: tuple[Annotated[Float, Field(ge=0, lt=1)], Annotated[Float, Field(ge=0, lt=1)]] = (0.9, 0.999)
    eps: PositiveFloat = 1e-8
    weight_decay: NonNegativeFloat = 0.0
    amsgrad: Bool = False


def make_optimizer(spec: OptimizerSpec, params) -> torch.optim.Optimizer | None:
    """A torch optimiser from an optimiser spec (every field of the spec is passed on); None
    without parameters to train."""
    params = list(params)
    if not params:
        return None
    kwargs = spec.model_dump(exclude={"name"})
    kwargs.setdefault("foreach", True)  # multi-tensor updates on the CPU too (torch's default only on GPUs)
    return spec.torch_class(params, **kwargs)
