"""Units in the continuous-time model's equations: a user's constants as brian2 quantities
and brian2's check of the equations' units.  Quantities in circuit files (`Time`,
`Frequency`, `parse_quantity`) are read by `biotp.config.units`."""

from __future__ import annotations

from ..config.errors import ConfigError
from ..config.units import _FORM, Frequency, Time, parse_quantity

__all__ = ["Frequency", "Time", "brian2_namespace", "check_units", "parse_parameter", "parse_quantity"]


def parse_parameter(value, where: str) -> tuple[float, str]:
    """A constant of a user's equations: a number (dimensionless) or a quantity text such as
    '50 ms' or '0.5 Hz', as (value in SI units, the SI unit's name in brian2)."""
    import brian2

    if isinstance(value, bool):
        raise ConfigError(f"{where}: {value!r}: expected a number or a quantity such as '50 ms', not a bool")
    if isinstance(value, (int, float)):
        return float(value), "1"
    m = _FORM.match(str(value))
    unit = getattr(brian2, m.group(3), None) if m and m.group(3) and not m.group(2) else None
    if m is None or (m.group(3) and not isinstance(unit, brian2.Unit)):
        raise ConfigError(f"{where}: {value!r}: expected a number or a quantity such as '50 ms' (brian2's units)")
    if unit is None:
        return float(m.group(1)), "1"
    quantity = float(m.group(1)) * unit
    return float(quantity / brian2.get_unit(quantity.dim)), repr(brian2.get_unit(quantity.dim))


def brian2_namespace(constants: dict) -> dict:
    """{name: brian2 Quantity} of (SI value, unit name) pairs."""
    import brian2

    return {name: value * (eval(unit, vars(brian2)) if unit != "1" else 1.0) for name, (value, unit) in constants.items()}


def check_units(model, where: str) -> None:
    """brian2 checks every population's equations for units, as it will when it runs them;
    a mismatch is a ConfigError naming the population and the equation."""
    import brian2
    from brian2.equations.equations import EquationError
    from brian2.units.fundamentalunits import DimensionMismatchError

    for pop in model.populations.values():
        namespace = brian2_namespace({**model.constants, **pop.parameters})
        try:
            eqs = brian2.Equations(pop.equations)
            group = brian2.NeuronGroup(1, eqs, namespace=namespace, name=f"check_{pop.name}*")
            group._network = "unit check"  # never run: brian2 need not warn that it was not
            group.equations.check_units(group, run_namespace={})
        except (DimensionMismatchError, EquationError, SyntaxError, ValueError, KeyError, TypeError) as err:
            line = _offending_line(pop.equations, str(err))
            raise ConfigError(f"{where}: dynamics.populations.{pop.name}: the equations do not hold as written"
                              f"{f' in {line!r}' if line else ''}: {err}") from None


def _offending_line(text: str, message: str) -> str | None:
    """The equation line a brian2 message is about ('... of equation "dA/dt = ..."' or a name)."""
    for line in text.splitlines():
        lhs = line.split("=")[0].split(":")[0].strip()
        name = lhs[1:-3] if lhs.startswith("d") and lhs.endswith("/dt") else lhs
        if name and (f"'{name}'" in message or f"\"{name}\"" in message or line.strip() in message):
            return line.strip()
    return None
