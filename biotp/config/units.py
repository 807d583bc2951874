"""Physical quantities in circuit files: ``"2 ms"``, ``"0.5 Hz"``, ``"10 / s"``.

A small, dependency-free parser (brian2 is imported only by its engine).  Values are
stored in SI base units (seconds, hertz) and written back with their unit, so a resolved
circuit re-reads to the same numbers.  A value of the wrong dimension (``tau_f: 2 mV``) or
without a unit is an error that names the value and the expected dimension; the circuit
loader adds the file and key path.
"""

from __future__ import annotations

import math
import re
from typing import Annotated

from pydantic import AfterValidator, BeforeValidator, PlainSerializer


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


def positive_time(value: float | None) -> float | None:
    """A validator: a time > 0 s, finite (None passes: an unset option)."""
    if value is not None and not (0 < value < math.inf):
        raise ValueError(f"{value!r} s: expected a positive, finite time")
    return value


def duration(value: float) -> float:
    """A validator: a duration >= 0 s, finite."""
    if not (0 <= value < math.inf):
        raise ValueError(f"{value!r} s: expected a duration ≥ 0 s, finite")
    return value


PositiveTime = Annotated[Time, AfterValidator(positive_time)]  # a time constant, a step: > 0 s, finite
Duration = Annotated[Time, AfterValidator(duration)]  # a phase: >= 0 s, finite
