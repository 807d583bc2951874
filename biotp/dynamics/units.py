"""Physical quantities in circuit files: ``"2 ms"``, ``"0.5 Hz"``, ``"10 / s"``.

A small, dependency-free parser (brian2 is imported only by its engine).  Values are
stored in SI base units (seconds, hertz) and written back with their unit, so a resolved
circuit re-reads to the same numbers.  A value of the wrong dimension (``tau_f: 2 mV``) or
without a unit is an error that names the value and the expected dimension; the circuit
loader adds the file and key path.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BeforeValidator, PlainSerializer

from ..errors import ConfigError

PREFIXES = {"": 1.0, "p": 1e-12, "n": 1e-9, "u": 1e-6, "µ": 1e-6, "μ": 1e-6, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9}
# base symbol -> (dimension, SI unit it measures)
BASES = {
    "s": "time", "second": "time", "Hz": "frequency", "V": "voltage", "volt": "voltage",
    "A": "current", "amp": "current", "m": "length", "metre": "length", "meter": "length",
    "F": "capacitance", "S": "conductance", "siemens": "conductance", "ohm": "resistance",
    "Ω": "resistance", "1": "dimensionless",
}
EXAMPLES = {"time": "'2 ms'", "frequency": "'10 Hz' or '10 / s'"}

_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_FORM = re.compile(rf"^\s*({_NUMBER})\s*(?:\*\s*)?(/\s*)?([^\s\d/*][^\s]*)?\s*$")


def _unit(symbol: str) -> tuple[str, float]:
    """(dimension, scale to SI) of a unit symbol such as 'ms', 'kHz', 'mV'."""
    if symbol in BASES:
        return BASES[symbol], 1.0
    for prefix, scale in PREFIXES.items():
        if prefix and symbol.startswith(prefix) and symbol[len(prefix):] in BASES:
            return BASES[symbol[len(prefix):]], scale
    raise ValueError(f"unknown unit {symbol!r}")


def parse_quantity(value, dimension: str) -> float:
    """`value` in SI units of `dimension` ('time' -> seconds, 'frequency' -> hertz).

    Accepts '2 ms', '2ms', '2*ms', '10 Hz', '10 / s', '10/ms'.  Raises ValueError naming
    the expected dimension (the circuit loader adds file, key path and value).
    """
    expected = f"expected a {dimension} with its unit, e.g. {EXAMPLES.get(dimension, repr(dimension))}"
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(expected)
    if not isinstance(value, str):
        raise ValueError(f"{expected} (a bare number has no unit)")
    m = _FORM.match(value)
    if not m or m.group(3) is None:
        raise ValueError(f"{expected} (no unit found)")
    number, per, symbol = float(m.group(1)), bool(m.group(2)), m.group(3)
    try:
        dim, scale = _unit(symbol)
    except ValueError as err:
        raise ValueError(f"{expected} ({err})") from None
    if per:  # '10 / s' is a frequency
        dim, scale = {"time": ("frequency", 1.0 / scale)}.get(dim, (f"1/{dim}", 1.0 / scale))
    if dim != dimension:
        raise ValueError(f"{expected} ({symbol!r} has dimension {dim})")
    return number * scale


def _quantity(dimension: str, unit: str):
    return Annotated[
        float,
        BeforeValidator(lambda v: parse_quantity(v, dimension)),
        PlainSerializer(lambda v: f"{v!r} {unit}", return_type=str, when_used="json"),
    ]


Time = _quantity("time", "s")
Frequency = _quantity("frequency", "Hz")


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
