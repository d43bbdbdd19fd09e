"""The per-channel normalisation a spec may name, applied to raw inputs.

Uploads and hardened models stay bare (they expect normalised input, as the user trained them).
Every hardening method and the audit follow one convention: the data stays raw (in the spec's
input_range) and a :class:`Normalize` layer goes in front of the bare model
(:func:`with_normalization`), so attacks and the methods that train against them work in raw input
space and a method that does not perturb gets the same numbers (the layer computes
``(x - mean) / std`` per batch, element by element as a normalised copy would). The pipeline
normalises tensors for what takes the bare model itself: the export's parity samples and the
clean accuracies (:func:`normalized_inputs`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from core.contract.spec import Normalization

# Inputs up to this size are normalised in memory; larger ones on the CPU into a scratch file,
# NORMALIZE_CHUNK_BYTES at a time (bench/results/big_dataset.md).
IN_MEMORY_BYTES = 256 * 1024**2
NORMALIZE_CHUNK_BYTES = 16 * 1024**2


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel, put in front of a model that expects normalised input."""

    def __init__(self, normalization: Normalization) -> None:
        super().__init__()
        self.mean: Tensor
        self.std: Tensor
        self.register_buffer("mean", torch.tensor(normalization.mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(normalization.std).view(1, -1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std


def with_normalization(module: nn.Module, normalization: Normalization | None) -> nn.Module:
    """``module`` taking raw inputs: a Normalize in front when the spec names a normalisation."""
    if normalization is None:
        return module
    return nn.Sequential(Normalize(normalization).to(_device_of(module)), module)


def _device_of(module: nn.Module) -> torch.device:
    for parameter in module.parameters():
        return parameter.device
    for buffer in module.buffers():
        return buffer.device
    return torch.device("cpu")


def normalized_inputs(inputs: Tensor, normalization: Normalization | None) -> Tensor:
    """Inputs as the bare model expects them. Normalising the whole tensor once (instead of a
    Normalize layer on every batch) gives the same numbers at no per-step cost."""
    if normalization is None:
        return inputs
    mean = torch.tensor(normalization.mean, device=inputs.device).view(1, -1, 1, 1)
    std = torch.tensor(normalization.std, device=inputs.device).view(1, -1, 1, 1)
    if inputs.device.type != "cpu" or inputs.numel() * 4 <= IN_MEMORY_BYTES:
        return (inputs - mean) / std
    # A big dataset (memory-mapped from disk, core.datasets.image_folder) stays on disk: its
    # normalised copy goes to another scratch file, a chunk at a time.
    from core.datasets.image_folder import scratch_array

    normalized = torch.from_numpy(scratch_array(tuple(inputs.shape)))
    rows = max(1, NORMALIZE_CHUNK_BYTES // max(1, inputs[0].numel() * 4))
    for start in range(0, len(inputs), rows):
        normalized[start : start + rows] = (inputs[start : start + rows] - mean) / std
    return normalized
