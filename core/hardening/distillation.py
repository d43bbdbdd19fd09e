"""Defensive distillation (Papernot, McDaniel, Wu, Jha, Swami, IEEE S&P 2016), exactly as DESIGN.md.

1. Teacher at T: the upload, its last linear layer scaled by T, fine-tuned with cross-entropy on
   ``softmax(z / T)`` against the hard labels.
2. Soft labels: ``softmax(teacher(x) / T)`` over the training set.
3. Student: trained at the same T with soft cross-entropy against the soft labels.
4. Deploy at T=1: the student's raw logits, about T times larger than an undistilled model's.

How the student reaches its T-times logits is the one choice beyond the paper
(``distillation.student_parametrization``). In the paper's plain recipe the network's own
weights must grow T-fold from their initialisation; Adam's steps do not scale with the gradient, so
that takes thousands of steps, and BatchNorm networks stay tens of points below the upload. The
default parametrises the student as a normally initialised network times a fixed T: the same
function class, the same loss at T on the same soft labels and, once T is folded into the last
linear layer, the same deployed model with T-times logits; only the optimiser's path differs
(bench/results/student_accuracy.md measures both).

A student re-initialised as the paper's is can be an unlucky draw; by default it is checked
against the upload on training images held out from it, and replaced by one warm-started from the
teacher when it falls short (core.hardening.student, ``spec.distillation.student_max_drop``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core.contract.methods import DISTILLATION
from core.hardening.method import ACCURACY_DROP_NOTE, HardeningResult
from core.hardening.normalization import normalized_inputs, with_normalization
from core.hardening.scaling import OutputScale, scale_last_linear
from core.hardening.student import (
    DistillationPlan,
    StudentCheck,
    TrainedStudent,
    train_student,
)
from core.hardening.training import LossFn, train_epochs
from core.intake.zoo import build_zoo_model
from core.modules import logits_of
from core.names import CancelFn, ProgressFn
from core.report.schema import DistillationSummary, StudentCheckSummary
from core.stages import timed_stage

if TYPE_CHECKING:
    from core.datasets.dataset import Dataset
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


def _student(
    uploaded: LoadedModel, teacher: nn.Module, data: Dataset, plan: RunPlan, *, from_teacher: bool
) -> nn.Module:
    spec = plan.spec
    if from_teacher:
        # Starts at the teacher's scale (its logits are already T times the upload's). A state
        # dict copy, not deepcopy: deep-copied TorchScript parameters are not leaves.
        inner = teacher.module if isinstance(teacher, OutputScale) else teacher
        student = uploaded.fresh_copy(reinitialise=False)
        student.load_state_dict(inner.state_dict())
        return OutputScale(student, teacher.factor) if isinstance(teacher, OutputScale) else student
    if spec.distillation.student_architecture:
        network = build_zoo_model(
            spec.distillation.student_architecture,
            num_classes=data.num_classes,
            input_shape=data.input_shape,
        )
    else:
        network = uploaded.fresh_copy(reinitialise=True)
    if spec.distillation.student_parametrization == "output_scale":
        return OutputScale(network, spec.distillation.temperature)
    return network


def _deployable(student: nn.Module, sample: Tensor) -> tuple[nn.Module, str]:
    """The student as it is exported: an output multiplier folded into the last linear layer
    (checked on ``sample``: the logits must not change), or kept where no layer can be proven."""
    if not isinstance(student, OutputScale):
        return student, "the trained network as is"
    try:
        folded = scale_last_linear(student.module, student.factor, sample=sample)
    except ValueError:
        return student, "the network's output multiplied by T (no last linear layer proven)"
    return student.module, f"T folded into {folded}"


@dataclass(frozen=True)
class DistillationRecord:
    """What a distillation run did, beyond the method-neutral result: how the teacher started,
    what each network trained and how the student stopped, was deployed and was checked."""

    schedule: DistillationPlan
    teacher_start: str  # how the teacher was started from the upload
    soft_labels: Tensor  # softmax(teacher(x) / T) over the training set: what the student learnt
    student: TrainedStudent
    student_deployed: str  # how the student's T-times output became its deployed form


def accuracy_note(plan: RunPlan, trained: TrainedStudent, drop: float) -> str:
    """Why a student ``drop`` below the upload's clean accuracy is, and what to change."""
    spec = plan.spec
    if spec.distillation.student_parametrization == "plain":
        advice = "use the default student_parametrization 'output_scale'"
    elif trained.stop != "converged":
        advice = "raise student_epochs, or start it from the teacher (student_init='teacher')"
    elif spec.distillation.student_init == "scratch" and not (
        trained.check is not None and trained.check.fell_back
    ):
        # More epochs do not help a converged student: what it lacks is the upload's luck. On
        # bench's synthetic32_hard an MLP trained from scratch on hard labels ends at 74-98%
        # depending on its seed, and its students at 78-97%; started from the teacher, 98%
        # (bench/results/student_accuracy.md).
        advice = (
            "its soft-label loss converged, so more epochs will not close the gap; a student "
            "trained from scratch depends on its initial weights: start it from the teacher "
            "(student_init='teacher'), or try another seed"
        )
    else:
        advice = "check the teacher's accuracy in this report: the student learns what it says"
    return (
        f"the student's clean accuracy is {100 * drop:.1f} points below the uploaded model's "
        f"after {len(trained.losses)} epochs ({trained.steps} optimizer steps, "
        f"stopped: {trained.stop}) at T={plan.spec.distillation.temperature:g}: {advice}"
    )


def student_check_note(check: StudentCheck | None) -> str | None:
    """A sentence for the report when the scratch student failed its check and the job deployed
    a student warm-started from the teacher instead; None otherwise."""
    if check is None or not check.fell_back:
        return None
    after_finish = (
        ""
        if check.finished_accuracy is None
        else f" at its loss plateau and {100 * check.finished_accuracy:.1f}% after its "
        "low-learning-rate finish"
    )
    return (
        f"the student trained from scratch reached {100 * check.scratch_accuracy:.1f}% on "
        f"{check.held_out_samples} training images held out from it{after_finish}, more than "
        f"{100 * check.max_drop:g} points (plus one standard error, "
        f"{100 * check.standard_error:.1f}) below the uploaded model's "
        f"{100 * check.upload_test_accuracy:.1f}% test accuracy, so the deployed student was "
        "warm-started from the teacher instead (same T, same soft labels); a scratch student's "
        "accuracy depends on its initial weights (student_max_drop: null turns the check off)"
    )


class DefensiveDistillation:
    """The paper's method; stages ``teacher``, ``soft_labels``, ``student``. Deterministic for a
    given ``spec.seed`` on one device."""

    info = DISTILLATION
    name = DISTILLATION.name
    title = DISTILLATION.title

    def report_section(self, result: HardeningResult, plan: RunPlan) -> dict[str, Any]:
        """The report's ``distillation`` section: T, what each network trained, how the student
        stopped and was deployed, and its accuracy check."""
        spec = plan.spec
        record: DistillationRecord = result.record
        trained = record.student
        check = trained.check
        summary = DistillationSummary(
            temperature=spec.distillation.temperature,
            teacher_epochs=record.schedule.teacher_epochs,
            student_epochs=len(trained.losses),
            student_epochs_auto=record.schedule.student_epochs_auto,
            student_steps=trained.steps,
            student_stop=trained.stop,
            student_final_divergence=trained.final_divergence,
            student_parametrization=spec.distillation.student_parametrization,
            student_deployed=record.student_deployed,
            optimizer=spec.optimizer,
            teacher_start=record.teacher_start,
            student_init=(
                "teacher"
                if check is not None and check.fell_back
                else spec.distillation.student_architecture or spec.distillation.student_init
            ),
            student_check=(
                None if check is None else StudentCheckSummary(**dataclasses.asdict(check))
            ),
            train_samples=plan.train_samples,
            teacher_loss_history=result.losses.get("teacher", []),
            student_loss_history=trained.losses,
        )
        return {"distillation": summary}

    def notes(self, result: HardeningResult, plan: RunPlan, *, accuracy_drop: float) -> list[str]:
        """Whether the scratch student was replaced, and why a student far below the upload is
        (the advice depends on how it stopped)."""
        record: DistillationRecord = result.record
        notes = [note for note in (student_check_note(record.student.check),) if note]
        if accuracy_drop > ACCURACY_DROP_NOTE:
            notes.append(accuracy_note(plan, record.student, accuracy_drop))
        return notes

    def harden(
        self,
        uploaded: LoadedModel,
        data: Dataset,
        plan: RunPlan,
        *,
        on_progress: ProgressFn,
        should_cancel: CancelFn,
    ) -> HardeningResult:
        """Distil ``uploaded`` on ``data``: the teacher trains its planned epochs, the student its
        planned epochs (when auto: until its loss converges, at most that), both at
        ``plan.spec.distillation.temperature`` (:class:`DistillationPlan`)."""
        spec = plan.spec
        schedule = DistillationPlan.resolve(plan)
        device = torch.device(plan.device)
        temperature = spec.distillation.temperature
        loss = cross_entropy_at_temperature(temperature)
        torch.manual_seed(spec.seed)
        generator = torch.Generator().manual_seed(spec.seed)
        # Every method's convention: raw inputs (the spec's input_range), the spec's
        # normalisation in front of the bare model; the sample is the bare model's own input,
        # for the checks that scaling its last layer by T leaves its logits as they should be.
        inputs = data.x_train.to(device)
        sample = normalized_inputs(inputs[:64], spec.normalization)
        labels = data.y_train.to(device)
        timings: dict[str, float] = {}

        def raw(module: nn.Module) -> nn.Module:
            return with_normalization(module, spec.normalization)

        with timed_stage("teacher", should_cancel, timings):
            teacher, teacher_start = _teacher_at_temperature(uploaded, temperature, sample)
            teacher_losses = train_epochs(
                raw(teacher), inputs, labels, loss, epochs=schedule.teacher_epochs, plan=plan,
                stage="teacher", generator=generator, on_progress=on_progress,
                should_cancel=should_cancel, learning_rate=schedule.teacher_learning_rate,
            )  # fmt: skip

        with timed_stage("soft_labels", should_cancel, timings):
            on_progress("soft_labels", 0, 1)
            soft_labels = torch.softmax(logits_of(raw(teacher), inputs) / temperature, dim=1)
            on_progress("soft_labels", 1, 1)

        with timed_stage("student", should_cancel, timings):

            def make(from_teacher: bool) -> nn.Module:
                built = _student(uploaded, teacher, data, plan, from_teacher=from_teacher)
                return built.to(device)

            trained = train_student(
                make, inputs, labels, soft_labels, loss, uploaded=uploaded.module.to(device),
                data=data, plan=plan, generator=generator, on_progress=on_progress,
                should_cancel=should_cancel,
            )  # fmt: skip
            student, deployed = _deployable(trained.module, sample)
        return HardeningResult(
            teacher=teacher,
            student=student,
            timings=timings,
            losses={"teacher": teacher_losses, "student": trained.losses},
            output_temperature=spec.distillation.temperature,
            record=DistillationRecord(schedule, teacher_start, soft_labels, trained, deployed),
        )
