"""The train/test split of a dataset that comes without one, and the record of how a run's
split came about (the report's ``dataset_split``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from core.contract.spec import HardenSpec
from core.errors import DatasetError

SplitSource = Literal["given", "test_fraction", "builtin"]
DEFAULT_TEST_FRACTION: float = HardenSpec.model_fields["test_fraction"].default


@dataclass(frozen=True)
class SplitRecord:
    """Where a run's train/test split came from: the dataset's own (``given``), a seeded
    stratified split by ``test_fraction``, or a builtin dataset's fixed split."""

    source: SplitSource
    test_fraction: float | None = None
    seed: int | None = None


def stratified_split(
    labels: np.ndarray, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (train, test), each sorted: ``test_fraction`` of the rows, every class in
    the same proportion on both sides (scikit-learn's ``train_test_split`` with ``stratify``),
    the same rows for the same labels, fraction and seed."""
    from sklearn.model_selection import train_test_split

    classes, counts = np.unique(labels, return_counts=True)
    test_count = int(np.ceil(test_fraction * len(labels)))
    if counts.min() < 2 or test_count < len(classes) or len(labels) - test_count < len(classes):
        raise DatasetError(
            f"{len(labels)} images of {len(classes)} classes (the smallest has "
            f"{int(counts.min())}) cannot be split with test_fraction {test_fraction:g} so that "
            "every class is on both sides",
            hint="add images (at least 2 per class), change test_fraction, or give the dataset "
            "its own test split",
        )
    rows = np.arange(len(labels))
    train, test = train_test_split(
        rows, test_size=test_fraction, stratify=labels, random_state=seed
    )
    return np.sort(train), np.sort(test)
