"""Fixed-step integrators: tiny classes with an `order` and a `step`.

The state is a dict of dicts of tensors ({"t": {1: ..., 2: ...}, "W": {...}}); a vector
field is a function `field(y, *args) -> dy/dt` of the same structure, taking its
parameters as explicit arguments.  `step` returns (y_next, dy/dt at y) -- the second is
the rate used for the steady-state test.
"""

from __future__ import annotations

import math

import torch


def _axpy(y: dict, k: dict, a: float) -> dict:
    """y + a k, leafwise, over the keys of k (keys of y absent from k are carried)."""
    out = {}
    for name, part in y.items():
        if name in k:
            out[name] = {l: part[l] + a * k[name][l] if l in k[name] else part[l] for l in part}
        else:
            out[name] = part
    return out


class Euler:
    """y_{n+1} = y_n + dt f(y_n)."""

    order = 1

    def step(self, field, y, dt, *args):
        k1 = field(y, *args)
        return _axpy(y, k1, dt), k1


class RK4:
    """The classical fourth-order Runge-Kutta step."""

    order = 4

    def step(self, field, y, dt, *args):
        k1 = field(y, *args)
        k2 = field(_axpy(y, k1, dt / 2), *args)
        k3 = field(_axpy(y, k2, dt / 2), *args)
        k4 = field(_axpy(y, k3, dt), *args)
        comb = {n: {l: (k1[n][l] + 2 * k2[n][l] + 2 * k3[n][l] + k4[n][l]) / 6 for l in k1[n]} for n in k1}
        return _axpy(y, comb, dt), k1


def phi1(z):
    """φ1(z) = (e^z - 1)/z, 1 at z = 0 (a number or a tensor)."""
    if not torch.is_tensor(z):
        return math.expm1(z) / z if z else 1.0
    small = z.abs() < 1e-6
    return torch.where(small, 1 + z / 2, torch.expm1(z) / torch.where(small, torch.ones_like(z), z))


class ExponentialEuler:
    """Exponential Euler for conditionally linear equations: each variable's rate is
    f = A y + B with A and B frozen over the step (A, the coefficient of the variable in
    its own rate, from `linear(y)` after the field's evaluation at y), so

        y_{n+1} = e^{A dt} y_n + (e^{A dt} - 1) B/A = y_n + dt φ1(A dt) f(y_n),

    exact for the leak at any dt (brian2's `exponential_euler`, written so that A = 0, a
    gated-off variable, is Euler)."""

    order = 1

    def __init__(self, linear):
        self.linear = linear

    def step(self, field, y, dt):
        k = field(y)
        A = self.linear(y)
        scaled = {n: {v: k[n][v] * phi1(A[n][v] * dt) if v in A.get(n, {}) else k[n][v] for v in k[n]} for n in k}
        return _axpy(y, scaled, dt), k


SOLVERS = {"euler": Euler, "rk4": RK4, "exponential_euler": ExponentialEuler}


class BogackiShampine:
    """The embedded Runge-Kutta 3(2) pair of Bogacki & Shampine (1989), with a step size per
    example: `h` is a [batch, 1] tensor, every leaf of y is [batch, n].  Returns the
    third-order solution, the stages (rates) and the per-leaf error estimate y3 - y2; the
    caller's controller accepts or rejects each example's step (`Adaptive`)."""

    order = 3
    c = (0.0, 0.5, 0.75, 1.0)
    a = ((), (0.5,), (0.0, 0.75), (2 / 9, 1 / 3, 4 / 9))
    b = (2 / 9, 1 / 3, 4 / 9, 0.0)
    b_low = (7 / 24, 1 / 4, 1 / 3, 1 / 8)

    def step(self, field, y, h):
        ks = []
        for i in range(4):
            yi = y
            for j, aij in enumerate(self.a[i]):
                if aij:
                    yi = _axpy(yi, ks[j], h * aij)
            ks.append(field(yi))
        y3 = y
        for bi, k in zip(self.b[:3], ks[:3]):
            y3 = _axpy(y3, k, h * bi)
        err = {n: {l: h * sum((b - bl) * k[n][l] for b, bl, k in zip(self.b, self.b_low, ks)) for l in ks[0][n]}
               for n in ks[0]}
        return y3, ks, err


SOLVERS["adaptive"] = BogackiShampine
