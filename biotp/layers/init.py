"""Weight initialisation schemes (biases always start at zero)."""

import math
from dataclasses import dataclass
from typing import Literal

import torch

from ..config import PositiveFloat, Spec

INITS = ("orthogonal", "glorot", "farias", "normal")


class InitSpec(Spec):
    """Weight initialisation; biases start at zero.

    `farias` is seed 000 eqs. 9-10: N(0, 48/(35 N)) for the first layer, N(0, 16/(11 N))
    for the others, N the fan-in.  `normal` uses `std`.  `orthogonal` (seed 002 §3.3) and
    `glorot` scale by `gain`.
    """

    scheme: Literal[INITS] = "orthogonal"  # type: ignore[valid-type]
    gain: PositiveFloat = 1.0
    std: PositiveFloat = 0.01


@dataclass(frozen=True)
class MatrixStack:
    """P independent [out, in, ...] matrices held as one [P, out, in, ...] tensor (the untied
    filters of a locally connected layer, one bank per location), drawn in one batched call:
    a few large operations instead of P small ones, which matters most when threads compete
    for the cores."""

    data: torch.Tensor


def initialise(weight: "torch.Tensor | MatrixStack", spec: InitSpec, *, first: bool, generator: torch.Generator) -> None:
    """Fill `weight` ([out, in, ...], or a `MatrixStack` of such matrices) in place.

    orthogonal: seed 002 §3.3 ("initialized with orthogonal random matrices"), times `gain`:
                Haar-distributed orthonormal rows or columns (`haar_columns`).
    glorot:     uniform on ±gain·sqrt(6 / (fan_in + fan_out)).
    farias:     seed 000 eqs. 9-10: N(0, 48/(35 N)) in the first layer, N(0, 16/(11 N)) after.
    normal:     N(0, std²).
    """
    w = weight.data if isinstance(weight, MatrixStack) else weight.unsqueeze(0)  # [P, out, in, ...], a view
    fan_out, fan_in = w.shape[1], int(w[0, 0].numel())
    with torch.no_grad():
        if spec.scheme == "orthogonal":
            q = haar_columns(w.shape[0], max(fan_out, fan_in), min(fan_out, fan_in), generator)
            w.copy_((q if fan_out >= fan_in else q.mT).reshape(w.shape))
            if spec.gain != 1:
                w.mul_(spec.gain)
        elif spec.scheme == "glorot":
            bound = spec.gain * math.sqrt(6.0 / (fan_in + fan_out))
            w.copy_((torch.rand(w.shape, generator=generator, dtype=torch.float64) * 2 - 1) * bound)
        elif spec.scheme == "farias":
            var = (48.0 / 35.0 if first else 16.0 / 11.0) / fan_in
            w.copy_(torch.randn(w.shape, generator=generator, dtype=torch.float64) * math.sqrt(var))
        elif spec.scheme == "normal":
            w.copy_(torch.randn(w.shape, generator=generator, dtype=torch.float64) * spec.std)
        else:  # pragma: no cover - the schema forbids it
            raise ValueError(spec.scheme)


def haar_columns(p: int, m: int, n: int, generator: torch.Generator) -> torch.Tensor:
    """p independent m x n (m >= n) float64 matrices with orthonormal columns, Haar distributed:
    the Q of A = QR with diag(R) > 0, A with iid N(0, 1) entries (Mezzadri 2007, "How to generate
    random matrices from the classical compact groups").  Returns [p, m, n].

    A tall A (m >= 2n) is well conditioned (its singular values lie near √m ± √n, condition
    number about 6 or less), so Q = A R⁻¹ with R the Cholesky factor of AᵀA -- the same Q, the
    QR factorisation with positive diagonal being unique -- is accurate to ~1e-14 in float64
    and costs two matrix products instead of Householder QR's four passes.  Near-square A keeps
    Householder QR, with the signs of diag(R) moved into Q.
    """
    a = torch.randn(p, m, n, generator=generator, dtype=torch.float64)
    if m >= 2 * n:
        r = torch.linalg.cholesky(a.mT @ a, upper=True)
        return torch.linalg.solve_triangular(r, a, upper=True, left=False)
    q, r = torch.linalg.qr(a)
    return q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1)).unsqueeze(-2)
