"""Defensive distillation (Papernot, McDaniel, Wu, Jha, Swami, IEEE S&P 2016), exactly as DESIGN.md.

1. Teacher at T: the upload, its last linear layer scaled by T, fine-tuned with cross-entropy on
   ``softmax(z / T)`` against the hard labels.
2. Soft labels: ``softmax(teacher(x) / T)`` over the training set.
3. Student: trained at the same T with soft cross-entropy against the soft labels.
4. Deploy at T=1: the student's raw logits, about T times larger than an undistilled model's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core.hardening.method import HardeningResult
from core.hardening.normalization import normalized_inputs
from core.hardening.scaling import OutputScale, scale_last_linear
from core.hardening.training import LossFn, logits_of, timed_stage, train_epochs
from core.intake.zoo import build_zoo_model
from core.names import CancelFn, ProgressFn

if TYPE_CHECKING:
    from core.datasets.references import Dataset
    from core.intake.upload import LoadedModel
    from core.plan import RunPlan


def cross_entropy_at_temperature(temperature: float) -> LossFn:
    """Cross-entropy of ``softmax(z / T)`` against the targets: the loss of both networks.

    The teacher's targets are hard labels; the student's are the soft labels, rows of class
    probabilities, for which ``F.cross_entropy`` computes ``-sum(soft_labels * log_softmax(z /
    T))``, batch mean, fused.
    """

    def loss(logits: Tensor, targets: Tensor) -> Tensor:
        return F.cross_entropy(logits / temperature, targets)

    return loss


def _teacher_at_temperature(
    uploaded: LoadedModel, temperature: float, sample: Tensor
) -> tuple[nn.Module, str]:
    """A copy of the upload whose ``softmax(z / T)`` equals the upload's ``softmax(z)``.

    Papernot et al. train the teacher at T from scratch; an upload is already trained at T=1, so
    multiplying its last linear layer's weight and bias by T (logits become T * z) makes
    ``softmax(T * z / T)`` the upload's own prediction: fine-tuning at T starts from the upload's
    knowledge instead of from noise. Where no last linear layer can be proven (the check below
    compares logits), the copy is wrapped with an output multiplier, which has the same effect.
    """
    teacher = uploaded.fresh_copy(reinitialise=False).to(sample.device)
    try:
        return teacher, scale_last_linear(teacher, temperature, sample=sample)
    except ValueError as why:
        teacher = uploaded.fresh_copy(reinitialise=False).to(sample.device)
        return OutputScale(teacher, temperature), f"output multiplied by T ({why})"


def _student(uploaded: LoadedModel, teacher: nn.Module, data: Dataset, plan: RunPlan) -> nn.Module:
    spec = plan.spec
    if spec.student_architecture:
        return build_zoo_model(
            spec.student_architecture, num_classes=data.num_classes, input_shape=data.input_shape
        )
    if spec.student_init == "teacher":
        # Starts at the teacher's scale (its logits are already T times the upload's). A state
        # dict copy, not deepcopy: deep-copied TorchScript parameters are not leaves.
        inner = teacher.module if isinstance(teacher, OutputScale) else teacher
        student = uploaded.fresh_copy(reinitialise=False)
        student.load_state_dict(inner.state_dict())
        return OutputScale(student, teacher.factor) if isinstance(teacher, OutputScale) else student
    return uploaded.fresh_copy(reinitialise=True)


class DefensiveDistillation:
    """The paper's method; stages ``teacher``, ``soft_labels``, ``student``. Deterministic for a
    given ``spec.seed`` on one device."""

    name = "distillation"
    title = "defensive distillation (Papernot et al., IEEE S&P 2016)"

    def harden(
        self,
        uploaded: LoadedModel,
        data: Dataset,
        plan: RunPlan,
        *,
        on_progress: ProgressFn,
        should_cancel: CancelFn,
    ) -> HardeningResult:
        """Distil ``uploaded`` on ``data``: the teacher trains ``plan.teacher_epochs``, the
        student ``plan.student_epochs``, both at ``plan.spec.temperature``."""
        spec = plan.spec
        device = torch.device(plan.device)
        temperature = spec.temperature
        loss = cross_entropy_at_temperature(temperature)
        torch.manual_seed(spec.seed)
        generator = torch.Generator().manual_seed(spec.seed)
        inputs = normalized_inputs(data.x_train.to(device), spec.normalization)
        labels = data.y_train.to(device)
        timings: dict[str, float] = {}

        with timed_stage("teacher", should_cancel, timings):
            teacher, teacher_start = _teacher_at_temperature(uploaded, temperature, inputs[:64])
            teacher_losses = train_epochs(
                teacher, inputs, labels, loss, epochs=plan.teacher_epochs, plan=plan,
                stage="teacher", generator=generator, on_progress=on_progress,
                should_cancel=should_cancel,
            )  # fmt: skip

        with timed_stage("soft_labels", should_cancel, timings):
            on_progress("soft_labels", 0, 1)
            soft_labels = torch.softmax(logits_of(teacher, inputs) / temperature, dim=1)
            on_progress("soft_labels", 1, 1)

        with timed_stage("student", should_cancel, timings):
            student = _student(uploaded, teacher, data, plan).to(device)
            student_losses = train_epochs(
                student, inputs, soft_labels, loss, epochs=plan.student_epochs, plan=plan,
                stage="student", generator=generator, on_progress=on_progress,
                should_cancel=should_cancel,
            )  # fmt: skip
        return HardeningResult(
            teacher=teacher,
            student=student,
            soft_labels=soft_labels,
            teacher_losses=teacher_losses,
            student_losses=student_losses,
            timings=timings,
            teacher_start=teacher_start,
        )
