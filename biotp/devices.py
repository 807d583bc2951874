"""The one device policy of every command and function that takes a `device`:

- not given (None or "auto"): CUDA when available, else the CPU;
- given: that device, or a ConfigError naming it when it is unknown or not on this machine
  (never a silent fall-back: a run asked for on a GPU is not quietly run on the CPU).
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
