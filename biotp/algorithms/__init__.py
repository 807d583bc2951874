"""Discrete learning rules, one module each; registry keys equal module names."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ..errors import ConfigError
from ..layers.discrete import transmitting_layers
from ..network import Network, n_inputs_of
from .ao_sdtp import AOSDTP
from .base import ALGORITHM_SPECS, Algorithm, Loss, Step, layer_loss
from .bp import BP
from .dfa import DFA
from .dtp import DTP
from .dtp_gn import DTPGN
from .fa import FA
from .fwdtp import FWDTP
from .gtp import GTP
from .ldrl import LDRL
from .sdtp import SDTP
from .tjml import TJML
from .tp import TP

if TYPE_CHECKING:
    from ..circuit import Circuit

ALGORITHMS: dict[str, type[Algorithm]] = {c.name: c for c in (BP, FA, DFA, TP, DTP, SDTP, AOSDTP, FWDTP, GTP, DTPGN, LDRL, TJML)}


def build(circuit: Circuit, n_inputs: int | tuple[int, ...], n_classes: int, device: str | torch.device = "cpu") -> Algorithm:
    """The network a circuit describes, with its learning rule, on `device`.  `n_inputs` is the
    input size or the input shape (e.g. (1, 28, 28)); a shape in `network.input` fills in for a size."""
    cls = ALGORITHMS[circuit.algorithm.name]
    kind = circuit.feedback.kind
    if kind is not None and kind != cls.feedback_kind:
        raise ConfigError(
            f"{circuit.source or '<circuit>'}: feedback.kind: {cls.name} uses {cls.feedback_kind!r} feedback, "
            f"got {kind!r}; leave feedback.kind unset or pick a rule with {kind} feedback"
        )
    shape = n_inputs if isinstance(n_inputs, int) else tuple(n_inputs)
    n_inputs = n_inputs_of(shape)
    outputs = "classes"
    if circuit.autoencoder is not None:  # the output population reconstructs the input
        n_classes, outputs = n_inputs, "inputs to reconstruct"
    n_out = getattr(circuit.network.expanded()[-1], "size", n_classes)
    if n_out != n_classes:
        raise ConfigError(
            f"{circuit.source or '<circuit>'}: network.layers: the output layer has {n_out} units but "
            f"dataset {circuit.data.dataset!r} has {n_classes} {outputs}; expected size {n_classes}"
        )
    declared = circuit.network.input
    if isinstance(declared, list):
        declared, shape = n_inputs_of(tuple(declared)), tuple(declared) if isinstance(shape, int) else shape
    if declared is not None and declared != n_inputs:
        raise ConfigError(
            f"{circuit.source or '<circuit>'}: network.input: {circuit.network.input} does not match dataset "
            f"{circuit.data.dataset!r}, which has {n_inputs} inputs; expected {n_inputs} (or omit the key)"
        )
    layers = circuit.network.expanded()
    if cls.dense_only and (other := next((i for i, layer in enumerate(layers) if layer.type != "dense"), None)) is not None:
        raise ConfigError(
            f"{circuit.source or '<circuit>'}: network.layers.{other}: {cls.name} is defined for dense layers only "
            f"(its equations use each W_l as a matrix); got type {layers[other].type!r}"
        )
    net = Network(circuit, shape, with_feedback=cls.uses_feedback_modules)
    if not cls.supports_transmission and (found := transmitting_layers(net)):
        l, kind = found[0]
        able = ", ".join(name for name, c in ALGORITHMS.items() if c.supports_transmission)
        raise ConfigError(
            f"{circuit.source or '<circuit>'}: network.layers: {cls.name} computes with the weights directly and "
            f"would ignore layer {l}'s transmit: {kind}; expected transmit: identity, or one of {able}"
        )
    if circuit.autoencoder is not None:
        from ..autoencoder import prepare  # ties weights, adds hidden noise, picks eq. 3.23's DTP

        cls = prepare(circuit, net, cls)
    rule = cls(circuit, net, Loss(circuit.loss, n_classes))
    return rule.to(device)


__all__ = ["ALGORITHMS", "ALGORITHM_SPECS", "Algorithm", "Loss", "Step", "build", "layer_loss"]
