"""A classification dataset as tensors: what every part of core that trains, attacks or scores a
model takes (core.datasets.references loads one from a reference)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from core.datasets.split import SplitRecord


@dataclass
class Dataset:
    """A classification dataset as tensors, ready for training and attacks."""

    x_train: Tensor  # float32, NCHW, values inside the spec's input_range
    y_train: Tensor  # int64 in [0, num_classes)
    x_test: Tensor
    y_test: Tensor
    num_classes: int
    class_names: list[str]
    reference: str  # what the user asked for, e.g. "builtin:mnist"
    input_shape: tuple[int, int, int]  # (C, H, W)
    split: SplitRecord = SplitRecord("given")  # where the train/test split came from
    conversions: tuple[str, ...] = ()  # layout/dtype changes made on loading, in words
