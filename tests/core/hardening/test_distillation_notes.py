"""Distillation's note on a student far below the upload says what would close the gap, by why the
student stopped: more epochs only where training was cut short; where its loss converged, a
warm start from the teacher (more epochs did not help a converged student: on
bench/results/student_accuracy.md's synthetic32_hard, 300 epochs left an MLP student at 78.8%)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from core.contract.spec import HardenSpec
from core.hardening.distillation import (
    DefensiveDistillation,
    DistillationRecord,
    student_check_note,
)
from core.hardening.method import HardeningResult
from core.hardening.student import DistillationPlan, StudentCheck, TrainedStudent
from core.plan import RunPlan


def _note(
    student_accuracy: float, stop: str, check: StudentCheck | None = None, **spec_fields: object
) -> str | None:
    """The method's note on a student ``student_accuracy`` against an upload's 98%."""
    spec = HardenSpec(dataset="builtin:digits", **spec_fields)
    plan = RunPlan.resolve(spec, dataset=spec.dataset, train_samples=1437)
    trained = TrainedStudent(nn.Identity(), [0.5] * 93, 93 * 12, stop, None, check)
    record = DistillationRecord(
        DistillationPlan.resolve(plan), "", torch.zeros(1), trained, "the trained network as is"
    )
    result = HardeningResult(teacher=nn.Identity(), student=nn.Identity(), record=record)
    notes = DefensiveDistillation().notes(result, plan, accuracy_drop=0.98 - student_accuracy)
    accuracy = [note for note in notes if note.startswith("the student's clean accuracy")]
    assert len(accuracy) <= 1
    return accuracy[0] if accuracy else None


def test_no_note_within_the_bar() -> None:
    assert _note(0.97, "converged") is None  # 1.0 point below: within 1.5


@pytest.mark.parametrize("stop", ["step bound", "epochs as set"])
def test_a_student_cut_short_is_told_to_train_longer(stop: str) -> None:
    note = _note(0.78, stop)
    assert note is not None and "20.0 points below" in note and f"stopped: {stop}" in note
    assert "raise student_epochs" in note


def test_a_converged_student_from_scratch_is_told_to_start_from_the_teacher() -> None:
    note = _note(0.78, "converged")
    assert note is not None and "20.0 points below" in note and "stopped: converged" in note
    assert "student_init='teacher'" in note and "another seed" in note
    assert "raise student_epochs" not in note  # it converged: more epochs would not help


def test_a_converged_warm_started_student_points_at_the_teacher() -> None:
    note = _note(0.78, "converged", student_init="teacher")
    assert note is not None and "teacher's accuracy" in note
    assert "student_init='teacher'" not in note  # it already was


def test_the_plain_recipe_is_pointed_at_output_scale() -> None:
    note = _note(0.78, "converged", student_parametrization="plain")
    assert note is not None and "'output_scale'" in note


def test_a_student_that_replaced_a_failed_scratch_one_points_at_the_teacher() -> None:
    # The check already swapped the scratch student for one warm-started from the teacher.
    check = StudentCheck(
        held_out_samples=143, upload_test_accuracy=0.98, max_drop=0.015, standard_error=0.02,
        scratch_accuracy=0.80, scratch_epochs=93, fell_back=True,
    )  # fmt: skip
    note = _note(0.78, "converged", check=check)
    assert note is not None and "teacher's accuracy" in note
    assert "student_init='teacher'" not in note


@pytest.mark.parametrize("finished", [None, 0.81])
def test_the_replacement_note_gives_the_held_out_accuracy_that_decided(
    finished: float | None,
) -> None:
    check = StudentCheck(
        held_out_samples=200, upload_test_accuracy=0.98, max_drop=0.015, standard_error=0.028,
        scratch_accuracy=0.80, scratch_epochs=96, fell_back=True, finished_accuracy=finished,
    )  # fmt: skip
    note = student_check_note(check)
    assert note is not None and "80.0% on 200 training images held out" in note
    assert "98.0% test accuracy" in note and "2.8)" in note
    assert ("81.0% after its low-learning-rate finish" in note) == (finished is not None)
    kept = dataclasses.replace(check, fell_back=False)
    assert student_check_note(kept) is None
