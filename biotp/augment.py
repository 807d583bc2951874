"""Training-set augmentation: random crops with zero padding and random flips of images
(Bartunov et al. 2018, seed 004 §3.2: "an augmented training set consisting of vertical flips
and random crops applied to the original images"), and additive Gaussian noise on any input
(Lee et al.'s released code for the stochastic net of seed 002 §3.3.3 adds N(0, 0.3²)).

Applied to each training batch by `Session.transform`, drawing from the epoch's seeded
generator, so the same seed gives the same batches and a resumed run repeats them exactly;
validation and test inputs are never augmented.  Per batch the draws are, in this order, the
crop offsets, the flip coin of each image, then the noise.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

FLIP_AXES = {"horizontal": -1, "vertical": -2}  # mirror left-right / upside-down


def augment(x: torch.Tensor, shape: tuple[int, ...], spec, generator: torch.Generator) -> torch.Tensor:
    """Augment a batch `x` ([B, ...] holding inputs of `shape`, (C, H, W) for crops and flips)
    as `spec` (an `AugmentSpec`) says; the result has the layout of `x`."""
    if spec.crop_padding > 0 or spec.flip != "none":
        images = x.reshape(len(x), *shape)
        if spec.crop_padding > 0:
            images = random_crop(images, spec.crop_padding, generator)
        if spec.flip != "none":
            images = random_flip(images, FLIP_AXES[spec.flip], generator)
        x = images.reshape(x.shape)
    if spec.noise > 0:
        x = gaussian_noise(x, spec.noise, generator)
    return x


def gaussian_noise(x: torch.Tensor, sigma: float, generator: torch.Generator) -> torch.Tensor:
    """x + ε, ε ~ N(0, σ²) drawn from `generator` on the host (the same noise on any device)."""
    noise = torch.randn(x.shape, generator=generator, dtype=x.dtype)
    return x + sigma * noise.to(x.device)


def random_crop(images: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Pad by `padding` zeros on every side and crop the original size at offsets drawn
    uniformly from {0, ..., 2 padding}² per image."""
    offsets = torch.randint(0, 2 * padding + 1, (len(images), 2), generator=generator)
    return crop(images, padding, offsets.to(images.device))


def crop(images: torch.Tensor, padding: int, offsets: torch.Tensor) -> torch.Tensor:
    """Image b of the result is the zero-padded image b sliced at rows offsets[b, 0] + (0..H-1)
    and columns offsets[b, 1] + (0..W-1); `images` is [B, C, H, W]."""
    B, _, H, W = images.shape
    padded = F.pad(images, (padding, padding, padding, padding))
    rows = offsets[:, :1] + torch.arange(H, device=images.device)  # [B, H]
    cols = offsets[:, 1:] + torch.arange(W, device=images.device)  # [B, W]
    batch = torch.arange(B, device=images.device)[:, None, None]
    # advanced indices around a slice: the result is [B, H, W, C]
    return padded[batch, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


def random_flip(images: torch.Tensor, axis: int, generator: torch.Generator) -> torch.Tensor:
    """Mirror each image along `axis` with probability 1/2."""
    flip = (torch.rand(len(images), generator=generator) < 0.5).to(images.device)
    return torch.where(flip[:, None, None, None], images.flip(axis), images)
