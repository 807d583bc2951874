"""Validation errors as lines that name the file (and line), the key path, what was expected
and the value given; the text is bounded, whatever the input."""

from __future__ import annotations

from typing import Any, TypeVar, get_args

from pydantic import BaseModel, ValidationError

from .errors import ConfigError
from .spec import registered_tags
from .yaml import Document

MAX_ERRORS = 20  # lines of one message
MAX_VALUE = 200  # characters of a value shown

M = TypeVar("M", bound=BaseModel)


def format_errors(err: ValidationError, source: str, root: type[BaseModel] | None = None, tags=(),
                  document: Document | None = None) -> str:
    """One line per error: file, key path, message, value (and the key's line in `document`).
    `root` is the top model (for the keys an unknown key could have been); `tags` are union
    tags pydantic puts in paths, besides the registries'."""
    lines = []
    errors = err.errors()
    hidden = set(tags) | registered_tags()
    for e in errors[:MAX_ERRORS]:
        path = tuple(p for p in e["loc"] if not (_is_union_tag(p) or p in hidden))
        loc = ".".join(str(p) for p in path)
        msg = e["msg"].removeprefix("Value error, ")  # a validator's own message says what was expected
        if e["type"] == "extra_forbidden" and root is not None:
            allowed = _allowed_keys(e["loc"][:-1], root, hidden)
            msg = "unknown key" + (f"; expected one of: {', '.join(allowed)}" if allowed else "")
        elif e["type"] == "extra_forbidden":
            msg = "unknown key"
        value = e.get("input")
        shown = "" if isinstance(value, dict) or e["type"] == "missing" else f"; got {_short(value)}"
        line = document.line_of(path) if document is not None else None
        lines.append(f"{source}: {loc or '<top>'}: {msg}{shown}" + (f" (line {line})" if line else ""))
    if len(errors) > MAX_ERRORS:
        lines.append(f"{source}: ... and {len(errors) - MAX_ERRORS} more errors")
    return "\n".join(lines)


def validate(model: type[M], data: Any, source: str, what: str, *, document: Document | None = None,
             tags=()) -> M:
    """`data` (a mapping) validated into `model`, stamped with `source`; a ConfigError naming
    every problem otherwise."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of {what} keys at the top level, got {type(data).__name__}")
    try:
        return model.model_validate({**data, "source": source})
    except ValidationError as err:
        raise ConfigError(format_errors(err, source, model, tags, document)) from None
    except RecursionError:
        raise ConfigError(f"{source}: nested too deeply to be a {what}") from None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= MAX_VALUE else text[:MAX_VALUE] + f"... ({len(text)} characters)"


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The Spec classes an annotation can hold (through Optional, Union, Annotated, list)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in get_args(annotation) for m in _models_in(arg)]


def _allowed_keys(loc: tuple, root: type[BaseModel], tags=frozenset()) -> list[str]:
    """The keys the block at `loc` accepts, for the unknown-key message."""
    candidates: list[type[BaseModel]] = [root]
    for part in loc:
        if isinstance(part, int):
            continue
        tagged = [m for m in candidates if _tag_of(m) == part]
        if tagged:
            candidates = tagged
            continue
        fields = [m.model_fields[part] for m in candidates if part in m.model_fields]
        if not fields and part in tags:
            continue  # a union's tag that names no model here
        if not fields:
            return []
        candidates = _models_in(fields[0].annotation)
    if len(candidates) != 1:
        return []
    return [k for k in candidates[0].model_fields if k != "source"]


def _tag_of(model: type[BaseModel]) -> str | None:
    for key in ("name", "type", "kind"):
        field = model.model_fields.get(key)
        if field is not None and getattr(field.annotation, "__args__", None):
            return field.annotation.__args__[0]
    return None


def _is_union_tag(part: Any) -> bool:
    # pydantic puts the union member tried (e.g. 'constrained-int', 'function-after[...]') in the path
    if not isinstance(part, str):
        return False
    return part.startswith(("constrained-", "function-", "lax-", "json-")) \
        or part in {"int", "float", "str", "bool", "none", "literal"}
