"""Filters as pictures: the weights into each unit of a layer, drawn as images on a grid
(seed 002 Figure 3.4: 100 randomly chosen hidden units of the DTP-trained auto-encoder).

`filter_mosaic` builds the grid as an array, `filter_grid` draws it (one image pixel is
`scale` figure pixels, so the figure has a known size), `save_filters` reads a layer's weight
from a run file's /checkpoint and writes a PNG.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never a window

import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from ..errors import BiotpError  # noqa: E402

PAD = 1  # background pixels between (and around) the tiles
DPI = 100


def grid_shape(n: int) -> tuple[int, int]:
    """(rows, columns) of a near-square grid holding n tiles: ceil(√n) columns."""
    cols = max(1, math.ceil(math.sqrt(n)))
    return max(1, math.ceil(n / cols)), cols


def _image_layout(image_shape: tuple) -> tuple[int, int, int]:
    """(channels, height, width) of (H, W) or (C, H, W) with C = 1 or 3."""
    shape = tuple(int(s) for s in image_shape)
    if len(shape) == 2:
        shape = (1, *shape)
    if len(shape) != 3 or shape[0] not in (1, 3):
        raise ValueError(f"image_shape must be (H, W) or (C, H, W) with C = 1 or 3, got {image_shape}")
    return shape


def filter_mosaic(weights: np.ndarray, image_shape: tuple, n: int | None = None) -> np.ndarray:
    """The first `n` rows of `weights` (all by default) as images of `image_shape`, each scaled
    to [0, 1] by its own minimum and maximum (a constant filter is 0.5), on a near-square grid
    with PAD background pixels (0) between and around the tiles.  Shape
    [rows (H + PAD) + PAD, cols (W + PAD) + PAD], with a trailing RGB axis when C = 3."""
    C, H, W = _image_layout(image_shape)
    w = np.asarray(weights, dtype=np.float64).reshape(len(weights), -1)
    if w.shape[1] != C * H * W:
        raise ValueError(f"weights have {w.shape[1]} inputs per filter; image_shape {tuple(image_shape)} needs {C * H * W}")
    w = w[: len(w) if n is None else n]
    low, high = w.min(1, keepdims=True), w.max(1, keepdims=True)
    span = np.where(high > low, high - low, 1.0)
    tiles = np.where(high > low, (w - low) / span, 0.5).reshape(-1, C, H, W).transpose(0, 2, 3, 1)
    rows, cols = grid_shape(len(tiles))
    mosaic = np.zeros((rows * (H + PAD) + PAD, cols * (W + PAD) + PAD, C))
    for i, tile in enumerate(tiles):
        r, c = divmod(i, cols)
        top, left = PAD + r * (H + PAD), PAD + c * (W + PAD)
        mosaic[top : top + H, left : left + W] = tile
    return mosaic[..., 0] if C == 1 else mosaic


def filter_grid(weights: np.ndarray, image_shape: tuple, n: int | None = None, ax=None, scale: int = 2) -> Figure:
    """A figure of `filter_mosaic(weights, image_shape, n)` (rows of `weights` are filters).
    On its own the figure is exactly `scale` pixels per mosaic pixel at its dpi; with `ax`
    it is drawn there and the axes' figure is returned."""
    mosaic = filter_mosaic(weights, image_shape, n)
    if ax is None:
        height, width = mosaic.shape[:2]
        # +0.5 px: the canvas truncates size x dpi to whole pixels
        fig = Figure(figsize=((width * scale + 0.5) / DPI, (height * scale + 0.5) / DPI), dpi=DPI)
        ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(mosaic, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_axis_off()
    return ax.figure


def chosen_units(count: int, n: int | None, seed: int = 0) -> np.ndarray:
    """Indices of the units to draw: all of them when there are at most `n`, else `n` chosen
    at random (seeded), in order -- as seed 002 Figure 3.4 shows 100 random hidden units."""
    if n is None or count <= n:
        return np.arange(count)
    return np.sort(np.random.default_rng(seed).choice(count, n, replace=False))


def filter_figure(weights: np.ndarray, image_shape: tuple, title: str = "", n: int | None = 100, seed: int = 0,
                  width: float = 5.5) -> Figure:
    """A self-explaining picture of a layer's filters: the mosaic of `n` units (random,
    seeded, when the layer has more), at least `width` inches wide, with a title saying
    "k of m units" under `title`, and a colour bar for the per-filter scaling."""
    w = np.asarray(weights)
    units = chosen_units(len(w), n, seed)
    mosaic = filter_mosaic(w[units], image_shape)
    height_px, width_px = mosaic.shape[:2]
    fig = Figure(figsize=(width + 1.4, width * height_px / width_px + 0.9), dpi=DPI, layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(mosaic, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_axis_off()
    shown = f"{len(units)} of {len(w)} units" + (f" (random, seed {seed})" if len(units) < len(w) else "")
    ax.set_title("\n".join(t for t in (title, shown) if t), fontsize="medium")
    bar = fig.colorbar(image, ax=ax, shrink=0.8, ticks=[0.0, 1.0])
    bar.ax.set_yticklabels(["min", "max"])
    bar.set_label("weight, each filter scaled to its own range")
    return fig


def layer_filters(run, layer: int = 1, image_shape: tuple | None = None) -> tuple[np.ndarray, tuple]:
    """(weights [units, inputs...], image shape) of `layer` (1-based) from a run's checkpoint.
    Layer 1 reads an image of the dataset's shape; a convolution's filters are [in, k, k]."""
    from ..data import DATASETS

    model = run.checkpoint.get("model", {})
    key = f"net.layers.{layer - 1}.weight"
    if key not in model:
        have = sorted(k for k in model if k.endswith(".weight") and k.startswith("net.layers."))
        raise BiotpError(f"{run.path}: /checkpoint/model has no {key} (layer {layer}); weights present: "
                         f"{', '.join(have) or 'none'} (a tied decoder keeps none of its own)")
    w = np.asarray(model[key])
    if image_shape is None:
        if w.ndim == 4:
            image_shape = w.shape[1:]
        elif layer == 1:
            image_shape = DATASETS[run.circuit.data.dataset].input_shape
        else:
            raise BiotpError(f"{run.path}: layer {layer} is dense: give the image_shape its inputs form")
    return w, tuple(image_shape)


def save_filters(run_path: str | Path, out_png: str | Path, layer: int = 1, n: int | None = 100, seed: int = 0,
                 image_shape: tuple | None = None) -> Path:
    """Write `n` randomly chosen filters of `layer` of the run file's checkpoint (all when it
    has at most n units, in order) as a PNG, as in seed 002 Figure 3.4; `seed` fixes the choice."""
    from ..runs import open_run

    w, shape = layer_filters(open_run(run_path), layer, image_shape)
    w = w[chosen_units(len(w), n, seed)]
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    filter_grid(w, shape).savefig(out)
    return out
