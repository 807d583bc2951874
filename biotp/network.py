"""The torch network a circuit describes: forward layers f_1..f_L and feedback g_2..g_L."""

from __future__ import annotations

import torch
from torch import nn

from .circuit import Circuit
from .layers import Dense, feedback_for, initialise


class Network(nn.Module):
    """Populations h_0 = x, h_l = f_l(h_{l-1}), l = 1..L.

    `feedback[str(l)]` is g_l: h_l -> h_{l-1} for l = 2..L, present when the learning rule
    uses a feedback pathway of that form.  Its activation is that of population l-1 unless
    the circuit's `feedback.activation` says otherwise.
    """

    def __init__(self, circuit: Circuit, n_inputs: int, *, with_feedback: bool, seed: int | None = None):
        super().__init__()
        specs = circuit.network.expanded()
        sizes = [n_inputs] + [s.size for s in specs]
        self.layers = nn.ModuleList(
            Dense(sizes[i], sizes[i + 1], s.activation, s.bias) for i, s in enumerate(specs)
        )
        self.feedback = nn.ModuleDict()
        if with_feedback:
            for l in range(2, len(specs) + 1):
                act = circuit.feedback.activation or specs[l - 2].activation
                self.feedback[str(l)] = feedback_for(self.layers[l - 1], act)
        g = torch.Generator().manual_seed(circuit.seed if seed is None else seed)
        for i, layer in enumerate(self.layers):
            initialise(layer.weight, circuit.init, first=i == 0, generator=g)
        fb_init = circuit.feedback.init
        if circuit.feedback.random_scale != 1.0:
            fb_init = fb_init.model_copy(update={"gain": fb_init.gain * circuit.feedback.random_scale})
        for g_l in self.feedback.values():
            initialise(g_l.weight, fb_init, first=False, generator=g)

    @property
    def depth(self) -> int:
        return len(self.layers)

    def forward(self, x: torch.Tensor, *, local: bool = False) -> list[torch.Tensor]:
        """All activities [h_0, ..., h_L].  `local=True` cuts the graph between layers, so a
        loss on h_l reaches only f_l's parameters (the layer-local losses of TP)."""
        hs = [x.flatten(1)]
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
