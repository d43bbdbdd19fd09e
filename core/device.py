"""Device choice: CUDA when present, else the CPU. Every code path runs on both.

A worker machine with several GPUs runs one worker per GPU, each told its own device
(``HARDEN_DEVICE=cuda:1``; ``harden run --device cuda:1``). A device that does not exist is
refused before any work, naming the setting, instead of failing deep inside a job or, worse,
running on ``cuda:0``: the resolved device always carries its index and is made the current CUDA
device, so nothing allocated on "the" GPU lands on another one.
"""

from __future__ import annotations

import re

import torch

from core.errors import DeviceError

_DEVICE = re.compile(r"^(cpu|cuda(:\d{1,3})?)$")
_HINT = (
    "set HARDEN_DEVICE (a worker) or --device (harden run) to 'cpu', 'cuda' or 'cuda:N' with a "
    "GPU index this machine has, or leave it unset to use the first GPU if any, else the CPU"
)


def pick_device(preferred: str | None = None) -> torch.device:
    """``preferred`` ('cpu', 'cuda', 'cuda:1') wins when given; otherwise CUDA if available.

    A CUDA device comes back with its index ('cuda' -> 'cuda:0' or the current device). Raises
    DeviceError for a malformed name or a device this machine does not have."""
    if not preferred:
        preferred = "cuda" if torch.cuda.is_available() else "cpu"
    name = preferred.strip().lower()
    if not _DEVICE.match(name):
        raise DeviceError(
            f"device {preferred!r} is not a device name", hint=_HINT, device=preferred
        )
    if name == "cpu":
        return torch.device("cpu")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        raise DeviceError(
            f"device {preferred!r} was asked but this machine has no usable CUDA GPU",
            hint=_HINT,
            device=preferred,
        )
    index = int(name.split(":")[1]) if ":" in name else torch.cuda.current_device()
    if index >= count:
        raise DeviceError(
            f"device {preferred!r} was asked but this machine has {count} CUDA GPU(s) "
            f"(cuda:0..cuda:{count - 1})",
            hint=_HINT,
            device=preferred,
        )
    return torch.device("cuda", index)


def use_device(device: torch.device, *, cudnn_benchmark: bool = True) -> None:
    """Make ``device`` the current CUDA device (allocations on a bare 'cuda' land there, not on
    cuda:0) and let cuDNN pick the fastest convolution algorithms for the job's fixed shapes.
    Nothing to do on the CPU."""
    if device.type != "cuda":
        return
    torch.cuda.set_device(device)
    torch.backends.cudnn.benchmark = cudnn_benchmark


def supports_bfloat16(device: torch.device) -> bool:
    """Whether training on ``device`` can autocast to bfloat16 at full speed (Ampere and later;
    the CPU's bf16 is emulated on most machines, so it is never chosen automatically)."""
    return device.type == "cuda" and torch.cuda.is_bf16_supported(including_emulation=False)
