"""The method: teacher start at T, the distilled student's logit scale, cancellation, progress,
and its place in the registry of hardening methods."""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import nn

from core.contract.spec import HardenSpec, Normalization
from core.contract.training_cost import steps_per_epoch, student_epoch_budget
from core.datasets.dataset import Dataset
from core.errors import JobCancelledError
from core.hardening.distillation import DefensiveDistillation
from core.hardening.method import HardeningResult
from core.hardening.registry import DEFAULT_METHOD, METHODS
from core.hardening.scaling import OutputScale, scale_last_linear
from core.modules import logits_of
from core.names import CancelFn, ProgressFn
from core.plan import RunPlan
from tests.core.model_files import FORMATS, digits, loaded_module, trained_mlp


@dataclass
class _Upload:
    """A stand-in for core.intake.upload.LoadedModel around a plain module (what distill() uses)."""

    module: nn.Module

    def fresh_copy(self, *, reinitialise: bool) -> nn.Module:
        copied = copy.deepcopy(self.module)
        if reinitialise:
            for layer in copied.modules():
                if hasattr(layer, "reset_parameters"):
                    layer.reset_parameters()
        return copied


def _spec(**overrides: object) -> HardenSpec:
    values: dict[str, object] = {
        "dataset": "builtin:digits",
        "temperature": 50.0,
        "teacher_epochs": 1,
        "student_epochs": 6,
        "batch_size": 32,
        "learning_rate": 3e-3,
        "evaluation": {"enabled": False},
    }
    values.update(overrides)
    return HardenSpec.model_validate(values)


def distill(
    upload: _Upload,
    data: Dataset,
    spec: HardenSpec,
    *,
    on_progress: ProgressFn = lambda stage, done, total: None,
    should_cancel: CancelFn = lambda: False,
) -> HardeningResult:
    """Defensive distillation as the pipeline runs it: through the plan, on the CPU."""
    plan = RunPlan.resolve(spec, dataset=spec.dataset, train_samples=len(data.y_train))
    return DefensiveDistillation().harden(
        upload,  # type: ignore[arg-type]  # only fresh_copy is used
        data,
        plan,
        on_progress=on_progress,
        should_cancel=should_cancel,
    )


def test_distillation_is_the_default_method() -> None:
    assert METHODS[DEFAULT_METHOD].name == DEFAULT_METHOD == "distillation"
    assert isinstance(METHODS[DEFAULT_METHOD], DefensiveDistillation)


@pytest.mark.parametrize("fmt", FORMATS)
def test_scaling_the_last_linear_layer_multiplies_logits_by_t(fmt: str, tmp_path: Path) -> None:
    module = loaded_module(fmt, tmp_path)
    sample = digits().x_test[:32]
    with torch.no_grad():
        before = module(sample)
    scale_last_linear(module, 37.0, sample=sample)
    with torch.no_grad():
        after = module(sample)
    assert torch.allclose(after, 37.0 * before, rtol=1e-5, atol=1e-4)


def test_unprovable_scaling_is_refused_and_leaves_weights_untouched() -> None:
    # The last Linear feeds a ReLU-free bias-shifted head: scaling it cannot give T * logits.
    model = nn.Sequential(nn.Linear(4, 3), _AddConstant(5.0)).eval()
    sample = torch.randn(8, 4)
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(ValueError):
        scale_last_linear(model, 10.0, sample=sample)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    wrapped = OutputScale(model, 10.0)
    with torch.no_grad():
        assert torch.allclose(wrapped(sample), 10.0 * model(sample))


class _AddConstant(nn.Module):
    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.value


def test_distilled_student_has_much_larger_logits_and_keeps_accuracy() -> None:
    data = digits()
    upload = _Upload(trained_mlp())
    result = distill(upload, data, _spec())
    uploaded_logits = logits_of(upload.module, data.x_test)
    student_logits = logits_of(result.student, data.x_test)
    student_accuracy = float((student_logits.argmax(1) == data.y_test).float().mean())
    assert student_accuracy > 0.7  # chance is 0.1
    # Deployed at T=1, the student's logits carry the temperature: far larger than the upload's.
    ratio = float(student_logits.abs().mean() / uploaded_logits.abs().mean())
    assert ratio > 5, ratio
    # The teacher starts exactly at the upload's predictions and stays a good classifier.
    teacher_accuracy = float(
        (logits_of(result.teacher, data.x_test).argmax(1) == data.y_test).float().mean()
    )
    assert teacher_accuracy > 0.85
    assert result.record.soft_labels.shape == (len(data.x_train), data.num_classes)
    assert torch.allclose(
        result.record.soft_labels.sum(1), torch.ones(len(data.x_train)), atol=1e-5
    )
    assert (
        len(result.losses["student"]) == 6
        and result.losses["student"][-1] < result.losses["student"][0]
    )


def test_teacher_epochs_zero_keeps_the_scaled_upload() -> None:
    data = digits()
    upload = _Upload(trained_mlp())
    result = distill(upload, data, _spec(teacher_epochs=0, student_epochs=1))
    expected = 50.0 * logits_of(upload.module, data.x_test[:64])
    assert torch.allclose(
        logits_of(result.teacher, data.x_test[:64]), expected, rtol=1e-4, atol=1e-3
    )
    assert result.losses["teacher"] == []


def test_same_seed_gives_the_same_student() -> None:
    data = digits()
    spec = _spec(teacher_epochs=0, student_epochs=1)
    first = distill(_Upload(trained_mlp()), data, spec)
    second = distill(_Upload(trained_mlp()), data, spec)
    assert torch.equal(
        logits_of(first.student, data.x_test), logits_of(second.student, data.x_test)
    )


def test_cancellation_stops_training_with_job_cancelled_error() -> None:
    calls = {"n": 0}

    def should_cancel() -> bool:
        calls["n"] += 1
        return calls["n"] > 5

    with pytest.raises(JobCancelledError):
        distill(_Upload(trained_mlp()), digits(), _spec(), should_cancel=should_cancel)
    assert calls["n"] == 6  # stopped at the first True, no further steps


def test_progress_is_monotone_per_stage_and_reaches_the_total() -> None:
    events: list[tuple[str, int, int]] = []
    distill(
        _Upload(trained_mlp()),
        digits(),
        _spec(student_epochs=1),
        on_progress=lambda stage, done, total: events.append((stage, done, total)),
    )
    stages = list(dict.fromkeys(stage for stage, _, _ in events))
    assert stages == ["teacher", "soft_labels", "student"]
    for stage in stages:
        done = [d for s, d, _ in events if s == stage]
        totals = [t for s, _, t in events if s == stage]
        assert done == sorted(done)
        assert all(d <= t for d, t in zip(done, totals, strict=True))
        assert done[-1] == totals[-1]


def test_a_normalisation_in_front_trains_what_pre_normalised_data_trains() -> None:
    """One input convention for every method: raw data with the spec's normalisation in front of
    the bare model gives the student that pre-normalised data without one gives."""
    data = digits()
    mean, std = 0.3, 0.4
    upload = _Upload(trained_mlp())
    # The scratch student's check measures the upload on the test split: it sees raw data too.
    spec = _spec(student_max_drop=None)
    normalised = dataclasses.replace(
        data, x_train=(data.x_train - mean) / std, x_test=(data.x_test - mean) / std
    )
    expected = distill(upload, normalised, spec)
    spec_in_front = spec.model_copy(update={"normalization": Normalization(mean=[mean], std=[std])})
    got = distill(upload, data, spec_in_front)
    for a, b in zip(
        expected.student.state_dict().values(), got.student.state_dict().values(), strict=True
    ):
        assert torch.allclose(a, b, atol=1e-5)
    assert got.losses["student"] == pytest.approx(expected.losses["student"], rel=1e-4)


def test_an_auto_student_bar_counts_the_steps_it_runs_not_its_bound() -> None:
    """The student stage's total is the steps it expects, corrected each epoch: it starts far
    below the step bound, never runs backwards, and ends equal to the steps actually run, the
    held-out check's finish included (which used to run after the bar showed 100%)."""
    events: list[tuple[str, int, int]] = []
    data = digits()
    spec = _spec(student_epochs=None, teacher_epochs=1)
    result = distill(
        _Upload(trained_mlp()),
        data,
        spec,
        on_progress=lambda stage, done, total: events.append((stage, done, total)),
    )
    student = [(done, total) for stage, done, total in events if stage == "student"]
    plan = RunPlan.resolve(spec, dataset=spec.dataset, train_samples=len(data.y_train))
    bound = student_epoch_budget(plan.train_samples, plan.batch_size) * steps_per_epoch(
        plan.train_samples, plan.batch_size
    )
    done = [d for d, _ in student]
    assert done == sorted(done)
    assert all(d <= t for d, t in student)
    trained = result.record.student
    assert trained.stop == "converged" and trained.check is not None
    assert not trained.check.fell_back
    assert student[-1] == (trained.steps, trained.steps)  # every step the student ran, shown
    assert student[0][1] < bound / 2  # the first total is an estimate, not the bound
    assert len({t for _, t in student}) > 1  # corrected as training went
