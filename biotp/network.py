"""The torch network a circuit describes: forward layers f_1..f_L and feedback g_2..g_L."""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING

import torch
from torch import nn

from .config.errors import ConfigError
from .layers import build_layer, feedback_for, initialise

if TYPE_CHECKING:
    from .circuit import Circuit


def _activation_of(layer) -> str:
    """The activation a population ends in (what its feedback's output should look like)."""
    return getattr(layer, "act_name", "linear")


class Network(nn.Module):
    """Populations h_0 = x, h_l = f_l(h_{l-1}), l = 1..L.

    Layers are built from the circuit's layer specs by dispatch on the spec type
    (`biotp.layers.build_layer`); a spec can yield several populations (an MLP-Mixer block
    yields its token- and channel-mixing halves).  `shapes[l]` is the per-example shape of
    h_l; `input_shape` is an int for MLPs or the dataset's shape, e.g. (1, 28, 28).  A flat
    input is reshaped to `shapes[0]`; a dense layer after a spatial one flattens its input.

    `feedback[str(l)]` is g_l: h_l -> h_{l-1} for l = 2..L, present when the learning rule
    uses a feedback pathway of that form.  Its activation is that of population l-1 unless
    the circuit's `feedback.activation` says otherwise.
    """

    def __init__(self, circuit: Circuit, input_shape: int | tuple[int, ...] | list[int], *,
                 with_feedback: bool, seed: int | None = None):
        super().__init__()
        shape = (int(input_shape),) if isinstance(input_shape, int) else tuple(int(s) for s in input_shape)
        _check_buildable(circuit, shape, with_feedback)  # shapes and sizes, before any memory is taken
        self.shapes: list[tuple[int, ...]] = [shape]
        layers = []
        for i, spec in enumerate(circuit.network.expanded()):
            built = _build(circuit, i, spec, self.shapes[-1])
            for layer in built:
                layers.append(layer)
                self.shapes.append(tuple(layer.out_shape))
        self.layers = nn.ModuleList(layers)
        self.feedback = nn.ModuleDict()
        if with_feedback:
            for l in range(2, len(layers) + 1):
                act = circuit.feedback.activation or _activation_of(layers[l - 2])
                self.feedback[str(l)] = feedback_for(self.layers[l - 1], act)
        g = torch.Generator().manual_seed(circuit.seed if seed is None else seed)
        for i, layer in enumerate(self.layers):
            for w in _weights(layer):
                initialise(w, circuit.init, first=i == 0, generator=g)
        fb_init = circuit.feedback.init
        if circuit.feedback.random_scale != 1.0:
            fb_init = fb_init.model_copy(update={"gain": fb_init.gain * circuit.feedback.random_scale})
        for g_l in self.feedback.values():
            for w in _weights(g_l):
                initialise(w, fb_init, first=False, generator=g)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.shapes[0]

    @property
    def depth(self) -> int:
        return len(self.layers)

    def forward(self, x: torch.Tensor, *, local: bool = False) -> list[torch.Tensor]:
        """All activities [h_0, ..., h_L].  `local=True` cuts the graph between layers, so a
        loss on h_l reaches only f_l's parameters (the layer-local losses of TP)."""
        hs = [x.reshape(x.shape[0], *self.shapes[0])]
        for layer in self.layers:
            h = hs[-1].detach() if local else hs[-1]
            hs.append(layer(h))
        return hs

    def forward_params(self) -> list[nn.Parameter]:
        return list(self.layers.parameters())

    def feedback_params(self) -> list[nn.Parameter]:
        return list(self.feedback.parameters())

    def layer_names(self) -> list[str]:
        return [f"layer{l}" for l in range(1, self.depth + 1)]


def _weights(module: nn.Module) -> list[torch.Tensor]:
    """The [out, in, ...] weight matrices of a module that an initialisation fills."""
    if hasattr(module, "weight_matrices"):
        return module.weight_matrices()
    w = getattr(module, "weight", None)
    return [w] if isinstance(w, torch.Tensor) else []


def n_inputs_of(shape: int | tuple[int, ...]) -> int:
    return shape if isinstance(shape, int) else math.prod(shape)


def _build(circuit: Circuit, i: int, spec, in_shape: tuple[int, ...]) -> list:
    """The populations of layer spec `i` on inputs of `in_shape`; a spec that does not fit its
    input (a kernel larger than the image) is a ConfigError naming the layer."""
    where = f"{circuit.source or '<circuit>'}: network.layers (expanded) {i}"
    try:
        built = build_layer(spec, in_shape)
    except ValueError as err:
        raise ConfigError(f"{where}: {err}") from None
    for layer in built:
        if any(int(n) < 1 for n in layer.out_shape):
            raise ConfigError(f"{where}: {spec.type} {spec.model_dump(exclude_defaults=True)} on an input of shape "
                              f"{list(in_shape)} gives the empty output shape {list(layer.out_shape)}; expected every "
                              f"dimension ≥ 1 (a smaller kernel, pool or stride, or more padding)")
        in_shape = tuple(layer.out_shape)
    return built


MEMORY_FACTOR = 4  # bytes a parameter takes in training: weights, gradients, two optimiser moments (x 4 bytes each)


def _check_buildable(circuit: Circuit, shape: tuple[int, ...], with_feedback: bool) -> None:
    """Build the network on torch's meta device (shapes, no memory) and refuse one whose
    parameters cannot be allocated on this machine, naming its largest layer."""
    counts = []
    with torch.device("meta"):
        for i, spec in enumerate(circuit.network.expanded()):
            try:
                built = _build(circuit, i, spec, shape)
            except (RuntimeError, OverflowError) as err:  # a size even the bookkeeping cannot hold
                raise ConfigError(f"{circuit.source or '<circuit>'}: network.layers (expanded) {i}: {spec.type} "
                                  f"{spec.model_dump(exclude_defaults=True)} on an input of shape {list(shape)} "
                                  f"cannot be allocated ({err}); expected smaller layers") from None
            counts.append(sum(p.numel() for layer in built for p in layer.parameters()))
            shape = tuple(built[-1].out_shape)
    total = sum(counts) * (2 if with_feedback else 1)  # feedback pathways mirror the forward weights
    available = _available_memory()
    if available is not None and total * 4 * MEMORY_FACTOR > available:
        i = max(range(len(counts)), key=counts.__getitem__)
        spec = circuit.network.expanded()[i]
        raise ConfigError(
            f"{circuit.source or '<circuit>'}: network.layers (expanded) {i}: {spec.type} "
            f"{spec.model_dump(exclude_defaults=True)} makes a network of {total:,} parameters, "
            f"{total * 4 * MEMORY_FACTOR / 1e9:.3g} GB to train, more than the {available / 1e9:.3g} GB of memory "
            f"available; expected smaller layers")


def _available_memory() -> int | None:
    """Bytes of memory available to a new allocation (Linux: MemAvailable), or None if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None
