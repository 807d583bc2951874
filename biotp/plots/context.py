"""What a figure's title says about the file it comes from: circuit, dataset, rule(s),
seed(s), and for a protocol its name and engine -- read from the root attributes, so that a
figure found on its own still tells what it shows."""

from __future__ import annotations

import json

import h5py
import yaml

from .common import circuit_of, decode


def protocol_of(f: h5py.File):
    """The protocol a run file was made by (root attribute protocol_yaml), or None."""
    from ..errors import BiotpError
    from ..protocols.schema import parse_protocol

    text = decode(f.attrs.get("protocol_yaml", ""))
    if not text:
        return None
    try:
        data = yaml.safe_load(text)
        return parse_protocol(data, f"{f.filename}:/protocol_yaml")
    except (BiotpError, yaml.YAMLError):
        return None


def point_params(group: h5py.Group) -> dict:
    """A protocol point's sweep values (its `params` attribute), {} for other groups."""
    try:
        params = json.loads(decode(group.attrs.get("params", "{}")))
    except json.JSONDecodeError:
        return {}
    return params if isinstance(params, dict) else {}


def rule_of(f: h5py.File, circuit) -> str:
    """The learning rule(s) of the file: the compared rules, the discrete rule, or the
    continuous model's plasticity rule."""
    kind = decode(f.attrs.get("kind", ""))
    if kind == "compare":
        return ", ".join(a for a in decode(f.attrs.get("algorithms", "")).split(",") if a)
    if kind == "protocol" and isinstance(f.get("points"), h5py.Group):
        rules = [point_params(g).get("circuit.algorithm.name") for g in f["points"].values()]
        if any(rules):
            return ", ".join(dict.fromkeys(r for r in rules if r))
    continuous = kind in ("simulate", "continuous") or (kind == "protocol" and decode(f.attrs.get("engine", "")) != "discrete")
    if continuous and circuit is not None and circuit.dynamics is not None:
        rule = circuit.dynamics.plasticity.rule
        return "plasticity off" if rule == "none" else f"{rule} plasticity"
    if "algorithm" in f.attrs:
        return decode(f.attrs["algorithm"])
    return circuit.algorithm.name if circuit is not None else ""


def seeds_of(f: h5py.File) -> str:
    """`seed 0`, or `seeds 0, 1` when a protocol sweeps the seed."""
    seeds = []
    if isinstance(f.get("points"), h5py.Group):
        seeds = [point_params(g)["seed"] for g in f["points"].values() if "seed" in point_params(g)]
    seeds = list(dict.fromkeys(seeds)) or ([int(f.attrs["seed"])] if "seed" in f.attrs else [])
    if not seeds:
        return ""
    return ("seed " if len(seeds) == 1 else "seeds ") + ", ".join(str(s) for s in seeds)


def describe(f: h5py.File) -> str:
    """One line: `protocol NAME (ENGINE) · circuit NAME on DATASET · RULE · seed S`."""
    circuit = circuit_of(f)
    parts = []
    if decode(f.attrs.get("kind", "")) == "protocol":
        engine = decode(f.attrs.get("engine", ""))
        parts.append(f"protocol {decode(f.attrs.get('protocol', ''))}" + (f" ({engine} engine)" if engine else ""))
    if circuit is not None:
        parts.append(f"circuit {circuit.name} on {circuit.data.dataset}")
    parts += [rule_of(f, circuit), seeds_of(f)]
    return " · ".join(p for p in parts if p)
