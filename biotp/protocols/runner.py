"""Running a protocol: every sweep point in turn, each on the discrete fast path or trial by
trial on the torch or brian2 engine, optionally beside the discrete reference rule."""

from __future__ import annotations

import time as clock
from pathlib import Path

import torch

from ..errors import ConfigError, DivergenceError
from ..runs import claim, release, write_run
from ..dynamics.reference import Reference
from .interventions import Interventions
from .results import ProtocolRun, file_attrs, finished_points, point_group, point_tree, stimuli_tree
from .schema import Protocol, _assign, load_protocol, parse_protocol
from .sweep import Point, points
from .timeline import Timeline, trial_time


def run_protocol(protocol: Protocol | str | Path, *, out: str | Path | None = None, overrides=(), data_dir=None,
                 progress: bool = True, command: str | None = None) -> ProtocolRun:
    """Run every point of `protocol` and write them to the run file `out` (atomically after
    each point).  An existing `out` written by the same protocol is resumed: its finished
    points are kept, the rest are run."""
    protocol = _with_overrides(protocol, overrides)
    pts = points(protocol)
    attrs = file_attrs(protocol, pts, command)
    if out is not None:
        claim(out)  # before any work: a second writer of `out` is refused now
    tree: dict = {"points": finished_points(out, attrs)}
    for pt in pts:
        if pt.key in tree["points"]:
            continue
        if progress:
            print(f"[{protocol.name}] point {pt.index + 1}/{len(pts)}: {pt.label}", flush=True)
        tree["points"][pt.key] = point_group(pt, _run_point(pt, data_dir, progress))
        if out is not None:
            write_run(out, attrs, tree)
    if out is not None:
        release(out)
    return ProtocolRun(protocol, pts, tree["points"], Path(out) if out is not None else None)


def _with_overrides(protocol: Protocol | str | Path, overrides) -> Protocol:
    """The protocol (loaded if a path) with the `key.path=value` overrides applied."""
    if not isinstance(protocol, Protocol):
        return load_protocol(protocol, overrides)
    if overrides:
        data = protocol.model_dump(mode="json", exclude_unset=True)
        _assign(data, overrides, protocol.source or "<protocol>")
        return parse_protocol(data, protocol.source or "<protocol>")
    return protocol


def _run_point(pt: Point, data_dir, progress: bool) -> dict:
    if pt.protocol.engine == "discrete":
        from ..training import train

        metrics = train(pt.circuit, epochs=pt.protocol.epochs, data_dir=data_dir, device=pt.protocol.device,
                        track_angles=pt.protocol.track_angles, progress=progress)
        return {"metrics": metrics}
    return ContinuousRun(pt, data_dir).run(progress)


class ContinuousRun:
    """One point on the torch or brian2 engine: trials, interventions, recordings."""

    def __init__(self, pt: Point, data_dir):
        from ..dynamics.model import check_layers
        from ..devices import pick_device
        from ..simulation import build

        self.pt, p, c = pt, pt.protocol, pt.circuit
        self.spec = c.dynamics
        self.device = pick_device(p.device) if p.engine == "torch" else torch.device("cpu")
        self.dtype = torch.float64 if p.engine == "brian2" else getattr(torch, self.spec.dtype)
        check_layers(c)  # before any data is read
        self._load_examples(data_dir)
        self.generator = torch.Generator().manual_seed(c.seed)
        self.model, self.engine, self.loss = build(c, p.engine, self.x.shape[1], device=self.device, dtype=self.dtype,
                                                   codegen=p.codegen, generator=self.generator)
        self.timeline = Timeline(p, trial_time(self.spec, p.stimuli))
        self.interventions = Interventions(p, c.seed, self.model, self.spec, self.loss, self.device, self.dtype)

    def _load_examples(self, data_dir) -> None:
        """The trials' stimuli (x, y) in presentation order and the evaluation set (ex, ey)."""
        from .. import data as D

        p, c = self.pt.protocol, self.pt.circuit
        splits = D.load_for(c, data_dir)
        d = c.data
        for key, split in (("stimuli.split", p.stimuli.split), ("evaluate.split", p.evaluate.split)):
            if len(getattr(splits, split).y) == 0:
                raise ConfigError(f"{p.source or '<protocol>'}: {key}: the {split!r} split of {d.dataset} is empty "
                                  f"(circuit {c.source}: data.val_split = {d.val_split!r}, data.limit = {d.limit!r}); "
                                  f"expected a split with examples")
        stim = getattr(splits, p.stimuli.split)
        n = p.trials * p.stimuli.batch
        g = torch.Generator().manual_seed(c.seed)
        order = torch.randperm(len(stim.y), generator=g) if p.stimuli.order == "shuffled" else torch.arange(len(stim.y))
        order = order.repeat(-(-n // len(order)))[:n]  # cycle through the split when count exceeds it
        self.x, self.y = self._to(stim.x[order]), stim.y[order].to(self.device)
        self.stimuli = stimuli_tree(p, c.data.dataset, order.numpy(), stim.y[order].numpy())
        ev = getattr(splits, p.evaluate.split)
        self.ex, self.ey = self._to(ev.x[: p.evaluate.count]), ev.y[: p.evaluate.count].to(self.device)

    def _to(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1).to(self.device, self.dtype)

    @property
    def masks(self) -> dict:
        """Lesion index -> (projection, mask of cut synapses)."""
        return self.interventions.masks

    # ------------------------------------------------------------------- run
    def evaluate(self, params) -> tuple[float, float]:
        from ..dynamics.reference import settled_error

        return settled_error(self.model, params, self.loss, self.ex, self.ey)

    def run(self, progress: bool) -> dict:
        p = self.pt.protocol
        n_trials = p.trials
        recorded = _recorded_trials(p)
        every = p.evaluate.every or n_trials
        ref = Reference(self.pt.circuit, self.model, self.x.shape[1], self.engine.parameters()) \
            if p.reference == "discrete" else None
        log = _Log(self, ref)
        traces: dict = {}
        h_last = None
        start = clock.perf_counter()
        bar = _progress_bar(n_trials, self.pt.label) if progress else None
        log(0)
        for k in range(n_trials):
            pres = self._trial(k, k in recorded, h_last, ref)
            for key, arr in pres.traces.items() if k in recorded else ():
                traces.setdefault(key, []).append(arr.detach().cpu().numpy())
            if p.stimuli.inter_trial is not None:
                h_last = self._inter_trial(pres.h)
            if (k + 1) % every == 0 or k + 1 == n_trials:
                log(k + 1)
            if bar is not None:
                bar.update()
        if bar is not None:
            bar.close()
        wall = clock.perf_counter() - start
        W = self.engine.parameters().W
        return point_tree(p, self.spec, [W[l] for l in range(1, self.model.L + 1)], log.metrics, traces, recorded, wall,
                          self.model.unit, self.stimuli)

    def _trial(self, k: int, recorded: bool, h0, ref: Reference | None):
        """Present trial k under the interventions active at its onset; the presentation."""
        B = self.pt.protocol.stimuli.batch
        xb, yb = self.x[k * B : (k + 1) * B], self.y[k * B : (k + 1) * B]
        if ref is not None:
            ref.expect(self.engine.parameters(), xb, yb)
        record = dict(self.spec.record) if recorded else {}
        perturbation = self.interventions.perturbation(self.timeline.active(k), yb, h0)
        if perturbation.noise:
            perturbation = perturbation.draw(self.model, len(xb), self.generator, torch.float64)
        pres = self.engine.present(xb, yb, record, perturbation)
        self._check_finite(k)
        if ref is not None:
            ref.compare(self.engine.parameters(), xb, yb)
        return pres

    def _inter_trial(self, h: list) -> dict:
        """The blank interval: input off, activities relax from where the trial left them."""
        n = self.spec.steps(self.pt.protocol.stimuli.inter_trial)
        names = list(self.model.populations)
        h0 = {name: v.clone() for name, v in zip(names[1:], h[1:])}
        settled = self.engine.settle(torch.zeros_like(h[0]), n, h0)
        return {name: v.to(self.device, self.dtype) for name, v in zip(names[1:], settled[1:])}

    def _check_finite(self, k: int) -> None:
        params = self.engine.parameters()
        for kind, name in (("W", "forward"), ("V", "feedback")):
            for l, W in getattr(params, kind).items():
                if not torch.isfinite(W).all():
                    raise DivergenceError(f"{self.pt.label}: diverged at trial {k} "
                                          f"(time {self.timeline.onset(k):.4g} s): {name}.layer{l} weights are "
                                          "not finite (NaN/inf); lower the plasticity rate")


def _recorded_trials(p: Protocol) -> set[int]:
    """The trials whose traces are kept: the first `record.trials`, or those listed."""
    if isinstance(p.record.trials, int):
        return set(range(min(p.record.trials, p.trials)))
    return set(p.record.trials)


def _progress_bar(total: int, desc: str):
    from ..progress import bar

    return bar(total=total, unit="trial", desc=desc, leave=False, lines=None)  # the runner logs each point


class _Log:
    """The metrics rows, one per evaluation (`log(k)` after k trials)."""

    def __init__(self, run: ContinuousRun, ref: Reference | None):
        self.run, self.ref = run, ref
        self.metrics: dict[str, list] = {}
        self.last = run.engine.parameters()

    def __call__(self, k: int) -> None:
        run, L = self.run, self.run.model.L
        params = run.engine.parameters()
        err, lossv = run.evaluate(params)
        row = {"trial": k, "time": run.timeline.onset(k), "phase": run.timeline.phase_index(k - 1 if k else 0),
               "test_error": err, "test_loss": lossv}
        for l in range(1, L + 1):  # how much each layer learnt since the last evaluation
            row[f"dW_layer{l}"] = float((params.W[l] - self.last.W[l]).norm())
        self.last = params
        if self.ref is not None:
            row.update(self.ref.columns(run.evaluate, L))
        for name, v in row.items():
            self.metrics.setdefault(name, []).append(v)
