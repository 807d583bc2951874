"""Engines compile a circuit's dynamics (`biotp.dynamics.model`) and run it: `torch`
(batched, Euler/RK4, CPU or CUDA) and `brian2` (NeuronGroups, unit-checked equations)."""

from .integrators import RK4, SOLVERS, Euler

__all__ = ["Euler", "RK4", "SOLVERS"]
