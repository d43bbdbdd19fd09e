"""The worst-case training of a spec, counted before the data is known
(core/contract/training_cost.py)."""

from __future__ import annotations

import pytest

from core.contract.spec import HardenSpec
from core.contract.training_cost import (
    BUILTIN_TRAIN_SAMPLES,
    FINISH_EPOCHS,
    UNKNOWN_TRAIN_SAMPLES,
    train_samples_at_submit,
    training_steps,
)
from core.hardening.student import DistillationPlan
from core.hardening.training import Convergence
from core.plan import RunPlan


def total(config: dict, train_samples: int | None = None) -> int:
    return sum(training_steps(HardenSpec.model_validate(config), train_samples).values())


def test_the_default_job_costs_at_most_32256_steps():
    # builtin:mnist: 4000 training images, 32 batches of 128. Teacher 2 epochs, soft labels one
    # pass, the auto student its whole bound (500 epochs) twice plus its finish: the student
    # checked against the upload may be replaced by one warm-started from the teacher.
    assert training_steps(HardenSpec()) == {
        "distillation.teacher": 64,
        "distillation.soft_labels": 32,
        "distillation.student": (2 * 500 + FINISH_EPOCHS) * 32,
    }
    assert total({}) == 32_256


def test_500_plus_500_epochs_at_batch_size_1_cost_about_6_million_steps():
    steps = total({"teacher_epochs": 500, "student_epochs": 500, "batch_size": 1})
    assert steps == 500 * 4000 + 4000 + (2 * 500 + FINISH_EPOCHS) * 4000 == 6_024_000


def test_an_unchecked_student_is_charged_once():
    checked = training_steps(HardenSpec(student_epochs=10))["distillation.student"]
    for unchecked in (
        HardenSpec(student_epochs=10, student_max_drop=None),
        HardenSpec(student_epochs=10, student_init="teacher"),
        HardenSpec(student_epochs=10, student_architecture="mlp"),
    ):
        assert training_steps(unchecked)["distillation.student"] == 10 * 32 < checked
    # Too few images to hold a tenth out (fewer than 1000): no check, no replacement.
    assert training_steps(HardenSpec(student_epochs=10), 999)["distillation.student"] == 10 * 8


@pytest.mark.parametrize("method", ["adversarial", "trades"])
def test_training_against_attacks_pays_the_attack_on_every_batch(method):
    config = {"method": method, "robust": {"epochs": 20, "steps": 10}}
    assert training_steps(HardenSpec.model_validate(config)) == {f"{method}.training": 20 * 32 * 11}
    fast = config | {"robust": {"epochs": 20, "steps": 10, "fast": True}}
    assert total(fast) == total(config)  # fast training may fall back to PGD: charged as PGD


def test_robust_distillation_trains_a_teacher_against_attacks_unless_it_uses_the_upload():
    adversarial = training_steps(HardenSpec(method="robust_distillation"))
    upload = training_steps(
        HardenSpec.model_validate(
            {"method": "robust_distillation", "robust": {"teacher": "upload"}}
        )
    )
    assert adversarial["robust_distillation.teacher"] == 20 * 32 * 11
    assert upload["robust_distillation.teacher"] == 0
    assert adversarial["robust_distillation.student"] == upload["robust_distillation.student"]


def test_several_methods_add_up():
    methods = ["distillation", "adversarial"]
    both = total({"method": methods})
    assert both == total({"method": "distillation"}) + total({"method": "adversarial"})


def test_the_cost_grows_with_epochs_and_shrinks_with_the_batch_size():
    assert total({"teacher_epochs": 3}) > total({"teacher_epochs": 2})
    assert total({"student_epochs": 50}) > total({"student_epochs": 49})
    assert total({"batch_size": 64}) > total({"batch_size": 128}) > total({"batch_size": 4096})


def test_a_dataset_of_unknown_size_is_charged_as_the_larger_builtin():
    assert BUILTIN_TRAIN_SAMPLES["builtin:mnist"] == UNKNOWN_TRAIN_SAMPLES
    for dataset in ("upload", "https://example.com/d.npz", "s3://bucket/d.npz"):
        spec = HardenSpec.model_validate({"dataset": dataset})
        assert train_samples_at_submit(spec) == UNKNOWN_TRAIN_SAMPLES
    # Known at the worker: the same function with the real size.
    assert total({"dataset": "upload"}, 10_000) > total({"dataset": "upload"})


def test_the_student_is_charged_at_least_the_plan_lets_it_train():
    for config in ({}, {"batch_size": 1}, {"student_epochs": 7}, {"dataset": "builtin:digits"}):
        spec = HardenSpec.model_validate(config)
        samples = train_samples_at_submit(spec)
        plan = RunPlan.resolve(spec, dataset=spec.dataset, train_samples=samples)
        charged = training_steps(spec)["distillation.student"]
        assert charged >= DistillationPlan.resolve(plan).student_epochs * plan.steps_per_epoch


def test_the_finish_is_the_trainings_own():
    assert Convergence(offset=0.0).settle_epochs == FINISH_EPOCHS


@pytest.mark.parametrize("reference", sorted(BUILTIN_TRAIN_SAMPLES))
def test_builtin_sizes_are_the_loaded_training_sets(reference):
    from core.datasets.references import load_dataset

    data = load_dataset(reference)
    assert len(data.y_train) == BUILTIN_TRAIN_SAMPLES[reference]
