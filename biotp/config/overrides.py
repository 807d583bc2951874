"""`--set key.path=value`: assignments into parsed YAML before it is validated."""

from __future__ import annotations

from typing import Any

import yaml

from .errors import ConfigError


def apply_assignment(data: dict, item: str, source: str) -> tuple:
    """Apply one `a.b.0.c=value` assignment (value parsed as YAML) to nested dicts/lists in
    place; returns the key path assigned."""
    if "=" not in item:
        raise ConfigError(f"{source}: --set {item!r}: expected key.path=value")
    path, raw = item.split("=", 1)
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        value = raw
    keys = path.strip().split(".")
    node: Any = data
    loc: list = []
    for i, key in enumerate(keys):
        last = i == len(keys) - 1
        where = ".".join(keys[: i + 1])
        if isinstance(node, list):
            if not key.isdigit() or int(key) >= len(node):
                raise ConfigError(f"{source}: --set {path}: {where}: expected an index below {len(node)}, got {key!r}")
            key = int(key)
        elif not isinstance(node, dict):
            raise ConfigError(f"{source}: --set {path}: {where}: cannot index into {_short(node)}")
        loc.append(key)
        if last:
            node[key] = value
        else:
            if isinstance(node, dict) and key not in node:
                node[key] = {}
            node = node[key]
    return tuple(loc)


def _short(value: Any, limit: int = 200) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."
