"""Discrete and stochastic transmission between populations (seed 002 §3.3.2, §3.3.3).

A dense population l with a transmission q computes f_l(h) = act(W_l q(h) + b_l): the
population below stays continuous (it carries a target), but what crosses the connection is
q(h_{l-1}):

- `sign`: ±1 (eq. 3.24; sign(h) = 1 if h > 0 else -1, as in Lee et al.'s released code; the
  printed text's 0/1 version is `step`, the same function class up to W, b: sign = 2 step - 1);
- `step`: 0/1 (eq. 3.24 as printed);
- `bernoulli`: 1 with probability h, else 0 (eq. 3.28: h_l is h^p_l = σ(W_l h_{l-1}), the
  population's firing probability; the next layer reads a sample).  Probabilities outside
  [0, 1] (an activity plus the inverse loss's noise, eq. 3.31) are clipped.

The quantised value is exact (±1, 0/1).  Backprop sees its exact derivative, zero, unless
the transmission is `straight_through` (Bengio et al. 2013; eq. 3.29), which passes the
gradient unchanged.  DTP never differentiates through a transmission below the top layer:
its layer losses are local (eq. 3.5).

The feedback g_l crosses the same connection downwards: a deterministic transmission
quantises g_l's input too (eq. 3.26, g_2(h_2) = tanh(V_2 sign(h_2))); a stochastic one does not
(eq. 3.30, g_l(h^p_l) = tanh(V_l h^p_l) reads the probability).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn

from .activations import activation


class _StraightThrough(torch.autograd.Function):
    """q(h) forward, the identity backward (the straight-through estimator)."""

    @staticmethod
    def forward(ctx, h, quantise):
        return quantise(h)

    @staticmethod
    def backward(ctx, grad):
        return grad, None


class Transmission(nn.Module):
    """q: h_{l-1} -> what layer l reads.  Subclasses define `quantise` (no gradient)."""

    kind: str

    def __init__(self, straight_through: bool = False):
        super().__init__()
        self.straight_through = straight_through

    def quantise(self, h: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if self.straight_through and torch.is_grad_enabled() and h.requires_grad:
            return _StraightThrough.apply(h, self.quantise)
        return self.quantise(h.detach())

    def feedback(self) -> Transmission | None:
        """The transmission of g_l's input over the same connection."""
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"{self.kind}{', straight-through' if self.straight_through else ''}"


class Quantise(Transmission):
    """sign (±1) or step (0/1), eq. 3.24; g_l's input is quantised the same way (eq. 3.26)."""

    def __init__(self, kind: str, straight_through: bool = False):
        super().__init__(straight_through)
        self.kind, self.fn = kind, activation(kind)

    def quantise(self, h):
        return self.fn(h)

    def feedback(self):
        return Quantise(self.kind, self.straight_through)


class Bernoulli(Transmission):
    """s ~ Bernoulli(h), s = [u < h] with u ~ U[0, 1) from torch's global generator (so seeding
    and checkpointed RNG state reproduce it), eq. 3.28.

    Inside `same_samples(module)` the last draw is reused when the shape matches: DTP's top
    target ĥ^p_{L-1} = h^p_{L-1} - η̂ ∂L/∂h_{L-1} differentiates the loss at the very sample
    the forward pass read (eq. 3.30), not at a new one."""

    kind = "bernoulli"

    def __init__(self, straight_through: bool = False):
        super().__init__(straight_through)
        self.replay = False
        self._u: torch.Tensor | None = None

    def quantise(self, h):
        u = self._u
        if not (self.replay and u is not None and u.shape == h.shape and u.device == h.device):
            u = self._u = torch.rand(h.shape, dtype=h.dtype, device=h.device)
        return (u < h).to(h.dtype)

    def feedback(self):
        return None


def transmission(kind: str, straight_through: bool = False) -> Transmission | None:
    """The transmission a layer spec names (None for `identity`)."""
    if kind == "identity":
        return None
    if kind == "bernoulli":
        return Bernoulli(straight_through)
    return Quantise(kind, straight_through)


def is_stochastic(module: nn.Module) -> bool:
    return any(isinstance(m, Bernoulli) for m in module.modules())


@contextmanager
def same_samples(module: nn.Module):
    """Stochastic transmissions in `module` reuse their last samples while inside."""
    found = [m for m in module.modules() if isinstance(m, Bernoulli)]
    for m in found:
        m.replay = True
    try:
        yield
    finally:
        for m in found:
            m.replay = False


def transmitting_layers(net) -> list[tuple[int, str]]:
    """(l, kind) for every forward layer of `net` (a `biotp.network.Network`) with a transmission."""
    return [(l, t.kind) for l, layer in enumerate(net.layers, start=1)
            if isinstance(t := getattr(layer, "transmit", None), Transmission)]


@torch.no_grad()
def sample_average(net, x: torch.Tensor, samples: int, readout) -> torch.Tensor:
    """(1/M) Σ_m readout(h_L^(m)) over M = `samples` passes of `net` on x (seed 002 §3.3.3,
    Table 3.1: M = 100 at test time).  The deterministic layers below the first stochastic one
    run once; the passes above it draw in the same order as M calls of `net(x)`."""
    first = next((i for i, layer in enumerate(net.layers) if is_stochastic(layer)), len(net.layers))
    h = x.reshape(x.shape[0], *net.shapes[0])
    for layer in net.layers[:first]:
        h = layer(h)
    total = None
    for _ in range(samples):
        out = h
        for layer in net.layers[first:]:
            out = layer(out)
        p = readout(out)
        total = p if total is None else total + p
    return total / samples
