"""The continuous-time model as data: units, the `dynamics:` spec, and the equations
(`model`) that both engines compile."""

from .spec import DynamicsSpec
from .units import parse_quantity

__all__ = ["DynamicsSpec", "parse_quantity"]
