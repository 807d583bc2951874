"""The base of every configuration block, the strict scalar types, and the registries that
turn the specs registered beside their code (layers, learning rules, optimisers) into the
tagged unions a circuit file chooses from."""

from __future__ import annotations

from typing import Annotated, Any, Union

from pydantic import (AfterValidator, BaseModel, BeforeValidator, ConfigDict, Discriminator, Field, StrictBool,
                      StrictInt, Tag)


class Spec(BaseModel):
    """Base of every block: frozen, and unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# ------------------------------------------------------------------ strict scalars
# YAML's `true` is not 1, and `1e400` (read as a string, then as a float) is not a number:
# integers are strictly integers, floats are finite and never bools.


def _no_bool(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("expected a number, not a boolean")
    return value


FLOAT32_MAX = 3.4028234663852886e38
MAX_COUNT = 1000  # layers stacked by one spec, iterations per batch: beyond, a typo (2**31 hangs)


def _float32(value: float) -> float:
    if abs(value) > FLOAT32_MAX:  # a network computes in float32: beyond its range every number is inf
        raise ValueError(f"beyond the float32 range ±{FLOAT32_MAX:.3g}; expected a finite float32 number")
    return value


Int = Annotated[StrictInt, BeforeValidator(_no_bool)]
PositiveInt = Annotated[Int, Field(gt=0)]
NonNegativeInt = Annotated[Int, Field(ge=0)]
Count = Annotated[Int, Field(gt=0, le=MAX_COUNT)]  # repeats and iterations
Seed = Annotated[Int, Field(ge=0, le=2**32 - 1)]  # what torch's and numpy's generators take
Float = Annotated[float, BeforeValidator(_no_bool), Field(allow_inf_nan=False), AfterValidator(_float32)]
PositiveFloat = Annotated[Float, Field(gt=0)]
NonNegativeFloat = Annotated[Float, Field(ge=0)]
Bool = StrictBool


def _plain_name(value: str) -> str:
    if not value or value.startswith(".") or any(c in value for c in "/\\\0") or len(value) > 200:
        raise ValueError("expected a plain name for file names (no '/', no leading '.', at most 200 characters)")
    return value


Name = Annotated[str, AfterValidator(_plain_name)]  # names that become file names (runs/<name>-....h5)


# --------------------------------------------------------------------- registries


class Registry:
    """Spec classes by tag (the value of their `key` field: a rule's `name`, a layer's `type`),
    each beside the code it configures, which registers it with `@REGISTRY.register`.  The
    union a circuit field accepts is `union()`, built from what is registered when the
    circuit model is made; `implementation(tag)` is the code a spec configures, when the
    owner registers one (`register(impl=...)`)."""

    every: list["Registry"] = []  # all registries, for the error messages' union tags

    def __init__(self, what: str, key: str, default: str | None = None):
        self.what, self.key, self.default = what, key, default
        self.specs: dict[str, type[Spec]] = {}
        Registry.every.append(self)

    def register(self, spec: type[Spec]) -> type[Spec]:
        """Class decorator: register `spec` under the default of its tag field."""
        field = spec.model_fields.get(self.key)
        tag = getattr(field.annotation, "__args__", (None,))[0] if field is not None else None
        if not isinstance(tag, str):
            raise TypeError(f"{spec.__name__}: a {self.what} spec needs `{self.key}: Literal['<tag>']`")
        if tag in self.specs and self.specs[tag] is not spec:
            raise ValueError(f"{self.what} {tag!r} is registered twice ({self.specs[tag].__name__}, {spec.__name__})")
        self.specs[tag] = spec
        return spec

    def names(self) -> list[str]:
        return list(self.specs)

    def __getitem__(self, tag: str) -> type[Spec]:
        return self.specs[tag]

    def __contains__(self, tag: object) -> bool:
        return tag in self.specs

    def union(self) -> Any:
        """The tagged union of the registered specs (a pydantic annotation)."""
        if not self.specs:
            raise RuntimeError(f"no {self.what} spec is registered")
        members = tuple(Annotated[spec, Tag(tag)] for tag, spec in self.specs.items())
        key, default = self.key, self.default

        def tag_of(value: Any) -> str | None:
            if isinstance(value, dict):
                return value.get(key, default)
            return getattr(value, key, None)

        tag_of.__name__ = f"`{key}`"  # pydantic names the discriminator in its message
        return Annotated[Union[members], Discriminator(tag_of)]  # type: ignore[valid-type]

    def tags(self) -> set[str]:
        return set(self.specs)


def registered_tags() -> set[str]:
    """Every tag of every registry (pydantic puts the union member tried in error paths)."""
    return {tag for registry in Registry.every for tag in registry.specs}
