"""The torch network a circuit describes: forward layers f_1..f_L and feedback g_2..g_L."""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING

import torch
from torch import nn

from .config.errors import ConfigError
from .layers import build_layer, feedback_for, initialise

MAX_PARAMETERS = 10**9  # in one layer (4 GB in float32): beyond, a typo in a size rather than a network

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
        self.shapes: list[tuple[int, ...]] = [shape]
        layers = []
        for i, spec in enumerate(circuit.network.expanded()):
            where = f"{circuit.source or '<circuit>'}: network.layers (expanded) {i}"
            in_shape = self.shapes[-1]
            _check_size(spec, in_shape, where)
            try:
                built = build_layer(spec, in_shape)
            except ValueError as err:
                raise ConfigError(f"{where}: {err}") from None
            except RuntimeError as err:  # torch could not allocate the weights
                wanted = re.search(r"allocate (\d+) bytes", str(err))
                size = f" ({int(wanted.group(1)) / 1e9:.3g} GB)" if wanted else ""
                raise ConfigError(f"{where}: {spec.type} layer {_settings(spec)}: its parameters cannot be allocated"
                                  f"{size}; expected sizes this machine can hold") from None
            for layer in built:
                out = tuple(layer.out_shape)
                if min(out, default=1) < 1:
                    raise ConfigError(f"{where}: {spec.type} layer {_settings(spec)} on input shape {in_shape} leaves "
                                      f"output shape {out}; expected its kernel (with padding) to fit the input")
                layers.append(layer)
                self.shapes.append(out)
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


def _settings(spec) -> str:
    return "(" + ", ".join(f"{k}={v}" for k, v in spec.model_dump(exclude={"type", "repeat"}).items()) + ")"


def _check_size(spec, in_shape: tuple[int, ...], where: str) -> None:
    """A dense layer's weight count, before torch is asked for it."""
    if spec.type != "dense":
        return
    n = spec.size * math.prod(in_shape)
    if n > MAX_PARAMETERS:
        raise ConfigError(f"{where}: dense layer of size {spec.size} on {math.prod(in_shape)} inputs has {n} "
                          f"parameters ({4 * n / 1e9:.3g} GB in float32); expected at most {MAX_PARAMETERS} per layer")

