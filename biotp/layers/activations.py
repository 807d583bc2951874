"""Elementwise activations by name.  `sign` (±1: 1 if x > 0 else -1, as in Lee et al.'s code)
and `step` (1 if x > 0 else 0, seed 002 eq. 3.24 as printed) are the discrete transmissions of
seed 002 §3.3.2 (`layers.discrete`); their derivative is zero almost everywhere, which is why
backprop cannot cross them and target propagation can.

`leaky_relu` (slope 0.01 below zero) is seed 003's default: invertible, unlike GELU.

`varsigma(name, y)` is ς of seed 003 eq. 27, ς(y) = ∫ σ'(σ⁻¹(y)) dy: the activation's
analytical feedback, whose slope at y = σ(a) is σ'(a) (TJMC)."""

from dataclasses import dataclass
from typing import Callable

import torch
from torch.nn import functional as F

LEAK = 0.01


@dataclass(frozen=True)
class Activation:
    """One activation σ: its torch function, its slope σ'(a) written through the output
    h = σ(a), ς of seed 003 eq. 27, and (where the continuous-time model has it) its brian2
    expression text: σ({x}), σ' through {y}, and 1/σ' through {y} (0 where σ' = 0, the
    pseudo-inverse of the Gauss-Newton step; σ' kept above 1e-12 so a population at rest or
    in exact saturation gives a number, not inf).  `in_place` computes σ into its argument
    and `slope_in_place` σ' through h into h (no copies where no graph keeps them)."""

    f: Callable[[torch.Tensor], torch.Tensor]
    slope: Callable[[torch.Tensor], torch.Tensor]
    varsigma: Callable[[torch.Tensor], torch.Tensor]
    equation: str | None = None
    slope_equation: str | None = None
    inverse_slope_equation: str | None = None
    in_place: Callable[[torch.Tensor], torch.Tensor] | None = None
    slope_in_place: Callable[[torch.Tensor], torch.Tensor] | None = None


def _zero(h: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(h)


def _tanh_(a: torch.Tensor) -> torch.Tensor:
    """tanh into `a`.  On the CPU as 2σ(2a) - 1, which differs from torch.tanh by rounding
    (≤ 2e-7 in float32) and is about 3x faster there (torch's CPU tanh is a slow kernel, and
    the no-graph passes of the target rules apply it four times per layer and batch)."""
    if a.device.type != "cpu":
        return torch.tanh_(a)
    return torch.sigmoid_(a.mul_(2)).mul_(2).sub_(1)


# the one table of activations: circuit specs take their names from it, layers their
# functions, the continuous-time model (biotp.dynamics.equations) its expressions
ACTIVATIONS: dict[str, Activation] = {
    "tanh": Activation(torch.tanh, lambda h: 1 - h * h, lambda y: y - y**3 / 3,
                       "tanh({x})", "(1 - ({y})**2)", "1 / clip(1 - ({y})**2, 1e-12, inf)", _tanh_,
                       lambda h: h.mul_(h).neg_().add_(1)),
    "sigmoid": Activation(torch.sigmoid, lambda h: h * (1 - h), lambda y: y**2 / 2 - y**3 / 3,
                          "1 / (1 + exp(-({x})))", "(({y}) * (1 - ({y})))",
                          "1 / clip(({y}) * (1 - ({y})), 1e-12, inf)", torch.sigmoid_,
                          lambda h: h.addcmul_(h, h, value=-1)),
    "relu": Activation(torch.relu, lambda h: (h > 0).to(h.dtype), torch.relu,
                       "(({x}) + abs({x})) / 2", "sign({y})", "sign({y})", torch.relu_,
                       lambda h: h.sign_()),
    "linear": Activation(lambda a: a, torch.ones_like, lambda y: y, "({x})", "1", "1", lambda a: a, lambda h: h.fill_(1)),
    "sign": Activation(lambda a: (a > 0).to(a.dtype) * 2 - 1, _zero, _zero),
    "step": Activation(lambda a: (a > 0).to(a.dtype), _zero, _zero),
    "leaky_relu": Activation(lambda a: F.leaky_relu(a, LEAK),
                             lambda h: torch.where(h > 0, torch.ones_like(h), torch.full_like(h, LEAK)),
                             lambda y: F.leaky_relu(y, LEAK), in_place=lambda a: F.leaky_relu_(a, LEAK),
                             slope_in_place=lambda h: h.masked_fill_(h > 0, 1).masked_fill_(h != 1, LEAK)),
}
ACTIVATION_NAMES = tuple(ACTIVATIONS)


def activation(name: str):
    return ACTIVATIONS[name].f


def in_place(name: str):
    """The activation computed into its argument, or None where there is no such form."""
    return ACTIVATIONS[name].in_place


def apply(name: str, a: torch.Tensor) -> torch.Tensor:
    """act(a), computed into `a` where no graph keeps it (grad mode off) and the activation has
    an in-place form: the caller hands over `a`."""
    fast = in_place(name) if not torch.is_grad_enabled() else None
    return fast(a) if fast is not None else ACTIVATIONS[name].f(a)


def derivative_(name: str, h: torch.Tensor) -> torch.Tensor:
    """`derivative(name, h)` written into h, where the activation has that form (else a copy)."""
    fn = ACTIVATIONS[name].slope_in_place
    return fn(h) if fn is not None else ACTIVATIONS[name].slope(h)


def derivative(name: str, h: torch.Tensor) -> torch.Tensor:
    """f'(a) expressed through the output h = f(a): every activation here allows it."""
    return ACTIVATIONS[name].slope(h)


def varsigma(name: str, y: torch.Tensor) -> torch.Tensor:
    """ς(y) = ∫ σ'(σ⁻¹(y)) dy with ς(0) = 0 (seed 003 eqs. 26-27); ς'(y) = derivative(name, y)."""
    return ACTIVATIONS[name].varsigma(y)
