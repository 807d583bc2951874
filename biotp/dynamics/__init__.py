"""The continuous-time model as data: the `dynamics:` spec (`spec`), quantities with units
(`units`), the equation catalogue (`equations`: activations, the relaxation registry, the
plasticity factors), the model built from a circuit (`model`: populations, projections,
couplings, events) and its discrete counterpart (`reference`).  Engines (`biotp.engines`)
compile the model; nothing here runs it."""

from .spec import DynamicsSpec
from .units import parse_quantity

__all__ = ["DynamicsSpec", "parse_quantity"]
