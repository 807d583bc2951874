"""`biotp.simulate`: present a stream of examples to a circuit's continuous-time model.

Each example (or batch of examples presented side by side, torch only) gets a forward
phase then a target phase (durations from the circuit's `dynamics:` block); targets
settle by the chosen relaxation while the forward weights change online.  Traces named
in `dynamics.record` are kept as arrays [time, example, neuron] and, with `out`, written
to an HDF5 run file:

  /traces/<population>/<variable>   attrs: times (s), time_unit "s", unit "1"
  /settling/{forward,target}_steps  [example]
  /settling/{forward,target}_residual  [example, layer]  ‖dy_l/dt‖ (1/s) at the end
  /stream/index                     [example] int64: each presented example's index in the
                                    dataset split it was drawn from (attrs dataset, split;
                                    split "given" when the caller passed x, y: 0..n-1)
  /stream/label                     [example] int64: its label (when the labels are integers)
  /summary/<name>                   scalars of the printed summary
Files written before /stream existed lack it; readers treat it as optional.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .circuit import Circuit, load_circuit
from .devices import pick_device
from .dynamics.reference import settled_error
from .engines.base import check_finite
from .errors import BiotpError, ConfigError
from .runs import Leaf, claim, release, run_attrs, write_run

BACKENDS = ("torch", "brian2")


@dataclass
class SimulationRun:
    """A finished simulation: traces as arrays, settling statistics and the summary."""

    circuit: Circuit
    backend: str
    times: np.ndarray  # sample times within a presentation (s)
    traces: dict  # population -> variable -> [time, example, neuron]
    settling: dict  # name -> array
    summary: dict
    weights: object = None  # biotp.engines.base.Parameters after the stream
    path: Path | None = None

    def summary_text(self) -> str:
        s = self.summary
        lines = [
            f"backend {self.backend}: {s['examples']} examples in {s['wall_time']:.2f} s "
            f"({s['examples_per_s']:.1f} examples/s)",
            f"test error  before {100 * s['error_before']:.2f}%  after {100 * s['error_after']:.2f}%"
            f"   (loss {s['loss_before']:.4f} -> {s['loss_after']:.4f}, {s['n_test']} test examples)",
            f"settling steps  forward {s['forward_steps_mean']:.1f}  target {s['target_steps_mean']:.1f}  (mean per example)",
        ]
        for phase in ("forward", "target"):
            res = self.settling[f"{phase}_residual"]
            if res.size and not np.isnan(res).all():
                worst = np.nanmax(np.where(np.isnan(res), -np.inf, res), axis=0)
                per = "  ".join(f"layer{l + 1} {v:.3g}" for l, v in enumerate(worst) if np.isfinite(v))
                lines.append(f"final residual ‖dy/dt‖ (1/s, max over examples), {phase}: {per}")
        if self.path:
            lines.append(f"run file: {self.path}")
        return "\n".join(lines)


def _stream(circuit: Circuit, examples: int | None, data_dir, seed: int):
    """(train stream x, y; test x, y; the stream's indices into the training split) from the
    circuit's dataset, shuffled by `seed`; the indices let a run file name what it presented."""
    from . import data as D

    splits = D.load_for(circuit, data_dir)
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(splits.train.y), generator=g)
    if examples is not None:
        order = order[:examples]
    return splits.train.x[order], splits.train.y[order], splits.test.x, splits.test.y, order


def simulate(
    circuit: Circuit | str | Path,
    backend: str = "torch",
    *,
    x: torch.Tensor | None = None,
    y: torch.Tensor | None = None,
    examples: int | None = None,
    duration: float | str | None = None,
    overrides: tuple[str, ...] | list[str] = (),
    seed: int | None = None,
    device: str | None = None,
    batch_size: int | None = None,
    net=None,
    out: str | Path | None = None,
    data_dir: str | None = None,
    codegen: str = "numpy",
    progress: bool = False,
    command: str | None = None,
    test: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> SimulationRun:
    """Run a circuit's continuous-time model over a stream of examples.

    circuit     a Circuit or a YAML path (its `dynamics:` block is required; defaults apply
                if it is empty); `overrides` are `key.path=value` assignments.
    x, y        the examples (tensors); default: `examples` shuffled training examples of the
                circuit's dataset (all if None), limited to `duration` of simulated time
                ('1 s' or seconds) divided by the presentation time.
    net         a `biotp.network.Network` to simulate (default: built from the circuit with
                `seed`); its weights are copied, not changed.
    batch_size  examples presented side by side (torch); default 1 with plasticity (an
                online stream), else the circuit's data.batch_size.  brian2 presents the
                examples one after another, `batch_size` (default 25) per brian2 run.
    backend     'torch' or 'brian2' (`codegen`: 'numpy' or 'cython').
    test        (x, y) on which to measure error before/after (default: the dataset's test
                split, or the stream itself when x is given).
    """
    from .dynamics.model import check_layers
    from .dynamics.units import parse_quantity

    if not isinstance(circuit, Circuit):
        circuit = load_circuit(circuit, overrides)
    elif overrides:
        circuit = circuit.with_updates(*overrides)
    if seed is not None:
        circuit = circuit.model_copy(update={"seed": seed})
    if circuit.dynamics is None:
        circuit = circuit.with_updates("dynamics={}")
    spec = circuit.dynamics
    if backend not in BACKENDS:
        raise ConfigError(f"backend {backend!r}: expected one of {', '.join(BACKENDS)}")
    if duration is not None and not isinstance(duration, (int, float)):
        try:
            duration = parse_quantity(duration, "time")
        except ValueError as err:
            raise ConfigError(f"--duration {duration!r}: {err}") from None
    if duration is not None and not 0 < duration < float("inf"):
        raise ConfigError(f"--duration {duration!r} s: expected a positive, finite time")
    if out is not None:
        claim(out)  # before any work: a second writer of `out` is refused now
    dev = pick_device(device) if backend == "torch" else torch.device("cpu")
    dtype = torch.float64 if backend == "brian2" else getattr(torch, spec.dtype)  # brian2 computes in float64

    check_layers(circuit)  # before any data is read
    if x is None:
        x, y, tx, ty, index = _stream(circuit, examples, data_dir, circuit.seed)
        test = test if test is not None else (tx, ty)
        drawn = {"dataset": circuit.data.dataset, "split": "train"}
    else:
        x, y = x[:examples], y[:examples]
        test = test if test is not None else (x, y)
        index = torch.arange(len(x))
        drawn = {"split": "given", "note": "x, y passed by the caller: the index is the position in them"}
    presentation = spec.forward_phase + spec.target_phase
    if duration is not None:
        n = max(1, int(round(duration / presentation, 9)))
        x, y = x[:n], y[:n]
    index = index[: len(x)]
    x = x.flatten(1).to(dev, dtype)
    y = y.to(dev)
    model, engine, loss = build(circuit, backend, x.shape[1], device=dev, dtype=dtype, codegen=codegen, net=net)
    batch = batch_size or (25 if backend == "brian2" else 1 if model.plastic else circuit.data.batch_size)

    tx, ty = test[0].flatten(1).to(dev, dtype), test[1].to(dev)
    before = settled_error(model, engine.parameters(), loss, tx, ty)
    traces: dict = {}
    fsteps, tsteps, fres, tres = [], [], [], []
    L = model.L
    start = time.perf_counter()
    bar = None
    if progress:
        from .progress import bar as progress_bar

        bar = progress_bar(total=len(x), unit="ex", desc=f"simulate ({backend})", lines="close")
    for i in range(0, len(x), batch):
        p = engine.present(x[i : i + batch], y[i : i + batch])
        nb = len(x[i : i + batch])
        which = f"example {i}" if nb == 1 else f"examples {i}-{i + nb - 1}"
        check_finite(p, engine.parameters(), model, f"{which} of the stream (the presentation starting "
                     f"{i // batch * presentation:.4g} s into it)")
        for (pop, var), arr in p.traces.items():
            traces.setdefault(pop, {}).setdefault(var, []).append(arr.detach().cpu().numpy())
        fsteps += [p.forward.steps] * nb
        tsteps += [p.target.steps] * nb
        fres += [[p.forward.residual.get(l, np.nan) for l in range(1, L + 1)]] * nb
        tres += [[p.target.residual.get(l, np.nan) for l in range(1, L + 1)]] * nb
        if bar is not None:
            bar.update(nb)
    wall = time.perf_counter() - start
    if bar is not None:
        bar.close()
    weights = engine.parameters()
    after = settled_error(model, weights, loss, tx, ty)
    traces = {pop: {var: np.concatenate(parts, axis=1) for var, parts in vs.items()} for pop, vs in traces.items()}
    n_f, n_t = spec.steps(spec.forward_phase), spec.steps(spec.target_phase)
    times = np.arange(0, n_f + n_t + 1, spec.record_every) * spec.dt
    settling = {
        "forward_steps": np.array(fsteps), "target_steps": np.array(tsteps),
        "forward_residual": np.array(fres, dtype=float).reshape(-1, L),
        "target_residual": np.array(tres, dtype=float).reshape(-1, L),
    }
    summary = {
        "examples": len(x), "wall_time": wall, "examples_per_s": len(x) / wall if wall > 0 else float("inf"),
        "error_before": before[0], "error_after": after[0], "loss_before": before[1], "loss_after": after[1],
        "n_test": len(ty), "forward_steps_mean": float(np.mean(fsteps)), "target_steps_mean": float(np.mean(tsteps)),
    }
    run = SimulationRun(circuit, backend, times, traces, settling, summary, weights)
    if out is not None:
        tree = {
            "traces": {pop: {var: Leaf(arr, {"times": times, "time_unit": "s", "unit": model.unit(pop, var),
                                             "dims": "time, example, neuron"}) for var, arr in vs.items()}
                       for pop, vs in traces.items()},
            "settling": settling,
            "stream": stream_tree(index, y, drawn),
            "summary": {k: np.asarray(v) for k, v in summary.items()},
        }
        attrs = run_attrs(circuit, command, kind="simulate", backend=backend, device=str(dev))
        run.path = write_run(out, attrs, tree)
        release(out)
    return run


def stream_tree(index: torch.Tensor, y: torch.Tensor, drawn: dict) -> dict:
    """/stream: which examples were presented (index into the split, attrs `drawn`) and their
    labels, so an export can name them; no label for non-integer targets."""
    tree = {"index": Leaf(np.asarray(index.cpu(), dtype=np.int64), {**drawn, "dims": "example"})}
    if y.ndim == 1 and not torch.is_floating_point(y):
        tree["label"] = Leaf(np.asarray(y.cpu(), dtype=np.int64), {"dims": "example"})
    return tree


def build(circuit: Circuit, backend: str, input_size: int, *, device="cpu", dtype=torch.float64,
          codegen: str = "numpy", net=None, generator: torch.Generator | None = None):
    """(model, engine, loss) of `circuit` on inputs of `input_size`: the model built from the
    circuit, the engine from its registry, the initial parameters those of the fast path's
    network for the same seed (or of `net`)."""
    from .algorithms.base import Loss
    from .dynamics.model import build_model
    from .engines.base import Parameters, engine_class
    from .network import Network

    model = build_model(circuit, input_size)
    if net is None:
        net = Network(circuit, input_size, with_feedback=True, seed=circuit.seed)
    params = Parameters.from_network(net, dtype, device)
    loss = Loss(circuit.loss, model.populations[f"layer{model.L}"].size)
    options = {"codegen": codegen} if backend == "brian2" else {
        "dtype": dtype, "device": device, "generator": generator or torch.Generator().manual_seed(circuit.seed)}
    return model, engine_class(backend)(model, params, **options), loss


# ------------------------------------------------------------------------------ CLI


__all__ = ["SimulationRun", "simulate", "BiotpError"]
