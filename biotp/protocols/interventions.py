"""The active interventions turned into what every engine is given: a `Perturbation`
(clamps, silencing, noise, lesioned synapses, blocked plasticity, β), which acts through
the model's equations the same way in both engines."""

from __future__ import annotations

import reprlib

import torch

from ..engines.base import Perturbation
from ..errors import ConfigError
from .schema import Protocol


_REPR = reprlib.Repr()
_REPR.maxlist = 6


class Names:
    """The model's populations and projections by name; an unknown name is an error that
    points into the protocol and lists the names that exist."""

    def __init__(self, source: str | None, model):
        self.source, self.model = source, model

    def where(self, key: str) -> str:
        return f"{self.source or '<protocol>'}: {key}"

    def population(self, name: str, key: str, allow_input: bool = False) -> str:
        valid = [n for n in self.model.populations if allow_input or n != "input"]
        if name not in valid:
            raise ConfigError(f"{self.where(key)}: unknown population {name!r}; expected one of {', '.join(valid)}")
        return name

    def projection(self, name: str, key: str) -> str:
        valid = [n for n, p in self.model.projections.items() if p.kind != "pool"]
        if name not in valid:
            raise ConfigError(f"{self.where(key)}: unknown projection {name!r}; expected one of {', '.join(valid)}")
        return name

    def check(self, p: Protocol) -> None:
        """Every population, variable and projection the protocol names exists in the model."""
        for i, iv in enumerate(p.interventions):
            if iv.kind in ("clamp", "silence", "noise"):
                pop = self.population(iv.population, f"interventions.{i}.population", iv.kind == "clamp")
                l = self.model.populations[pop].index
                size = self.model.populations[pop].size
                if iv.kind == "clamp" and isinstance(iv.value, list) and len(iv.value) != size:
                    raise ConfigError(f"{self.where(f'interventions.{i}.value')}: {len(iv.value)} values "
                                      f"{_REPR.repr(iv.value)}; expected one per neuron of {pop}: {size} values "
                                      f"(or one number, or label)")
                if getattr(iv, "variable", "h") == "t" and iv.kind == "noise" and l not in self.model.relaxing:
                    raise ConfigError(f"{self.where(f'interventions.{i}.population')}: noise on the target of "
                                      f"{iv.population}: only relaxing targets move (layers "
                                      f"{', '.join(f'layer{k}' for k in sorted(self.model.relaxing))})")
            if iv.kind == "lesion":
                self.projection(iv.projection, f"interventions.{i}.projection")
            if iv.kind == "block_plasticity" and iv.projections != "all":
                for j, name in enumerate(iv.projections):
                    self.projection(name, f"interventions.{i}.projections.{j}")
        for pop, variables in p.record.populations.items():
            self.population(pop, f"record.populations.{pop}", True)
            for var in variables:
                self.model.variable(pop, var, self.where(f"record.populations.{pop}"))


class Interventions:
    """A protocol's interventions on one model; the lesions' masks are drawn once, seeded."""

    def __init__(self, p: Protocol, seed: int, model, spec, loss, device, dtype):
        self.model, self.spec, self.loss = model, spec, loss
        self.device, self.dtype = device, dtype
        self.names = Names(p.source, model)
        self.names.check(p)
        self.masks = {}  # lesion index -> (projection, mask of cut synapses [post, pre])
        mask_gen = torch.Generator().manual_seed(seed + 7919)
        for i, iv in enumerate(p.interventions):
            if iv.kind == "lesion":
                proj = model.projections[iv.projection]
                shape = (model.populations[proj.post].size, model.populations[proj.pre].size)
                self.masks[i] = (iv.projection, torch.rand(shape, generator=mask_gen) < iv.fraction)

    def perturbation(self, active, y: torch.Tensor, h0: dict | None) -> Perturbation:
        """What the engine is given for one presentation under the `active` interventions,
        starting from the activities `h0` (default rest)."""
        clamp, noise, lesion, blocked = {}, {}, {}, set()
        zero = torch.zeros((), dtype=self.dtype, device=self.device)
        for i, iv in active:
            phases = ("forward", "target") if iv.during == "all" else (iv.during,)
            if iv.kind == "silence":
                for ph in phases:
                    clamp[(ph, "h", iv.population)] = zero
                clamp[("target", "t", iv.population)] = zero
            elif iv.kind == "clamp":
                if iv.value == "label":
                    value = self.loss.optimum(y, self.dtype).to(self.device)
                else:
                    value = torch.as_tensor(iv.value, dtype=self.dtype, device=self.device)
                for ph in phases if iv.variable == "h" else ("target",):
                    clamp[(ph, iv.variable, iv.population)] = value
            elif iv.kind == "noise":
                for ph in phases if iv.variable == "h" else ("target",):
                    noise[(ph, iv.variable, iv.population)] = iv.sigma
            elif iv.kind == "lesion":
                name, mask = self.masks[i]
                lesion[name] = mask if name not in lesion else lesion[name] | mask
            elif iv.kind == "block_plasticity":
                blocked |= set(self.blocked_projections(iv))
        beta = next((iv.value for _, iv in reversed(active) if iv.kind == "beta"), None)
        return Perturbation(clamp, noise, {}, lesion, frozenset(blocked), beta, h0)

    def blocked_projections(self, iv) -> list[str]:
        if iv.projections != "all":
            return list(iv.projections)
        return [n for n, p in self.model.projections.items() if p.kind != "pool"]
