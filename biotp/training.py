"""Training a circuit with its discrete learning rule (the torch fast path).

Per epoch: shuffle (seeded by seed and epoch, so a resumed run sees the same order), train
(parallel: forward and feedback weights on every batch; alternating: a feedback pass, then a
forward pass, seed 004 §2.1), evaluate, and rewrite the run file atomically with the metrics
and a checkpoint.  A resumed run restores parameters, optimiser state and the RNG, so it
reproduces the uninterrupted run exactly.
"""

from __future__ import annotations

import json
import math
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from .progress import bar as progress_bar

from . import data as datasets
from .algorithms import Algorithm, build
from .augment import augment, gaussian_noise
from .autoencoder import reconstruction_mse
from .circuit import Circuit
from .devices import fits, host, pick_device, to_device
from .errors import BiotpError, ConfigError, DivergenceError, RunFileError
from .metrics import JML_EXAMPLES, bp_angles, rule_jmls
from .optim import make_optimizer
from .runs import Run, check_same_circuit, claim, open_run, release, resumed_attrs, run_attrs, write_run


class Session:
    """A rule, its optimisers and data on a device: the state a run file checkpoints."""

    def __init__(self, circuit: Circuit, *, data_dir=None, device=None):
        self.circuit = circuit
        self.device = pick_device(device)
        splits = datasets.load_for(circuit, data_dir)
        parts = [(s.x.flatten(1), s.y) for s in (splits.train, splits.val, splits.test)]
        # inputs on the device when they fit, else in pinned host memory, batch by batch to the
        # device (ImageNet-32's 15.7 GB of float32 on most GPUs); labels are small: on the device
        self.data_on_device = fits(self.device, sum(x.nelement() * x.element_size() for x, _ in parts))
        self.train, self.val, self.test = (
            (x.to(self.device) if self.data_on_device else host(x, self.device), y.to(self.device)) for x, y in parts
        )
        self.n_classes, self.input_shape = splits.train.n_classes, splits.train.input_shape
        if circuit.autoencoder is not None:  # an auto-encoder's target is its clean input
            self.train, self.val, self.test = ((x, x) for x, _ in (self.train, self.val, self.test))
        torch.manual_seed(circuit.seed)
        # data stay flat; the network reshapes them to the input shape where a layer is spatial
        self.rule: Algorithm = build(circuit, splits.train.input_shape, self.n_classes, self.device)
        self._first_loss: dict[str, float] = {}  # the first batch's losses, against which growth is divergence
        out, want = tuple(self.rule.net.shapes[-1]), (self.train[1].shape[1] if circuit.autoencoder else self.n_classes,)
        if out != want:
            raise ConfigError(f"{circuit.source or '<circuit>'}: network.layers: the last population has shape "
                              f"{list(out)}; expected a vector of {want[0]} units (one per "
                              f"{'input to reconstruct' if circuit.autoencoder else 'class'})")
        self.opt_forward = make_optimizer(circuit.optimizer, self.rule.forward_params())
        self.opt_feedback = make_optimizer(circuit.feedback.optimizer, self.rule.feedback_params())
        # the divergence check at the end of each pass, not per batch: on a GPU a per-batch check
        # would make the host wait for the device every batch
        self.defer_checks = self.device.type != "cpu"
        if hasattr(self.rule, "feedback_optimizer"):  # rules taking several feedback steps per batch (ldrl)
            self.rule.feedback_optimizer = self.opt_feedback

    # ------------------------------------------------------------------ training
    def batches(self, epoch: int):
        x, y = self.train
        g = torch.Generator().manual_seed(self.circuit.seed * 100_003 + epoch)
        order = torch.randperm(len(x), generator=g).to(x.device)
        bs = self.circuit.data.batch_size
        for i in range(0, len(x), bs):
            idx = order[i : i + bs]
            yield self.transform(to_device(x[idx], self.device), to_device(y[idx.to(y.device)], self.device), g)

    def transform(self, x, y, generator):
        """A training batch augmented (biotp/augment.py) and, for a denoising auto-encoder,
        corrupted, drawing from the epoch's seeded generator (so a resumed run sees the same)."""
        aug, ae = self.circuit.data.augment, self.circuit.autoencoder
        if aug is not None:
            x = augment(x, self.input_shape, aug, generator)
        if ae is not None:
            y = x  # the clean (augmented) input is the target
            if ae.corruption > 0:
                x = gaussian_noise(x, ae.corruption, generator)  # x̃ = x + ε (seed 002 eq. 3.22)
        return x, y

    def passes(self, epoch: int) -> list[tuple[bool, bool]]:
        """(train forward, train feedback) for each pass over the data in this epoch."""
        sched, fb = self.circuit.schedule, self.rule.trains_feedback
        if fb and epoch <= sched.feedback_warmup_epochs:
            return [(False, True)]
        if fb and sched.feedback_training == "alternating":
            return [(False, True), (True, False)]
        return [(True, fb)]

    def run_epoch(self, epoch: int, progress: bool = False) -> None:
        self.rule.set_epoch(epoch - 1)
        self.rule.train()
        passes = self.passes(epoch)
        n_batches = -(-len(self.train[0]) // self.circuit.data.batch_size)
        bar = progress_bar(total=n_batches * len(passes), desc=f"epoch {epoch}", leave=False, disable=not progress, lines=None)
        deferred = self.defer_checks
        for forward, feedback in passes:
            losses = []  # deferred: the pass's losses, kept on the device until its end
            for step, (x, y) in enumerate(self.batches(epoch), start=1):
                self.rule.zero_grad(set_to_none=True)
                result = self.rule.grads(x, y, forward=forward, feedback=feedback)
                if deferred:
                    losses.append((result.loss.detach(), result.feedback_loss))
                else:
                    self.check_finite(result.loss, result.feedback_loss, x, epoch, step)
                if forward:
                    self.opt_forward.step()
                if feedback and self.opt_feedback is not None:
                    self.opt_feedback.step()
                bar.update()
            if losses:  # the pass's one host sync: the same checks, step by step
                table = torch.stack([torch.stack((l, l.new_zeros(()) if f is None else f.detach())) for l, f in losses])
                for step, ((loss, fb_loss), (_, f)) in enumerate(zip(table.cpu().tolist(), losses), start=1):
                    self.check_finite(loss, None if f is None else fb_loss, x, epoch, step, deferred=True)
        bar.close()

    def check_finite(self, loss, feedback_loss, x, epoch: int, step: int, deferred: bool = False) -> None:
        """Stop on NaN/inf, naming where it first shows (a parameter, its update, or an
        activity), and on a loss grown EXPLOSION-fold since the first batch; either way
        naming the settings of the part that diverged.  `deferred`: checked at the end of the
        pass (on a GPU, so the host does not wait for the device every batch)."""
        loss, feedback_loss = (None if v is None else float(v) for v in (loss, feedback_loss))  # one read each
        if not (_finite(loss) and _finite(feedback_loss)):
            self.diverged(x, epoch, step, loss, feedback_loss, deferred)
        self.check_growth(loss, feedback_loss, epoch, step, deferred)

    def check_growth(self, loss: float, feedback_loss: float | None, epoch: int, step: int,
                     deferred: bool = False) -> None:
        """A finite loss grown EXPLOSION-fold (and above EXPLOSION) since the first batch has diverged too."""
        for name, v in (("loss", loss), ("feedback loss", feedback_loss)):
            if v is None:
                continue
            first = self._first_loss.setdefault(name, v)
            if v > EXPLOSION * max(first, 1.0):
                raise DivergenceError(
                    f"training diverged at epoch {epoch}, step {step}: the {name} grew from {first:.4g} to "
                    f"{v:.4g}{_DEFERRED if deferred else self._largest_update()}; "
                    f"{self._hint(name == 'feedback loss', name == 'loss')}")

    def diverged(self, x, epoch: int, step: int, loss, feedback_loss, deferred: bool = False) -> None:
        """Raise DivergenceError naming the first non-finite parameter, update or activity (on a
        GPU the check runs at the end of the pass, so what it names is the state after the pass)."""
        with torch.no_grad():
            params = list(self.rule.named_parameters())
            culprits = [_friendly(n) for n, p in params if not torch.isfinite(p).all()]
            culprits += [f"the update of {_friendly(n)}" for n, p in params
                         if p.grad is not None and not torch.isfinite(p.grad).all()]
            culprits += [f"the activity of {name}" for name, h in zip(self.rule.net.layer_names(), self.rule.net(x)[1:])
                         if not torch.isfinite(h).all()]
        first = (culprits or ["the loss" if not _finite(loss) else "the feedback loss"])[0]
        feedback = not _finite(feedback_loss) or any("feedback" in c for c in culprits)
        forward = not _finite(loss) or any("feedback" not in c for c in culprits)
        raise DivergenceError(f"training diverged at epoch {epoch}, step {step}: {first} is not finite "
                              f"(NaN/inf){_DEFERRED * deferred}; {self._hint(feedback, forward)}")

    @torch.no_grad()
    def _largest_update(self) -> str:
        """', the largest relative update: layer2.weight (‖grad‖/‖w‖ = ...)' of this step's gradients."""
        ratios = [(float(p.grad.norm() / p.norm().clamp_min(1e-30)), _friendly(n))
                  for n, p in self.rule.named_parameters() if p.grad is not None]
        if not ratios:
            return ""
        ratio, name = max(ratios)
        return f" (the largest relative update: {name}, ‖grad‖/‖w‖ = {ratio:.3g})"

    def _hint(self, feedback: bool, forward: bool = True) -> str:
        """The settings of the diverging parts, with their values: the feedback pathway's
        training, the forward weights' (the learning rate and the rule's target step)."""
        c, keys = self.circuit, {}
        if feedback:
            keys.update({"feedback.noise": c.feedback.noise, "feedback.optimizer.lr": c.feedback.optimizer.lr})
        if forward or not keys:
            keys.update({"optimizer.lr": c.optimizer.lr,
                         **{f"algorithm.{k}": getattr(c.algorithm, k) for k in ("eta_hat", "beta", "tau")
                            if hasattr(c.algorithm, k)}})
        return "settings involved: " + ", ".join(f"{k} = {v:g}" for k, v in keys.items()) + " (lower them)"

    # ---------------------------------------------------------------- evaluation
    def evaluate(self) -> dict[str, float]:
        """Loss and error on the whole training set (NaN without `schedule.eval_train`), error
        on validation and test; an
        auto-encoder reports reconstruction MSE (`<split>_mse`) and nan errors.  The random
        numbers a stochastic network draws here are returned to the generator, so training
        goes on the same whether or not an epoch was evaluated (`schedule.eval_every`)."""
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            return self._evaluate()

    @torch.no_grad()
    def _evaluate(self) -> dict[str, float]:
        self.rule.eval()
        ae = self.circuit.autoencoder is not None
        row = {}
        for split, (x, y) in (("train", self.train), ("val", self.val), ("test", self.test)):
            if split == "train" and not self.circuit.schedule.eval_train:
                x = x[:0]
                row["train_loss"] = float("nan")
            if len(x) == 0:
                row[f"{split}_error"] = row[f"{split}_mse"] = float("nan")
                continue
            out = torch.cat([self.rule.predict(to_device(x[i : i + 1000], self.device)) for i in range(0, len(x), 1000)])
            y = to_device(y, self.device)
            if split == "train":
                row["train_loss"] = float(self.rule.loss(out, y))
            if ae:
                row[f"{split}_error"], row[f"{split}_mse"] = float("nan"), reconstruction_mse(out, y)
            else:
                row[f"{split}_error"] = float((out.argmax(1) != y).float().mean())
        keys = ("train_loss", "train_error", "val_error", "test_error") + (("train_mse", "val_mse", "test_mse") if ae else ())
        return {k: row[k] for k in keys}

    def angles(self) -> dict[str, float]:
        """Angle to BP per layer on a fixed training batch (the first of epoch 0's order)."""
        x, y = next(self.batches(0))
        return {f"angle_{k}": v for k, v in bp_angles(self.rule, x, y).items()}

    def jmls(self) -> dict[str, float]:
        """IJML, PJML and TJML per layer (seed 003 defs. 1-3) of the rule's feedback on the first
        JML_EXAMPLES examples of the same fixed batch as `angles`."""
        x, _ = next(self.batches(0))
        return rule_jmls(self.rule, x, JML_EXAMPLES)

    # ---------------------------------------------------------------- checkpoints
    def state(self, epoch: int) -> dict:
        tree = {"model": {k: v for k, v in self.rule.state_dict().items()}, "rng": torch.get_rng_state()}
        for name, opt in (("opt_forward", self.opt_forward), ("opt_feedback", self.opt_feedback)):
            if opt is not None:
                tree[name] = _optimizer_tree(opt)
        tree["epoch"] = np.int64(epoch)
        return tree

    def load_state(self, tree: dict) -> int:
        model = {k: torch.as_tensor(np.asarray(v)) for k, v in tree["model"].items()}
        self.rule.load_state_dict(model)
        torch.set_rng_state(torch.as_tensor(np.asarray(tree["rng"]), dtype=torch.uint8))
        for name, opt in (("opt_forward", self.opt_forward), ("opt_feedback", self.opt_feedback)):
            if opt is not None and name in tree:
                opt.load_state_dict(_optimizer_from_tree(tree[name]))
        return int(tree["epoch"])


_DEFERRED = " (checked at the end of the pass)"
EXPLOSION = 1e4  # a loss grown this many times (and above 1e4) since the first batch has diverged


def _finite(v: float | None) -> bool:
    return v is None or math.isfinite(v)


def _friendly(param_name: str) -> str:
    """net.layers.2.weight -> layer3.weight; net.feedback.3.weight -> feedback g3.weight."""
    parts = param_name.split(".")
    if parts[:2] == ["net", "layers"]:
        return f"layer{int(parts[2]) + 1}." + ".".join(parts[3:])
    if parts[:2] == ["net", "feedback"]:
        return f"feedback g{parts[2]}." + ".".join(parts[3:])
    return param_name


def _optimizer_tree(opt: torch.optim.Optimizer) -> dict:
    sd = opt.state_dict()
    state = {str(i): {k: v for k, v in s.items() if v is not None} for i, s in sd["state"].items()}
    return {"state": state, "param_groups": np.bytes_(json.dumps(sd["param_groups"]))}


def _optimizer_from_tree(tree: dict) -> dict:
    groups = tree["param_groups"]
    groups = json.loads(groups.decode() if isinstance(groups, bytes) else str(groups))
    for g in groups:  # JSON turns tuples into lists
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
    state = {
        int(i): {k: torch.as_tensor(np.asarray(v)) for k, v in s.items()} for i, s in tree.get("state", {}).items()
    }
    return {"state": state, "param_groups": groups}


def _check_resumable(run: Run) -> None:
    """A train run file with its circuit and a complete checkpoint, else a RunFileError
    naming the file and what it lacks (before any work)."""
    kind = run.attrs.get("kind", "train")
    if kind != "train":
        raise RunFileError(f"{run.path}: attribute kind is {kind!r}; expected a train run file (kind 'train', "
                           f"written by biotp train) to resume")
    run.circuit  # noqa: B018  (names a missing or malformed circuit_yaml)
    missing = [k for k in ("model", "rng", "epoch") if k not in run.checkpoint]
    if "checkpoint" not in run.groups or missing:
        what = "no /checkpoint group" if "checkpoint" not in run.groups else \
            f"/checkpoint lacks {', '.join(f'/checkpoint/{k}' for k in missing)}"
        raise RunFileError(f"{run.path}: {what}; expected a checkpoint (model, rng, epoch) written by biotp train "
                           f"to resume from")


def train(
    circuit: Circuit | None = None,
    *,
    out: str | Path | None = None,
    resume: str | Path | None = None,
    epochs: int | None = None,
    data_dir=None,
    device: str | None = None,
    track_angles: bool = False,
    track_jml: bool = False,
    progress: bool = True,
    command: str | None = None,
    log=None,
) -> Run | dict:
    """Train `circuit` (or continue the run file `resume`) and return the run.

    Writes the run file `out` (default: the resumed file) after every epoch.  Without `out`
    nothing is written and the metrics come back as a dict of arrays.  `track_angles` adds the
    per-layer angle to BP's update, `track_jml` the per-layer IJML/PJML/TJML of the rule's feedback
    (`biotp.metrics.rule_jmls`), each epoch on a fixed training batch; a resumed run keeps both.
    """
    metrics: dict[str, list] = defaultdict(list)
    start = 1
    if resume is not None:
        previous = open_run(resume)
        _check_resumable(previous)
        if circuit is not None:
            check_same_circuit(previous.circuit, circuit, resume)
        circuit = circuit or previous.circuit
        out = out or resume
        track_angles = track_angles or any(k.startswith("angle_") for k in previous.metrics)
        track_jml = track_jml or any(k.startswith("tjml_") for k in previous.metrics)
        for k, v in previous.metrics.items():
            metrics[k] = list(np.asarray(v))
    if circuit is None:
        raise BiotpError("train: give a circuit or a run file to resume")
    if track_angles and circuit.autoencoder is not None and circuit.autoencoder.tied:
        raise BiotpError(f"{circuit.source or '<circuit>'}: --track-angles: a tied decoder has no weight of its own "
                         f"to compare with BP's; expected autoencoder.tied: false")
    if epochs is not None:
        circuit = circuit.with_updates(f"schedule.epochs={epochs}")
    if out is not None:
        claim(out)  # before any work: a second writer of `out` is refused now
    session = Session(circuit, data_dir=data_dir, device=device)
    if resume is not None:
        if "checkpoint" not in previous.groups:
            raise BiotpError(f"{resume}: no /checkpoint group to resume from")
        start = session.load_state(previous.checkpoint) + 1
    attrs = run_attrs(circuit, command, kind="train", algorithm=circuit.algorithm.name, device=str(session.device))
    if resume is not None:
        attrs = resumed_attrs(previous.attrs, attrs)
    total = circuit.schedule.epochs
    bar = progress_bar(range(start, total + 1), desc=f"{circuit.name} [{circuit.algorithm.name}]", disable=not progress, initial=start - 1, total=total, unit="epoch", lines="step")
    for epoch in bar:
        t0 = time.perf_counter()
        try:
            session.run_epoch(epoch, progress=progress)
        except DivergenceError as err:
            kept = f"; the run file {out} keeps the last good checkpoint (epoch {epoch - 1})" if out and epoch > 1 else ""
            raise DivergenceError(f"{err}{kept}") from None
        seconds = time.perf_counter() - t0
        if epoch % circuit.schedule.eval_every == 0 or epoch == total:  # else only the checkpoint is written
            row = {"epoch": epoch, **session.evaluate(), "seconds": seconds}
            if track_angles:
                row.update(session.angles())
            if track_jml:
                row.update(session.jmls())
            for k, v in row.items():
                metrics[k].append(v)
            score = "mse" if "val_mse" in row else "error"  # auto-encoders: reconstruction error
            bar.set_postfix(loss=f"{row['train_loss']:.4f}", val=f"{row[f'val_{score}']:.4f}",
                            test=f"{row[f'test_{score}']:.4f}")
            if log is not None:
                log(row)
        if out is not None:
            tree = {"metrics": {k: np.asarray(v, dtype=float) for k, v in metrics.items()}, "checkpoint": session.state(epoch)}
            write_run(out, attrs, tree)
    if out is not None:
        release(out)
        return open_run(out)
    return {k: np.asarray(v, dtype=float) for k, v in metrics.items()}
