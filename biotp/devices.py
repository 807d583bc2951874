"""The one device policy of every command and function that takes a `device`:

- not given (None or "auto"): CUDA when available, else the CPU;
- given: that device, or a ConfigError naming it when it is unknown or not on this machine
  (never a silent fall-back: a run asked for on a GPU is not quietly run on the CPU).

Data go to the device whole when they fit (`fits`): always on the CPU, on a GPU when they take
at most half its free memory; otherwise they stay in pinned host memory and each batch is
copied over asynchronously (`to_device`).
"""

from __future__ import annotations

import torch

from .config.errors import ConfigError


def pick_device(device: str | torch.device | None = None) -> torch.device:
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"--device {device!r}: unknown device; expected cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {device}: CUDA is not available on this machine; use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s); "
                              f"expected cuda:0 .. cuda:{torch.cuda.device_count() - 1}")
    elif dev.type != "cpu":
        raise ConfigError(f"--device {device}: expected cpu, cuda or cuda:N")
    return dev


def fits(device: torch.device, nbytes: int) -> bool:
    """Whether `nbytes` of data may live on `device` for a whole run (see the module docstring)."""
    if device.type != "cuda":
        return True
    free, _ = torch.cuda.mem_get_info(device)
    return nbytes <= free // 2


def host(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """`t` kept on the host for `device`: pinned (page-locked) when that is a GPU, so copies of
    its slices can run while the GPU computes."""
    return t.pin_memory() if device.type == "cuda" else t


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """`t` on `device`, copied without waiting where the source can be pinned."""
    if t.device == device:
        return t
    if device.type == "cuda" and t.device.type == "cpu":
        return (t if t.is_pinned() else t.pin_memory()).to(device, non_blocking=True)
    return t.to(device)
