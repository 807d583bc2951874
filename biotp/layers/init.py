"""Weight initialisation schemes (biases always start at zero)."""

import math

import torch

from ..circuit import InitSpec


def initialise(weight: torch.Tensor, spec: InitSpec, *, first: bool, generator: torch.Generator) -> None:
    """Fill `weight` ([out, in]) in place.

    orthogonal: seed 002 §3.3 ("initialized with orthogonal random matrices"), times `gain`.
    glorot:     uniform on ±gain·sqrt(6 / (fan_in + fan_out)).
    farias:     seed 000 eqs. 9-10: N(0, 48/(35 N)) in the first layer, N(0, 16/(11 N)) after.
    normal:     N(0, std²).
    """
    fan_out, fan_in = weight.shape[0], int(weight[0].numel())
    with torch.no_grad():
        if spec.scheme == "orthogonal":
            rows, cols = fan_out, fan_in
            a = torch.randn(max(rows, cols), min(rows, cols), generator=generator, dtype=torch.float64)
            q, r = torch.linalg.qr(a)
            q = q * torch.sign(torch.diagonal(r))  # uniform (Haar) distribution
            q = q if rows >= cols else q.T
            weight.copy_((spec.gain * q).reshape(weight.shape))
        elif spec.scheme == "glorot":
            bound = spec.gain * math.sqrt(6.0 / (fan_in + fan_out))
            weight.copy_((torch.rand(weight.shape, generator=generator, dtype=torch.float64) * 2 - 1) * bound)
        elif spec.scheme == "farias":
            var = (48.0 / 35.0 if first else 16.0 / 11.0) / fan_in
            weight.copy_(torch.randn(weight.shape, generator=generator, dtype=torch.float64) * math.sqrt(var))
        elif spec.scheme == "normal":
            weight.copy_(torch.randn(weight.shape, generator=generator, dtype=torch.float64) * spec.std)
        else:  # pragma: no cover - the schema forbids it
            raise ValueError(spec.scheme)
