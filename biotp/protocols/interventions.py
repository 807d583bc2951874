"""The active interventions turned into what the engine is given: a perturbation (clamps,
noise, cut synapses), lesioned weights, projections whose plasticity is blocked, and β."""

from __future__ import annotations

import torch

from ..errors import ConfigError
from .schema import Protocol


class Names:
    """The circuit's populations (input, layer<l>) and projections (forward.layer<l>,
    feedback.layer<l>) by name; an unknown name is an error that points into the protocol."""

    def __init__(self, source: str | None, model, engine):
        self.source, self.model, self.engine = source, model, engine

    def where(self, key: str) -> str:
        return f"{self.source or '<protocol>'}: {key}"

    def population(self, name: str, key: str, allow_input: bool = False) -> int:
        L = self.model.L
        valid = (["input"] if allow_input else []) + [f"layer{l}" for l in range(1, L + 1)]
        if name not in valid:
            raise ConfigError(f"{self.where(key)}: unknown population {name!r}; expected one of {', '.join(valid)}")
        return 0 if name == "input" else int(name.removeprefix("layer"))

    def projection(self, name: str, key: str) -> tuple[str, int]:
        L = self.model.L
        valid = [f"forward.layer{l}" for l in range(1, L + 1)] + [f"feedback.layer{l}" for l in range(2, L + 1)
                                                                    if self.engine.w.V[l] is not None]
        if name not in valid:
            raise ConfigError(f"{self.where(key)}: unknown projection {name!r}; expected one of {', '.join(valid)}")
        kind, layer = name.split(".")
        return ("W" if kind == "forward" else "V"), int(layer.removeprefix("layer"))

    def check(self, p: Protocol) -> None:
        """Every population and projection the protocol names exists in the circuit."""
        for i, iv in enumerate(p.interventions):
            if iv.kind in ("clamp", "silence", "noise"):
                l = self.population(iv.population, f"interventions.{i}.population", iv.kind == "clamp")
                if getattr(iv, "variable", "h") == "t" and iv.kind == "noise" and l not in self.model.relaxing:
                    raise ConfigError(f"{self.where(f'interventions.{i}.population')}: noise on the target of "
                                      f"{iv.population}: only relaxing targets move (layers "
                                      f"{', '.join(f'layer{k}' for k in sorted(self.model.relaxing))})")
            if iv.kind == "block_plasticity" and iv.projections != "all":
                for j, name in enumerate(iv.projections):
                    self.projection(name, f"interventions.{i}.projections.{j}")
        for pop in p.record.populations:
            self.population(pop, f"record.populations.{pop}", True)


class Interventions:
    """A protocol's interventions on one engine: the lesions' masks (drawn once, seeded) and
    the weights of the synapses they cut, put back when a lesion ends."""

    def __init__(self, p: Protocol, seed: int, model, engine, spec, loss, device, dtype):
        self.model, self.engine, self.spec, self.loss = model, engine, spec, loss
        self.device, self.dtype = device, dtype
        self.names = Names(p.source, model, engine)
        self.names.check(p)
        self.masks = {}  # lesion index -> (kind, l, mask of cut synapses)
        mask_gen = torch.Generator().manual_seed(seed + 7919)
        for i, iv in enumerate(p.interventions):
            if iv.kind == "lesion":
                kind, l = self.names.projection(iv.projection, f"interventions.{i}.projection")
                shape = getattr(engine.w, kind)[l].shape
                self.masks[i] = (kind, l, torch.rand(shape, generator=mask_gen).to(device) < iv.fraction)
        self.saved = {}  # lesion index -> the cut synapses' weights, restored when it ends

    def perturbation(self, active, y: torch.Tensor, h0):
        """What the engine is given for one presentation: clamps, noise, the starting
        state `h0` and the synapses cut."""
        from ..engines.torch import Perturbation

        clamp, noise = {}, {}
        for _, iv in active:
            phases = ("forward", "target") if iv.during == "all" else (iv.during,)
            l = self.names.population(iv.population, "population", True) if hasattr(iv, "population") else None
            if iv.kind == "silence":
                for ph in phases:
                    clamp[(ph, "h", l)] = torch.zeros((), dtype=self.dtype, device=self.device)
                clamp[("target", "t", l)] = torch.zeros((), dtype=self.dtype, device=self.device)
            elif iv.kind == "clamp":
                if iv.value == "label":
                    value = self.loss.optimum(y, self.dtype).to(self.device)
                else:
                    value = torch.as_tensor(iv.value, dtype=self.dtype, device=self.device)
                for ph in phases if iv.variable == "h" else ("target",):
                    clamp[(ph, iv.variable, l)] = value
            elif iv.kind == "noise":
                for ph in phases if iv.variable == "h" else ("target",):
                    noise[(ph, iv.variable, l)] = iv.sigma
        cut = {(kind, l): mask for i, (kind, l, mask) in self.masks.items() if i in self.saved}
        return Perturbation(clamp, noise, h0, cut)

    def lesion(self, active) -> None:
        """Cut the active lesions' synapses; give back those of lesions that ended."""
        now = {i for i, iv in active if iv.kind == "lesion"}
        for i, (kind, l, mask) in self.masks.items():
            W = getattr(self.engine.w, kind)[l]
            if i in now:
                if i not in self.saved:
                    self.saved[i] = W[mask].clone()
                self.engine.set_weight(kind, l, W.masked_fill(mask, 0.0))
            elif i in self.saved:
                W = W.clone()
                W[mask] = self.saved.pop(i)
                self.engine.set_weight(kind, l, W)

    def keep_cut(self) -> None:
        """Cut synapses stay cut: no plasticity on them."""
        for i, (kind, l, mask) in self.masks.items():
            if i in self.saved:
                self.engine.set_weight(kind, l, getattr(self.engine.w, kind)[l].masked_fill(mask, 0.0))

    def blocked(self, active) -> list[tuple[str, int]]:
        """The projections (kind, l) whose plasticity the active interventions block."""
        out = []
        for _, iv in active:
            if iv.kind == "block_plasticity":
                names = iv.projections if iv.projections != "all" else \
                    [f"forward.layer{l}" for l in range(1, self.model.L + 1)] + \
                    [f"feedback.layer{l}" for l in range(2, self.model.L + 1) if self.engine.w.V[l] is not None]
                out += [self.names.projection(n, "projections") for n in names]
        return out

    def hold(self, active) -> dict:
        """The weights of the blocked projections, to be put back after the trial (`restore`)."""
        return {(kind, l): getattr(self.engine.w, kind)[l].clone() for kind, l in self.blocked(active)}

    def restore(self, held: dict) -> None:
        for (kind, l), W in held.items():
            self.engine.set_weight(kind, l, W)

    def set_beta(self, active) -> None:
        """β of the last active `beta` intervention, else the circuit's."""
        beta = next((iv.value for _, iv in reversed(active) if iv.kind == "beta"), self.spec.target.beta)
        if self.model.spec.target.beta != beta:
            target = self.spec.target.model_copy(update={"beta": beta})
            self.model.spec = self.engine.spec = self.model.spec.model_copy(update={"target": target})
