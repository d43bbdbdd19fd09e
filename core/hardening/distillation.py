"""Defensive distillation (Papernot, McDaniel, Wu, Jha, Swami, IEEE S&P 2016), exactly as DESIGN.md.

1. Teacher at T: the upload, its last linear layer scaled by T, fine-tuned with cross-entropy on
   ``softmax(z / T)`` against the hard labels.
2. Soft labels: ``softmax(teacher(x) / T)`` over the training set.
3. Student: trained at the same T with soft cross-entropy against the soft labels.
4. Deploy at T=1: the student's raw logits, about T times larger than an undistilled model's.

Training runs on plain tensors already on the device, with batches drawn by a seeded index
permutation: no DataLoader, so the loop costs what a hand-written PyTorch loop costs.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core.datasets.references import Dataset
from core.errors import JobCancelledError
from core.hardening.scaling import OutputScale, scale_last_linear, set_training_mode
from core.intake.upload import build_zoo_model
from core.spec import HardenSpec, Normalization

if TYPE_CHECKING:
    from core.intake.upload import LoadedModel

ProgressFn = Callable[[str, int, int], None]
CancelFn = Callable[[], bool]
LossFn = Callable[[Tensor, Tensor], Tensor]

__all__ = [
    "DistillResult",
    "Normalize",
    "distill",
    "logits_of",
    "make_optimizer",
    "scale_last_linear",
    "set_training_mode",
    "with_normalization",
]

# How many inputs one inference pass takes (soft labels, accuracy): big enough to keep a GPU busy.
INFERENCE_BATCH = 1024


@dataclass
class DistillResult:
    """What the method produced. ``teacher`` outputs T-scaled logits; ``student`` deploys at T=1.

    Both are bare models (no normalisation layer): they expect the inputs the upload expects.
    """

    teacher: nn.Module
    student: nn.Module
    soft_labels: Tensor
    teacher_losses: list[float] = field(default_factory=list)
    student_losses: list[float] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    teacher_start: str = ""


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel, put in front of a model that expects normalised input."""

    def __init__(self, normalization: Normalization) -> None:
        super().__init__()
        self.mean: Tensor
        self.std: Tensor
        self.register_buffer("mean", torch.tensor(normalization.mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(normalization.std).view(1, -1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std


def with_normalization(module: nn.Module, normalization: Normalization | None) -> nn.Module:
    """``module`` taking raw inputs: a Normalize in front when the spec names a normalisation."""
    if normalization is None:
        return module
    return nn.Sequential(Normalize(normalization).to(_device_of(module)), module)


def _device_of(module: nn.Module) -> torch.device:
    for parameter in module.parameters():
        return parameter.device
    for buffer in module.buffers():
        return buffer.device
    return torch.device("cpu")


def make_optimizer(params: object, spec: HardenSpec) -> torch.optim.Optimizer:
    """The spec's optimiser: Adam by default (SGD's step is divided by T at high temperature)."""
    if spec.optimizer == "sgd":
        return torch.optim.SGD(params, lr=spec.learning_rate, momentum=spec.momentum)  # type: ignore[arg-type]
    return torch.optim.Adam(params, lr=spec.learning_rate)  # type: ignore[arg-type]


def normalized_inputs(inputs: Tensor, normalization: Normalization | None) -> Tensor:
    """Inputs as the bare model expects them. Normalising the whole tensor once (instead of a
    Normalize layer on every batch) gives the same numbers at no per-step cost."""
    if normalization is None:
        return inputs
    mean = torch.tensor(normalization.mean, device=inputs.device).view(1, -1, 1, 1)
    std = torch.tensor(normalization.std, device=inputs.device).view(1, -1, 1, 1)
    return (inputs - mean) / std


@torch.no_grad()
def logits_of(module: nn.Module, inputs: Tensor, *, batch_size: int = INFERENCE_BATCH) -> Tensor:
    """``module``'s logits for ``inputs`` in eval mode, batched, on the inputs' device."""
    set_training_mode(module, False)
    return torch.cat(
        [module(inputs[i : i + batch_size]) for i in range(0, len(inputs), batch_size)]
    )


def train_at_temperature(
    model: nn.Module,
    inputs: Tensor,
    targets: Tensor,
    loss_fn: LossFn,
    *,
    epochs: int,
    spec: HardenSpec,
    stage: str,
    generator: torch.Generator,
    on_progress: ProgressFn,
    should_cancel: CancelFn,
) -> list[float]:
    """Train ``model`` on in-memory tensors; returns the mean loss of each epoch.

    Calls ``should_cancel()`` before every step and ``on_progress(stage, step, total)`` after it.
    """
    optimizer = make_optimizer(model.parameters(), spec)
    count = len(inputs)
    batch_size = spec.batch_size
    steps_per_epoch = math.ceil(count / batch_size)
    total = epochs * steps_per_epoch
    on_progress(stage, 0, total)
    set_training_mode(model, True)
    losses: list[float] = []
    step = 0
    for _ in range(epochs):
        # The permutation is drawn on the CPU generator so a seed gives the same batches on any
        # device; the loss sum stays on the device so there is one sync per epoch, not per step.
        order = torch.randperm(count, generator=generator).to(inputs.device)
        loss_sum = torch.zeros((), device=inputs.device)
        for start in range(0, count, batch_size):
            if should_cancel():
                raise JobCancelledError(
                    f"cancelled during {stage} training at step {step} of {total}",
                    hint="nothing was written; submit the job again to rerun it",
                    stage=stage,
                )
            index = order[start : start + batch_size]
            loss = loss_fn(model(inputs[index]), targets[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach() * len(index)
            step += 1
            on_progress(stage, step, total)
        losses.append(float(loss_sum) / count)
    set_training_mode(model, False)
    return losses


def hard_label_loss(temperature: float) -> LossFn:
    """Cross-entropy of ``softmax(z / T)`` against hard labels (the teacher's loss)."""

    def loss(logits: Tensor, labels: Tensor) -> Tensor:
        return F.cross_entropy(logits / temperature, labels)

    return loss


def soft_label_loss(temperature: float) -> LossFn:
    """``-sum(soft_labels * log_softmax(z / T))``, batch mean (the student's loss).

    ``F.cross_entropy`` takes class probabilities as targets and computes exactly this, fused.
    """

    def loss(logits: Tensor, soft_labels: Tensor) -> Tensor:
        return F.cross_entropy(logits / temperature, soft_labels)

    return loss


@contextmanager
def timed_stage(stage: str, should_cancel: CancelFn, timings: dict[str, float]) -> Iterator[None]:
    """Check for cancellation before ``stage`` and record its seconds in ``timings`` once it
    completes (long stages also check every step, e.g. train_at_temperature)."""
    if should_cancel():
        raise JobCancelledError(
            f"cancelled before {stage}",
            hint="nothing was written; submit the job again to rerun it",
            stage=stage,
        )
    started = time.perf_counter()
    yield
    timings[stage] = time.perf_counter() - started


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
    uploaded: LoadedModel, teacher: nn.Module, data: Dataset, spec: HardenSpec
) -> nn.Module:
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


def distill(
    uploaded: LoadedModel,
    data: Dataset,
    spec: HardenSpec,
    *,
    device: torch.device | str = "cpu",
    on_progress: ProgressFn | None = None,
    should_cancel: CancelFn | None = None,
) -> DistillResult:
    """Defensive distillation of ``uploaded`` on ``data``; stages ``teacher``, ``soft_labels``,
    ``student``. Deterministic for a given ``spec.seed`` on one device. An unset
    ``spec.student_epochs`` trains ``spec.resolved_student_epochs(len(data.y_train))`` epochs."""
    progress: ProgressFn = on_progress or (lambda stage, done, total: None)
    cancel: CancelFn = should_cancel or (lambda: False)
    device = torch.device(device)
    temperature = spec.temperature
    torch.manual_seed(spec.seed)
    generator = torch.Generator().manual_seed(spec.seed)
    inputs = normalized_inputs(data.x_train.to(device), spec.normalization)
    labels = data.y_train.to(device)
    timings: dict[str, float] = {}

    with timed_stage("teacher", cancel, timings):
        teacher, teacher_start = _teacher_at_temperature(uploaded, temperature, inputs[:64])
        teacher_losses = train_at_temperature(
            teacher, inputs, labels, hard_label_loss(temperature),
            epochs=spec.teacher_epochs, spec=spec, stage="teacher", generator=generator,
            on_progress=progress, should_cancel=cancel,
        )  # fmt: skip

    with timed_stage("soft_labels", cancel, timings):
        progress("soft_labels", 0, 1)
        soft_labels = torch.softmax(logits_of(teacher, inputs) / temperature, dim=1)
        progress("soft_labels", 1, 1)

    with timed_stage("student", cancel, timings):
        student = _student(uploaded, teacher, data, spec).to(device)
        student_losses = train_at_temperature(
            student, inputs, soft_labels, soft_label_loss(temperature),
            epochs=spec.resolved_student_epochs(len(labels)), spec=spec, stage="student",
            generator=generator,
            on_progress=progress, should_cancel=cancel,
        )  # fmt: skip
    return DistillResult(
        teacher=teacher,
        student=student,
        soft_labels=soft_labels,
        teacher_losses=teacher_losses,
        student_losses=student_losses,
        timings=timings,
        teacher_start=teacher_start,
    )
