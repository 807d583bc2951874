"""Running a protocol: every sweep point in turn, each on the discrete fast path or trial by
trial on the torch or brian2 engine, optionally beside the discrete reference rule."""

from __future__ import annotations

import time as clock
from pathlib import Path

import numpy as np
import torch

from ..errors import DivergenceError
from ..runs import write_run
from .interventions import Interventions
from .results import ProtocolRun, file_attrs, finished_points, point_group, point_tree
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
    tree: dict = {"points": finished_points(out, attrs)}
    for pt in pts:
        if pt.key in tree["points"]:
            continue
        if progress:
            print(f"[{protocol.name}] point {pt.index + 1}/{len(pts)}: {pt.label}", flush=True)
        tree["points"][pt.key] = point_group(pt, _run_point(pt, data_dir, progress))
        if out is not None:
            write_run(out, attrs, tree)
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
        from ..algorithms.base import Loss
        from ..dynamics import model as M
        from ..network import Network
        from ..simulation import _device

        self.pt, p, c = pt, pt.protocol, pt.circuit
        self.spec = c.dynamics
        self.device = _device(p.device) if p.engine == "torch" else torch.device("cpu")
        self.dtype = torch.float64 if p.engine == "brian2" else getattr(torch, self.spec.dtype)
        self._load_examples(data_dir)
        net = Network(c, self.x.shape[1], with_feedback=True, seed=c.seed)
        self.M, self.model = M, M.build_model(self.spec, net)
        self.loss = Loss(c.loss, c.network.expanded()[-1].size)
        self.generator = torch.Generator().manual_seed(c.seed)
        self.engine = self._engine(M.Weights.of(net, self.dtype, self.device))
        self.timeline = Timeline(p, trial_time(self.spec, p.stimuli))
        self.interventions = Interventions(p, c.seed, self.model, self.engine, self.spec, self.loss,
                                           self.device, self.dtype)

    def _load_examples(self, data_dir) -> None:
        """The trials' stimuli (x, y) in presentation order and the evaluation set (ex, ey)."""
        from .. import data as D

        p, c = self.pt.protocol, self.pt.circuit
        d = c.data
        splits = D.load(d.dataset, data_dir=data_dir, val_split=d.val_split, seed=c.seed, limit=d.limit,
                        synthetic=d.synthetic.model_dump())
        stim = getattr(splits, p.stimuli.split)
        n = p.trials * p.stimuli.batch
        g = torch.Generator().manual_seed(c.seed)
        order = torch.randperm(len(stim.y), generator=g) if p.stimuli.order == "shuffled" else torch.arange(len(stim.y))
        order = order.repeat(-(-n // len(order)))[:n]  # cycle through the split when count exceeds it
        self.x, self.y = self._to(stim.x[order]), stim.y[order].to(self.device)
        ev = getattr(splits, p.evaluate.split)
        self.ex, self.ey = self._to(ev.x[: p.evaluate.count]), ev.y[: p.evaluate.count].to(self.device)

    def _engine(self, weights):
        p = self.pt.protocol
        if p.engine == "brian2":
            from ..engines.brian2 import Brian2Engine

            return Brian2Engine(self.model, weights, self.loss, generator=self.generator, codegen=p.codegen)
        from ..engines.torch import TorchEngine

        return TorchEngine(self.model, weights, self.loss, generator=self.generator)

    def _to(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1).to(self.device, self.dtype)

    @property
    def masks(self) -> dict:
        """Lesion index -> (kind, l, mask of cut synapses)."""
        return self.interventions.masks

    # ------------------------------------------------------------------- run
    def evaluate(self, w) -> tuple[float, float]:
        from ..simulation import settled_error

        return settled_error(self.model, w, self.loss, self.ex, self.ey)

    def run(self, progress: bool) -> dict:
        p = self.pt.protocol
        n_trials = p.trials
        recorded = _recorded_trials(p)
        every = p.evaluate.every or n_trials
        ref = Reference(self) if p.reference == "discrete" else None
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
        return point_tree(p, self.spec, self.engine.w.W[1 : self.model.L + 1], log.metrics, traces, recorded, wall)

    def _trial(self, k: int, recorded: bool, h0, ref: Reference | None):
        """Present trial k under the interventions active at its onset; the presentation."""
        B = self.pt.protocol.stimuli.batch
        xb, yb = self.x[k * B : (k + 1) * B], self.y[k * B : (k + 1) * B]
        iv = self.interventions
        act = self.timeline.active(k)
        iv.lesion(act)
        iv.set_beta(act)
        held = iv.hold(act)
        if ref is not None:
            ref.expect(self.engine.w, xb, yb)
        record = {pop: vs for pop, vs in self.spec.record.items()} if recorded else {}
        pres = self.engine.present(xb, yb, record, iv.perturbation(act, yb, h0))
        iv.restore(held)
        iv.keep_cut()
        self._check_finite(k)
        if ref is not None:
            ref.compare(self.engine.w, xb, yb)
        return pres

    def _inter_trial(self, h: list) -> list:
        """The blank interval: input off, activities relax from where the trial left them."""
        from ..engines.torch import Perturbation

        n = self.spec.steps(self.pt.protocol.stimuli.inter_trial)
        eng = self.engine
        eng.perturb = Perturbation(h0=[None] + [v.clone() for v in h[1:]])
        try:
            settled, _ = eng.forward_phase(torch.zeros_like(h[0]), steps=n)
        finally:
            eng.perturb = type(eng.perturb)()
        return [None] + settled[1:]

    def _check_finite(self, k: int) -> None:
        for kind, name in (("W", "forward"), ("V", "feedback")):
            for l, W in enumerate(getattr(self.engine.w, kind)):
                if W is not None and not torch.isfinite(W).all():
                    raise DivergenceError(f"{self.pt.label}: diverged at trial {k} "
                                          f"(time {self.timeline.onset(k):.4g} s): {name}.layer{l} weights are "
                                          "not finite (NaN/inf); lower the plasticity rate")


def _recorded_trials(p: Protocol) -> set[int]:
    """The trials whose traces are kept: the first `record.trials`, or those listed."""
    if isinstance(p.record.trials, int):
        return set(range(min(p.record.trials, p.trials)))
    return set(p.record.trials)


def _progress_bar(total: int, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, unit="trial", desc=desc, leave=False)


class _Log:
    """The metrics rows, one per evaluation (`log(k)` after k trials)."""

    def __init__(self, run: ContinuousRun, ref: Reference | None):
        self.run, self.ref = run, ref
        self.metrics: dict[str, list] = {}
        self.last = [None] + [W.clone() for W in run.engine.w.W[1:]]

    def __call__(self, k: int) -> None:
        run, w, L = self.run, self.run.engine.w, self.run.model.L
        err, lossv = run.evaluate(w)
        row = {"trial": k, "time": run.timeline.onset(k), "phase": run.timeline.phase_index(k - 1 if k else 0),
               "test_error": err, "test_loss": lossv}
        for l in range(1, L + 1):  # how much each layer learnt since the last evaluation
            row[f"dW_layer{l}"] = float((w.W[l] - self.last[l]).norm())
            self.last[l] = w.W[l].clone()
        if self.ref is not None:
            row.update(self.ref.columns(run.evaluate, L))
        for name, v in row.items():
            self.metrics.setdefault(name, []).append(v)


# --------------------------------------------------------- the discrete reference


class Reference:
    """The discrete rule beside the continuous one (`reference: discrete`): its own weight
    trajectory from the same start, and each trial the angle and relative distance between
    the continuous ΔW_l and the discrete rule's from the same weights."""

    def __init__(self, run: ContinuousRun):
        self.M, self.model, self.loss, self.generator = run.M, run.model, run.loss, run.generator
        w = run.engine.w
        self.w = self.M.Weights([None if W is None else W.clone() for W in w.W], w.b,
                                [None if V is None else V.clone() for V in w.V], w.c)
        self.pending: dict[str, list] = {}

    def expect(self, w, x, y) -> None:
        """Before a trial: the weights `w` it starts from and the discrete rule's ΔW from them."""
        self.W0 = [None] + [W.clone() for W in w.W[1:]]
        self.dW = self.update(_copy(w), x, y)

    def compare(self, w, x, y) -> None:
        """After the trial: compare its ΔW with the expected one; advance the reference."""
        for l, dref in self.dW.items():
            dcont = w.W[l] - self.W0[l]
            self.pending.setdefault(f"angle_layer{l}", []).append(_angle(dcont, dref))
            self.pending.setdefault(f"distance_layer{l}", []).append(
                float((dcont - dref).norm() / dref.norm().clamp_min(1e-30)))
        self.step(x, y)

    def columns(self, evaluate, L: int) -> dict:
        """A metrics row's reference columns: its error, the mean angles and distances since the last row."""
        row = {"reference_test_error": evaluate(self.w)[0]}
        for l in range(1, L + 1):  # nan where no update was compared (the first row)
            for name in (f"angle_layer{l}", f"distance_layer{l}"):
                vals = self.pending.pop(name, [])
                row[name] = float(np.mean(vals)) if vals else np.nan
        return row

    def update(self, w, x, y) -> dict:
        """The discrete rule's ΔW from weights `w` (a copy): feedback plasticity on the
        settled activities with the engine's next random draws, then DTP targets and DTP1."""
        M = self.M
        g = torch.Generator().set_state(self.generator.get_state())
        M.update_feedback(self.model, M.settled_forward(self.model, w, x), w, g)
        return M.discrete_update(self.model, w, x, y, self.loss)

    def step(self, x, y) -> None:
        """Advance the discrete reference trajectory by one trial."""
        for l, dW in self.update(self.w, x, y).items():
            self.w.W[l] = self.w.W[l] + dW


def _copy(w):
    from ..dynamics.model import Weights

    return Weights(*[[None if v is None else v.clone() for v in part] for part in (w.W, w.b, w.V, w.c)])


def _angle(a: torch.Tensor, b: torch.Tensor) -> float:
    """Angle (degrees) between two weight changes, flattened."""
    a, b = a.flatten().double(), b.flatten().double()
    cos = (a @ b) / (a.norm() * b.norm()).clamp_min(1e-300)
    return float(torch.rad2deg(torch.arccos(cos.clamp(-1, 1))))
