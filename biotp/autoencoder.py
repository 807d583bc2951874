"""Auto-encoders: circuits whose output population reconstructs the clean input
(`autoencoder:` block of the circuit, `loss: mse`).

The denoising auto-encoder of seed 002 §3.2.4 (Lee et al. 2015):

    h = f(x) = sig(W x + b)                                  (eq. 3.20)
    z = g(h) = sig(Wᵀ(h + ε) + c),  ε ~ N(0, σ)              (eq. 3.21)
    L = ||z - x||² + ||f(x + ε) - h||²                       (eq. 3.22)

trained by DTP without the chain rule: the decoder g learns L_g = ||g(h) - x||² with h held
constant; the encoder, which is g's approximate inverse, gives the hidden target

    ĥ = h + f(x̂) - f(z) = 2h - f(z),  x̂ = x                  (eq. 3.23)

and f learns L_f = ||f(x + ε) - ĥ||² with ĥ held constant.  `EncoderInverseDTP` is this rule,
written for any depth: population L-1 gets ĥ_{L-1} = h_{L-1} + f_1(x) - f_1(z) and the
populations below it DTP's difference targets through learned inverses (seed 002 eq. 3.15).

Every other rule (bp, dtp with its gradient step, sdtp, ...) trains an auto-encoder as it
trains a classifier, with the clean input as its target; Bartunov et al.'s
784-512-64-512-784 (seed 004 §5.5) is such a circuit.
"""

from __future__ import annotations

from typing import final

import torch
from torch import nn

from .algorithms.base import Algorithm
from .algorithms.dtp import DTP
from .algorithms.propagation import TargetPropagation
from .errors import ConfigError
from .layers import Dense

TARGETLESS_RULES = ("bp", "fa", "dfa")  # no targets, so `top_target` does not concern them


class TiedDense(Dense):
    """A decoder population act(Wᵀ h + c) whose weight is the transpose of its mirror encoder
    layer's W (seed 002 eq. 3.21): one matrix, trained through both layers.  W is registered
    once, under the encoder; the decoder owns only its bias c."""

    def __init__(self, encoder: Dense, act: str, bias: bool = True, transmit=None):
        super().__init__(encoder.n_out, encoder.n_in, act, bias, transmit)
        del self._parameters["weight"]  # Dense's own W: this layer reads the encoder's
        self._encoder = (encoder,)  # a tuple, not a submodule: W must not be registered twice

    @classmethod
    def mirroring(cls, decoder: Dense, encoder: Dense) -> "TiedDense":
        """The tied layer to put in place of a built `decoder`, keeping everything else it
        carries: activation, transmission, shapes and its bias parameter."""
        tied = cls(encoder, decoder.act_name, decoder.bias is not None, decoder.transmit)
        tied.in_shape, tied.out_shape = decoder.in_shape, decoder.out_shape
        if decoder.bias is not None:
            tied.bias = decoder.bias
        return tied

    @property
    def weight(self) -> torch.Tensor:
        return self._encoder[0].weight.T

    def weight_matrices(self) -> list[torch.Tensor]:
        return []  # initialised as the encoder's

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, weight tied to the encoder's transpose"


def tie(net, source: str) -> None:
    """Decoder layer L+1-k takes the transpose of encoder layer k's weight, k = 1..L//2."""
    L = net.depth
    for k in range(1, L // 2 + 1):
        enc, dec = net.layers[k - 1], net.layers[L - k]
        if not (type(enc) is Dense and type(dec) is Dense and (dec.n_in, dec.n_out) == (enc.n_out, enc.n_in)):
            raise ConfigError(
                f"{source}: autoencoder.tied: layer {L + 1 - k} must be a dense layer mirroring layer {k} "
                f"(weights [{getattr(enc, 'n_in', '?')} x {getattr(enc, 'n_out', '?')}] transposed); "
                f"got {dec} after {enc}"
            )
        net.layers[L - k] = TiedDense.mirroring(dec, enc)


class HiddenNoise:
    """Forward pre-hook adding ε ~ N(0, σ²) to a population's input while training (eq. 3.21)."""

    def __init__(self, sigma: float):
        self.sigma = sigma

    def __call__(self, module: nn.Module, args: tuple) -> tuple | None:
        if not module.training:
            return None
        h, *rest = args
        return (h + self.sigma * torch.randn_like(h), *rest)


@final
class EncoderInverseDTP(TargetPropagation):
    """DTP on an auto-encoder with the encoder as the decoder's inverse (seed 002 §3.2.4).

    `grads(x, y)` gets the corrupted input x̃ as `x` and the clean input as `y`.  Activities
    and targets come from the clean pass (z with the hidden noise of eq. 3.21); the layer
    losses of populations below the output read the corrupted pass:
      L_L = ||z - x||² with h_{L-1} constant (L_g);
      ĥ_{L-1} = h_{L-1} + f_1(x) - f_1(z) (eq. 3.23), lower ĥ_l by eq. 3.15;
      L_l = ||f_l(h̃_{l-1}) - ĥ_l||², h̃ the corrupted pass (L_f = ||f(x + ε) - ĥ||²);
      inverses g_l, l = 2..L-1, by DTP's noise-preserving loss (eq. 3.13).
    """

    name = "dtp"

    def activities(self, x, y):
        hs = self.net(y, local=True)
        return hs, (hs if x is y else self.net(x, local=True))

    def top_target(self, hs, y):
        """ĥ_{L-1} = h_{L-1} + f_1(ĥ_L) - f_1(h_L), ĥ_L = x (eq. 3.23)."""
        f1, shape = self.net.layers[0], self.net.input_shape
        both = torch.cat([y, hs[-1].flatten(1)]).reshape(-1, *shape)  # one call for target and activity
        f_target, f_out = f1(both).chunk(2)
        return hs[-2] + f_target.reshape(hs[-2].shape) - f_out.reshape(hs[-2].shape)


def prepare(circuit, net, cls: type[Algorithm]) -> type[Algorithm]:
    """Apply the circuit's `autoencoder` block to a freshly built network; return the rule class."""
    ae, source = circuit.autoencoder, circuit.source or "<circuit>"
    if ae.tied:
        tie(net, source)
    if ae.hidden_noise > 0:
        net.layers[-1].register_forward_pre_hook(HiddenNoise(ae.hidden_noise))
    if ae.top_target == "rule" or cls.name in TARGETLESS_RULES:
        return cls
    if cls is not DTP:
        raise ConfigError(
            f"{source}: autoencoder.top_target: 'encoder' is DTP's auto-encoder target (seed 002 eq. 3.23), "
            f"not defined for {cls.name}; use algorithm dtp, or top_target: rule"
        )
    if net.depth < 2 or net.shapes[1] != net.shapes[-2]:
        raise ConfigError(
            f"{source}: autoencoder.top_target: 'encoder' needs population L-1 shaped like population 1 "
            f"(the encoder's output), got {net.shapes[-2]} and {net.shapes[1]}"
        )
    del net.feedback[str(net.depth)]  # the encoder is g_L
    return EncoderInverseDTP


def reconstruction_mse(z: torch.Tensor, x: torch.Tensor) -> float:
    """Mean over examples and units of (z - x)²."""
    return float(((z.flatten(1) - x.flatten(1)) ** 2).mean())
