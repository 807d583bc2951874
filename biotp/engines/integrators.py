"""Fixed-step integrators: tiny classes with an `order` and a `step`.

The state is a dict of dicts of tensors ({"t": {1: ..., 2: ...}, "W": {...}}); a vector
field is a function `field(y, *args) -> dy/dt` of the same structure, taking its
parameters as explicit arguments.  `step` returns (y_next, dy/dt at y) -- the second is
the rate used for the steady-state test.
"""

from __future__ import annotations


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


SOLVERS = {"euler": Euler, "rk4": RK4}
