"""Continuous-time training: epochs of the circuit's continuous model over its training set.

Per epoch the training set is shuffled exactly as `biotp train` shuffles it (seeded by
seed and epoch, so the discrete and the continuous run see the same batches) and presented
in mini-batches side by side: a forward phase, the events, a target phase during which the
weights change by the online rule (the batch mean of each example's three-factor change).
After each epoch the settled forward pass is evaluated on the training, validation and test
splits, and the run file is rewritten atomically:

  /metrics/<name>   per epoch: epoch, train_loss, train_error, val_error, test_error, seconds,
                    examples_per_s (as `biotp train`), and the settling statistics
                    forward_steps, target_steps (mean per batch) and forward_residual,
                    target_residual (the largest ‖dy/dt‖ in 1/s at a phase's end)
  /checkpoint/      parameters W, b, V, c by layer, the engine's random state; attrs epoch

A resumed run restores the checkpoint and continues with the same batches and draws, so it
ends where an uninterrupted run ends.
"""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from .progress import bar as progress_bar

from .augment import augment
from .circuit import Circuit
from .engines.base import Parameters, check_finite
from .errors import BiotpError
from .runs import Run, check_same_circuit, claim, open_run, release, resumed_attrs, run_attrs, write_run

PARTS = ("W", "b", "V", "c")


def train_continuous(circuit: Circuit | None = None, *, engine: str = "torch", out: str | Path | None = None,
                     resume: str | Path | None = None, epochs: int | None = None, data_dir=None,
                     device: str | None = None, codegen: str = "numpy", reference: bool = False,
                     progress: bool = True, command: str | None = None) -> Run | dict:
    """Train `circuit`'s continuous-time model (or continue the run file `resume`); the
    batch size and epochs are the circuit's (`data.batch_size`, `schedule.epochs`).

    `reference` runs the fast path's own rule beside it (`dynamics.reference.Reference`):
    each epoch adds reference_test_error (its own trajectory from the same start, on the
    same batches) and the mean angle_layer<l>, distance_layer<l> between the continuous
    update of each batch and the fast path's from the same weights."""
    from . import data as datasets
    from .dynamics.model import check_layers
    from .dynamics.reference import Reference, settled_error, settled_output
    from .devices import pick_device
    from .simulation import build

    metrics: dict[str, list] = defaultdict(list)
    previous = None
    if resume is not None:
        previous = open_run(resume)
        reference = reference or any(k.startswith("angle_layer") for k in previous.metrics)
        if previous.attrs.get("kind") != "continuous":
            raise BiotpError(f"{resume}: not a continuous-time training run (kind {previous.attrs.get('kind')!r})")
        if circuit is not None:
            check_same_circuit(previous.circuit, circuit, resume)
        circuit, out = circuit or previous.circuit, out or resume
        engine = previous.attrs.get("engine", engine)
        for k, v in previous.metrics.items():
            metrics[k] = list(np.asarray(v))
    if circuit is None:
        raise BiotpError("train_continuous: give a circuit or a run file to resume")
    if epochs is not None:
        circuit = circuit.with_updates(f"schedule.epochs={epochs}")
    if circuit.dynamics is None:
        circuit = circuit.with_updates("dynamics={}")
    check_layers(circuit)
    if out is not None:
        claim(out)  # before any work: a second writer of `out` is refused now
    dev = pick_device(device) if engine == "torch" else torch.device("cpu")
    dtype = torch.float64 if engine == "brian2" else getattr(torch, circuit.dynamics.dtype)
    splits = datasets.load_for(circuit, data_dir)
    data = {name: (s.x.flatten(1).to(dev, dtype), s.y.to(dev))
            for name, s in (("train", splits.train), ("val", splits.val), ("test", splits.test))}
    model, eng, loss = build(circuit, engine, data["train"][0].shape[1], device=dev, dtype=dtype, codegen=codegen)
    start = 1
    if previous is not None:
        if "checkpoint" not in previous.groups:
            raise BiotpError(f"{resume}: no /checkpoint group to resume from")
        start = _load(eng, previous.checkpoint, dtype, dev) + 1
    ref = None
    if reference and start <= circuit.schedule.epochs:
        ref = Reference(circuit, model, data["train"][0].shape[1], eng.parameters())
        if previous is not None:  # the reference's own trajectory continues from its checkpoint
            if "reference" not in previous.checkpoint:
                raise BiotpError(f"{resume}: its checkpoint has no reference weights (written before they were "
                                 "kept); start the run again")
            ref.params = _parameters(previous.checkpoint["reference"], torch.float64, torch.device("cpu"))
    attrs = run_attrs(circuit, command, kind="continuous", engine=engine, rule=circuit.dynamics.plasticity.rule,
                      device=str(dev))
    if previous is not None:
        attrs = resumed_attrs(previous.attrs, attrs)
    total = circuit.schedule.epochs
    for epoch in range(start, total + 1):
        t0 = time.perf_counter()
        stats = _epoch(eng, model, circuit, data["train"], splits.train.input_shape, epoch, progress, ref)
        seconds = time.perf_counter() - t0
        if epoch % circuit.schedule.eval_every == 0 or epoch == total:  # else only the checkpoint is written
            evaluated = {k: v for k, v in data.items() if k != "train" or circuit.schedule.eval_train}
            row = {"epoch": epoch, **_evaluate(model, eng.parameters(), loss, evaluated, settled_output),
                   "seconds": seconds, "examples_per_s": len(data["train"][0]) / seconds, **stats}
            if ref is not None:
                row.update(ref.columns(lambda p: settled_error(model, p, loss, *data["test"]), model.L))
            for k, v in row.items():
                metrics[k].append(v)
            if progress:
                print(f"epoch {epoch}: train loss {row['train_loss']:.4f}  val error {100 * row['val_error']:.2f}%  "
                      f"test error {100 * row['test_error']:.2f}%  ({row['examples_per_s']:.0f} examples/s)", flush=True)
        if out is not None:
            tree = {"metrics": {k: np.asarray(v, dtype=float) for k, v in metrics.items()},
                    "checkpoint": _state(eng, epoch, ref)}
            write_run(out, attrs, tree)
    if out is not None:
        release(out)
        return open_run(out)
    return {k: np.asarray(v, dtype=float) for k, v in metrics.items()}


def _epoch(eng, model, circuit: Circuit, train, shape, epoch: int, progress: bool, ref=None) -> dict:
    """One pass over the training set in `biotp train`'s batches (augmented as `data.augment`
    says, from the same draws: inputs of `shape`); the settling statistics."""
    x, y = train
    g = torch.Generator().manual_seed(circuit.seed * 100_003 + epoch)  # the fast path's order
    order = torch.randperm(len(x), generator=g).to(x.device)
    bs, aug = circuit.data.batch_size, circuit.data.augment
    steps, residual = defaultdict(list), defaultdict(float)
    bar = progress_bar(total=len(x), desc=f"epoch {epoch}", unit="ex", unit_scale=True, leave=False, disable=not progress, lines=None)
    for b, i in enumerate(range(0, len(x), bs)):
        idx = order[i : i + bs]
        xb, yb = x[idx], y[idx]
        if aug is not None:
            xb = augment(xb, shape, aug, g)
        if ref is not None:
            ref.expect(eng.parameters(), xb, yb)
        p = eng.present(xb, yb, record={})
        spec = circuit.dynamics
        check_finite(p, eng.parameters(), model, f"epoch {epoch}, batch {b} (the presentation starting "
                     f"{b * (spec.forward_phase + spec.target_phase):.4g} s into the epoch's simulated time)")
        if ref is not None:
            ref.compare(eng.parameters(), xb, yb)
        for name, phase in (("forward", p.forward), ("target", p.target)):
            steps[name].append(phase.steps)
            residual[name] = max(residual[name], max(phase.residual.values(), default=0.0))
        bar.update(len(idx))
    bar.close()
    return {"forward_steps": float(np.mean(steps["forward"])), "target_steps": float(np.mean(steps["target"])),
            "forward_residual": residual["forward"], "target_residual": residual["target"]}


@torch.no_grad()
def _evaluate(model, params: Parameters, loss, data: dict, settled_output) -> dict:
    """Loss and error on the training set, error on validation and test, of the settled
    forward pass (the forward phase's fixed point); NaN for a split not in `data`."""
    row = {"train_loss": float("nan"), **{f"{split}_error": float("nan") for split in ("train", "val", "test")}}
    for split, (x, y) in data.items():
        if len(x) == 0:
            row[f"{split}_error"] = float("nan")
            continue
        out = torch.cat([settled_output(model, params, x[i : i + 1000]) for i in range(0, len(x), 1000)])
        if split == "train":
            row["train_loss"] = float(loss(out, y))
        row[f"{split}_error"] = float((out.argmax(1) != y).double().mean())
    return {k: row[k] for k in ("train_loss", "train_error", "val_error", "test_error")}


def _tree(params: Parameters) -> dict:
    return {part: {str(l): v.detach().cpu().numpy() for l, v in getattr(params, part).items()} for part in PARTS}


def _parameters(tree: dict, dtype, device) -> Parameters:
    conv = lambda d: {int(l): torch.as_tensor(np.asarray(v), dtype=dtype, device=device) for l, v in d.items()}  # noqa: E731
    return Parameters(*(conv(tree.get(part, {})) for part in PARTS))


def _state(eng, epoch: int, ref=None) -> dict:
    tree = _tree(eng.parameters())
    tree["epoch"] = np.int64(epoch)
    if ref is not None:
        tree["reference"] = _tree(ref.params)
    if getattr(eng, "generator", None) is not None:
        tree["generator"] = eng.generator.get_state().numpy()
    return tree


def _load(eng, tree: dict, dtype, device) -> int:
    eng.set_parameters(_parameters(tree, dtype, device))
    if "generator" in tree and getattr(eng, "generator", None) is not None:
        eng.generator.set_state(torch.as_tensor(np.asarray(tree["generator"]), dtype=torch.uint8))
    return int(tree["epoch"])
