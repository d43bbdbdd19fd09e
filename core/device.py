"""Device choice: CUDA when present, else the CPU. Every code path runs on both."""

from __future__ import annotations

import torch


def pick_device(preferred: str | None = None) -> torch.device:
    """``preferred`` ('cpu', 'cuda', 'cuda:1') wins when given; otherwise CUDA if available."""
    if preferred:
        return torch.device(preferred)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
