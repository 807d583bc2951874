"""The configuration layer: YAML -> frozen specs, without torch.

- `Spec`, the base of every block (frozen, unknown keys are errors), the strict scalar types
  (`PositiveInt`, `Float`, ... : no bool-as-int, no infinities) and `Registry`, which turns
  the specs registered beside their code (layers, rules, optimisers) into tagged unions;
- `load_yaml` / `read_yaml`: YAML with the line of every key, duplicate keys refused;
- `apply_assignment`: `--set key.path=value`;
- `format_errors` / `validate`: messages naming file, key path, value and expectation;
- `units`: quantities with units (`Time`, `Frequency`) and their ranges;
- `errors`: the error types.
"""

from .errors import BiotpError, ConfigError, DataError, DivergenceError, RunFileError
from .messages import format_errors, validate
from .overrides import apply_assignment
from .spec import (Bool, Count, Float, Int, Name, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt,
                   Registry, Seed, Spec, registered_tags)
from .yaml import Document, load_yaml, parse_yaml, read_yaml

__all__ = [
    "BiotpError", "Bool", "ConfigError", "Count", "DataError", "DivergenceError", "Document", "Float", "Int", "Name",
    "NonNegativeFloat", "NonNegativeInt", "PositiveFloat", "PositiveInt", "Registry", "RunFileError", "Seed", "Spec",
    "apply_assignment", "format_errors", "load_yaml", "parse_yaml", "read_yaml", "registered_tags", "validate",
]
