"""A protocol's sweep expanded into points, each with its protocol and circuit resolved."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..circuit import Circuit, load_circuit
from .schema import Protocol, _assign, parse_protocol


@dataclass
class Point:
    """One sweep point: its parameters, resolved protocol and circuit."""

    index: int
    params: dict
    protocol: Protocol
    circuit: Circuit

    @property
    def key(self) -> str:
        return f"p{self.index:03d}"

    @property
    def label(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.params.items()) or self.protocol.name


def points(protocol: Protocol) -> list[Point]:
    """The sweep's points, each with its protocol and circuit resolved."""
    source = protocol.source or "<protocol>"
    base = protocol.model_dump(mode="json", exclude_unset=True)
    out = []
    for i, params in enumerate(protocol.sweep.expand() if protocol.sweep else [{}]):
        data = json.loads(json.dumps(base))
        data.pop("sweep", None)
        data.pop("figure", None)  # a point has no sweep to summarise
        algorithm = None
        for key, value in params.items():
            if key == "circuit.algorithm.name":
                algorithm = value
                continue
            _assign(data, [f"{key}={json.dumps(value)}"], f"{source}: sweep {key}")
        p = parse_protocol(data, source)
        out.append(Point(i, params, p, _circuit_of(p, algorithm)))
    return out


def _circuit_of(p: Protocol, algorithm: str | None) -> Circuit:
    path = Path(p.circuit)
    if not path.is_absolute() and p.source and not path.exists():
        path = Path(p.source).parent / path
    overrides = list(p.overrides)
    if p.seed is not None:
        overrides.append(f"seed={p.seed}")
    if p.engine != "discrete":  # the protocol's timing, applied with the overrides: validated together
        for key in ("forward_phase", "target_phase"):
            if getattr(p.stimuli, key) is not None:
                overrides.append(f"dynamics.{key}={getattr(p.stimuli, key)!r} s")
        if p.record.every is not None:
            overrides.append(f"dynamics.record_dt={p.record.every!r} s")
    circuit = load_circuit(path, overrides)
    if algorithm is not None:
        circuit = circuit.with_algorithm(algorithm)
    if p.engine == "discrete":
        return circuit
    if circuit.dynamics is None:
        circuit = circuit.with_updates("dynamics={}")
    return circuit.with_updates(f"dynamics.record={json.dumps(_recorded_variables(p, circuit))}")


def _recorded_variables(p: Protocol, circuit: Circuit) -> dict:
    record = {pop: list(vs) for pop, vs in p.record.populations.items()}
    if p.record.residual:
        for l in range(1, len(circuit.network.expanded()) + 1):
            record.setdefault(f"layer{l}", [])
            if "r" not in record[f"layer{l}"]:
                record[f"layer{l}"].append("r")
    return record
