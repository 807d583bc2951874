"""Reading YAML configuration files: the data, and the line of every key, so an error can
say where in the file it is.  Duplicate keys are errors (YAML says keys are unique; PyYAML
keeps the last silently), and so are text that is not UTF-8 and files too large to be
configuration."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError

MAX_BYTES = 8 * 2**20  # a configuration file larger than this is a mistake (a data file, a log)
MAX_VALUES = 10**6  # values once aliases are expanded: more is an alias bomb, not a configuration


@dataclass
class Document:
    """A parsed YAML file: `data`, and `lines`: key path (a tuple of keys and list indices)
    -> 1-based line of that key in the file."""

    data: Any
    path: str
    lines: dict[tuple, int] = field(default_factory=dict)
    overridden: set[tuple] = field(default_factory=set)

    def line_of(self, loc: tuple) -> int | None:
        """The line of the deepest key of `loc` the file has (None: not from the file)."""
        loc = tuple(loc)
        if any(loc[: len(o)] == o for o in self.overridden):
            return None  # given on the command line
        while loc:
            if loc in self.lines:
                return self.lines[loc]
            loc = loc[:-1]
        return None

    def forget(self, loc: tuple) -> None:
        """`loc` and what lies under it were replaced (by --set): its lines no longer apply."""
        loc = tuple(loc)
        self.overridden.add(loc)
        for key in [k for k in self.lines if k[: len(loc)] == loc]:
            del self.lines[key]


def _walk(node: yaml.Node, path: tuple, lines: dict, seen: set, source: str) -> None:
    """Record the line of every key under `node`; each node is walked once (aliases share)."""
    if id(node) in seen:
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        keys: dict[Any, int] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = key_node.value
            line = key_node.start_mark.line + 1
            if key in keys:
                where = ".".join(str(p) for p in (*path, key))
                raise ConfigError(f"{source}:{line}: {where}: duplicate key (first given on line {keys[key]}); "
                                  "expected each key once")
            keys[key] = line
            lines[(*path, key)] = line
            _walk(value_node, (*path, key), lines, seen, source)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines.setdefault((*path, i), item.start_mark.line + 1)
            _walk(item, (*path, i), lines, seen, source)


def _expanded_size(node: yaml.Node, memo: dict) -> int:
    """The number of values `node` stands for once every alias is expanded."""
    if id(node) not in memo:
        memo[id(node)] = 0  # a recursive alias counts once
        if isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        elif isinstance(node, yaml.SequenceNode):
            children = node.value
        else:
            children = []
        memo[id(node)] = 1 + sum(_expanded_size(child, memo) for child in children)
    return memo[id(node)]


def load_yaml(path: str | Path, what: str) -> Document:
    """The parsed content of a YAML file ({} if empty) with its key lines; errors name the file."""
    path = Path(path)
    source = str(path)
    try:
        if path.is_file() and path.stat().st_size > MAX_BYTES:
            raise ConfigError(f"{source}: {path.stat().st_size} bytes is too large for a {what} file; "
                              f"expected at most {MAX_BYTES} bytes of YAML")
        raw = path.read_bytes()
    except OSError as err:
        raise ConfigError(f"{source}: cannot read {what} file ({err.strerror})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise ConfigError(f"{source}:{line}: not UTF-8 text (byte {raw[err.start]:#04x} at offset {err.start}); "
                          f"expected a {what} file in UTF-8") from None
    return parse_yaml(text, source)


def parse_yaml(text: str, source: str = "<yaml>") -> Document:
    """`text` parsed as YAML, with the line of each key; duplicate keys are errors."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        lines: dict[tuple, int] = {}
        if node is not None:
            _walk(node, (), lines, set(), source)
            if (n := _expanded_size(node, {})) > MAX_VALUES:
                raise ConfigError(f"{source}: its aliases expand to {n:.3g} values; expected at most {MAX_VALUES:.0e} "
                                  "(a configuration, not an alias bomb)")
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as err:
        raise ConfigError(f"{source}: not valid YAML: {_bounded(str(err))}") from None
    except RecursionError:
        raise ConfigError(f"{source}: not valid YAML: nested too deeply") from None
    finally:
        loader.dispose()
    return Document({} if data is None else data, source, lines)


def read_yaml(path: str | Path, what: str) -> Any:
    """The parsed content of a YAML file ({} if empty); errors name the file."""
    return load_yaml(path, what).data


def _bounded(text: str, limit: int = 2000) -> str:
    return text if len(text) <= limit else text[:limit] + f"... ({len(text) - limit} more characters)"
