"""Hardening that holds up under adaptive attacks, unlike defensive distillation's masking:

- ``adversarial``: PGD adversarial training (Madry et al., ICLR 2018),
  ``min_θ E max_δ CE(f(x+δ), y)``; with ``robust.fast``, one FGSM step from a random start
  at 1.25 ε (Wong et al., ICLR 2020).
- ``trades``: TRADES (Zhang et al., ICML 2019), ``CE(f(x), y) + β KL(f(x) ‖ f(x'))`` with ``x'``
  maximising that KL: the trade-off between clean and robust accuracy made explicit.
- ``robust_distillation``: Adversarially Robust Distillation (Goldblum et al., AAAI 2020): a robust
  teacher's soft labels at T on clean inputs, matched by the student on adversarial ones:
  ``α T² KL(t(x)/T ‖ s(x')/T) + (1 - α) CE(s(x), y)``, ``x'`` maximising the student's CE.

All share the budget (``spec.robust``), a linear warm-up of ε, and a held-out PGD check each epoch
that keeps the most robust epoch and guards fast training (core.hardening.perturb).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core.contract.methods import ADVERSARIAL, ROBUST_DISTILLATION, TRADES, MethodInfo
from core.hardening.method import ACCURACY_DROP_NOTE, HardeningResult
from core.hardening.normalization import with_normalization
from core.hardening.perturb import Budget, HeldOutCheck, perturb
from core.hardening.training import BatchLoss, held_out_split, train_epochs
from core.intake.zoo import build_zoo_model
from core.modules import logits_of, set_training_mode
from core.names import CancelFn, ProgressFn
from core.report.schema import RobustTrainingSummary
from core.stages import timed_stage

if TYPE_CHECKING:
    from core.datasets.dataset import Dataset
    from core.intake.upload import LoadedModel
    from core.plan import RunPlan

# TRADES starts its inner maximisation this close to x (Zhang et al.'s 0.001 * N(0, 1)): at x
# itself the KL's gradient is zero.
TRADES_START_SCALE = 1e-3
# Wong et al.'s fast training steps 1.25 ε from a uniform random start inside the ball.
FAST_STEP = 1.25


@dataclass
class RobustTraining:
    """How a method that trains against attacks trained: its budget and what the held-out check
    saw (core.hardening.perturb.HeldOutCheck)."""

    norm: str
    epsilon: float
    steps: int  # PGD steps of the inner maximisation (1 for a fast FGSM epoch)
    step_size: float
    fast: bool
    warmup_epochs: int
    epochs: int  # epochs trained
    best_epoch: int  # 1-based: the epoch whose weights were kept
    held_out_samples: int
    held_out_robust_accuracy: list[float] = field(default_factory=list)  # PGD, per epoch
    losses: list[float] = field(default_factory=list)  # per epoch
    fell_back_at: int | None = None  # 1-based epoch where fast training collapsed, went to PGD
    parameters: dict[str, float] = field(default_factory=dict)  # e.g. TRADES' beta


@dataclass
class _Schedule:
    """What changes between epochs: the warm-up's ε and whether fast training fell back to PGD."""

    budget: Budget
    warmup_epochs: int
    fast: bool
    epoch: int = 0
    fell_back_at: int | None = None

    def current(self) -> Budget:
        if self.warmup_epochs <= 0:
            return self.budget
        return self.budget.at((self.epoch + 1) / self.warmup_epochs)


def _adversarial_inputs(
    model: nn.Module, x: Tensor, labels: Tensor, schedule: _Schedule, generator: torch.Generator
) -> Tensor:
    """Madry's inner max of the cross-entropy (or Wong's single random-start FGSM step)."""
    budget = schedule.current()
    start = budget.uniform_start(x, generator)

    def objective(logits: Tensor) -> Tensor:
        return F.cross_entropy(logits, labels, reduction="sum")

    if schedule.fast:
        return perturb(
            model, x, objective, budget, start=start, steps=1,
            step_size=FAST_STEP * budget.epsilon,
        )  # fmt: skip
    return perturb(model, x, objective, budget, start=start)


def _pgd_loss(schedule: _Schedule, generator: torch.Generator) -> BatchLoss:
    def loss(model: nn.Module, x: Tensor, labels: Tensor) -> Tensor:
        x_adv = _adversarial_inputs(model, x, labels, schedule, generator)
        return F.cross_entropy(model(x_adv), labels)

    return loss


def _trades_loss(schedule: _Schedule, beta: float, generator: torch.Generator) -> BatchLoss:
    def loss(model: nn.Module, x: Tensor, labels: Tensor) -> Tensor:
        budget = schedule.current()
        with torch.no_grad():
            set_training_mode(model, False)
            clean = F.softmax(model(x), dim=1)
        noise = torch.randn(x.shape, generator=generator, device=generator.device).to(x.device)

        def divergence(logits: Tensor) -> Tensor:
            return F.kl_div(F.log_softmax(logits, dim=1), clean, reduction="sum")

        start = budget.project(x + TRADES_START_SCALE * noise, x)
        x_adv = perturb(model, x, divergence, budget, start=start)
        logits = model(x)
        robust_term = F.kl_div(
            F.log_softmax(model(x_adv), dim=1), F.softmax(logits, dim=1), reduction="batchmean"
        )
        return F.cross_entropy(logits, labels) + beta * robust_term

    return loss


def _ard_loss(
    schedule: _Schedule,
    labels: Tensor,
    teacher_probs: Tensor,
    temperature: float,
    alpha: float,
    generator: torch.Generator,
) -> BatchLoss:
    """ARD's loss; the batch's targets are row numbers into ``labels`` and ``teacher_probs``."""

    def loss(model: nn.Module, x: Tensor, rows: Tensor) -> Tensor:
        y = labels[rows]
        x_adv = _adversarial_inputs(model, x, y, schedule, generator)
        # T² keeps the soft term's gradient the size of the hard one's (Hinton et al. 2015).
        soft = F.kl_div(
            F.log_softmax(model(x_adv) / temperature, dim=1), teacher_probs[rows],
            reduction="batchmean",
        ) * temperature**2  # fmt: skip
        if alpha >= 1:
            return soft
        return alpha * soft + (1 - alpha) * F.cross_entropy(model(x), y)

    return loss


# A method's training loss, made for one training: from the ε schedule, the generator of its
# random starts and the training labels, the batch loss and the targets train_epochs hands it.
LossFactory = Callable[[_Schedule, torch.Generator, Tensor], tuple[BatchLoss, Tensor]]


def pgd_loss(
    schedule: _Schedule, generator: torch.Generator, y: Tensor
) -> tuple[BatchLoss, Tensor]:
    """Madry et al.'s loss: the cross-entropy at the PGD (or fast FGSM) point."""
    return _pgd_loss(schedule, generator), y


def trades_loss(beta: float) -> LossFactory:
    """Zhang et al.'s loss with the robustness term weighted ``beta``."""
    return lambda schedule, generator, y: (_trades_loss(schedule, beta, generator), y)


def ard_loss(teacher_probs: Tensor, temperature: float, alpha: float) -> LossFactory:
    """Goldblum et al.'s loss against ``teacher_probs``; its targets are row numbers."""

    def make(
        schedule: _Schedule, generator: torch.Generator, y: Tensor
    ) -> tuple[BatchLoss, Tensor]:
        loss = _ard_loss(schedule, y, teacher_probs, temperature, alpha, generator)
        return loss, torch.arange(len(y), device=y.device)

    return make


@dataclass
class _FitState:
    """What adversarial training keeps outside its model and optimizer, saved with its
    checkpoints (core.checkpoint.Resumable): the held-out check's history and best weights, the
    ε schedule's place, and the generator of the attacks' random starts."""

    check: HeldOutCheck
    schedule: _Schedule
    generator: torch.Generator

    def checkpoint_state(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        tensors = {"generator": self.generator.get_state()}
        if self.check.best_state is not None:
            tensors.update({f"best.{k}": v for k, v in self.check.best_state.items()})
        values = {
            "accuracies": self.check.accuracies, "best_epoch": self.check.best_epoch,
            "epoch": self.schedule.epoch, "fast": self.schedule.fast,
            "fell_back_at": self.schedule.fell_back_at,
        }  # fmt: skip
        return tensors, values

    def restore_checkpoint(self, tensors: dict[str, Tensor], values: dict[str, Any]) -> None:
        self.generator.set_state(tensors["generator"])
        best = {k[len("best.") :]: v for k, v in tensors.items() if k.startswith("best.")}
        self.check.best_state = best or None
        self.check.accuracies = [float(a) for a in values["accuracies"]]
        self.check.best_epoch = int(values["best_epoch"])
        self.schedule.epoch = int(values["epoch"])
        self.schedule.fast = bool(values["fast"])
        fell_back_at = values["fell_back_at"]
        self.schedule.fell_back_at = None if fell_back_at is None else int(fell_back_at)


def _fit(
    model: nn.Module,
    data: Dataset,
    plan: RunPlan,
    make_loss: LossFactory,
    *,
    stage: str,
    on_progress: ProgressFn,
    should_cancel: CancelFn,
) -> RobustTraining:
    """Train ``model`` (bare) in place against attacks with the loss ``make_loss`` makes;
    returns what happened. Inputs stay raw: the spec's normalisation sits in front of the model,
    so the budget is in input units like the audit's."""
    spec = plan.spec
    device = torch.device(plan.device)
    robust = spec.robust
    cpu_generator = torch.Generator().manual_seed(spec.seed)
    generator = torch.Generator(device=device).manual_seed(spec.seed)
    train_rows, held_rows = held_out_split(len(data.y_train), cpu_generator)
    x = data.x_train.to(device)
    y = data.y_train.to(device)
    wrapped = with_normalization(model.to(device), spec.normalization)
    budget = Budget.of(spec)
    schedule = _Schedule(budget, robust.warmup_epochs, robust.fast)
    check = HeldOutCheck(wrapped, x[held_rows], y[held_rows], budget, spec.seed)
    # The training rows are drawn from x by index (train_epochs' rows), never copied out of it.
    batch_loss, targets = make_loss(schedule, generator, y)

    def after_epoch(epoch: int, losses: list[float]) -> bool:
        check.record(epoch)
        if schedule.fast and epoch >= schedule.warmup_epochs and check.collapsed():
            check.restore_best()
            schedule.fast = False
            schedule.fell_back_at = epoch + 1
        schedule.epoch = epoch + 1
        return False

    losses = train_epochs(
        wrapped, x, targets, batch_loss=batch_loss, epochs=robust.epochs, plan=plan,
        stage=stage, generator=cpu_generator, on_progress=on_progress,
        should_cancel=should_cancel, after_epoch=after_epoch, rows=train_rows,
        resumable=_FitState(check, schedule, generator),
    )  # fmt: skip
    check.restore_best()
    return RobustTraining(
        norm=budget.norm, epsilon=budget.epsilon, steps=budget.steps,
        step_size=budget.step_size, fast=robust.fast, warmup_epochs=robust.warmup_epochs,
        epochs=len(losses), best_epoch=check.best_epoch + 1, held_out_samples=len(held_rows),
        held_out_robust_accuracy=check.accuracies, losses=losses,
        fell_back_at=schedule.fell_back_at,
    )  # fmt: skip


def robust_summary(record: RobustTraining) -> RobustTrainingSummary:
    """The report's record of training against attacks."""
    return RobustTrainingSummary(
        norm=record.norm, epsilon=record.epsilon, steps=record.steps,
        step_size=record.step_size, fast=record.fast, warmup_epochs=record.warmup_epochs,
        epochs=record.epochs, best_epoch=record.best_epoch,
        held_out_samples=record.held_out_samples,
        held_out_robust_accuracy=record.held_out_robust_accuracy,
        fell_back_at=record.fell_back_at, parameters=record.parameters,
        loss_history=record.losses,
    )  # fmt: skip


def robust_notes(record: RobustTraining, accuracy_drop: float) -> list[str]:
    """Training against attacks trades clean accuracy for robustness (Tsipras et al. 2019): the
    cost is stated, not treated as a failure."""
    if accuracy_drop <= ACCURACY_DROP_NOTE:
        return []
    return [
        f"the hardened model's clean accuracy is {100 * accuracy_drop:.1f} points below the "
        f"uploaded model's: the price of training against {record.norm} attacks of size "
        f"{record.epsilon:g}; a smaller robust.epsilon (or a larger model) costs less"
    ]


def _start(uploaded: LoadedModel, plan: RunPlan) -> nn.Module:
    return uploaded.fresh_copy(reinitialise=plan.spec.robust.start == "scratch")


class _Trained:
    """A method whose model is the upload trained in place against attacks with one loss."""

    info: MethodInfo

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def title(self) -> str:
        return self.info.title

    def loss(self, plan: RunPlan) -> LossFactory:
        raise NotImplementedError

    def harden(
        self,
        uploaded: LoadedModel,
        data: Dataset,
        plan: RunPlan,
        *,
        on_progress: ProgressFn,
        should_cancel: CancelFn,
    ) -> HardeningResult:
        torch.manual_seed(plan.spec.seed)
        timings: dict[str, float] = {}
        [stage] = (s.name for s in self.info.stages)
        with timed_stage(stage, should_cancel, timings):
            model = _start(uploaded, plan)
            record = _fit(
                model, data, plan, self.loss(plan), stage=stage, on_progress=on_progress,
                should_cancel=should_cancel,
            )  # fmt: skip
        record.parameters.update(self.parameters(plan))
        return HardeningResult(
            teacher=None, student=model, timings=timings, losses={stage: record.losses},
            record=record,
        )  # fmt: skip

    def parameters(self, plan: RunPlan) -> dict[str, float]:
        """The loss's own settings, for the report."""
        return {}

    def report_section(self, result: HardeningResult, plan: RunPlan) -> dict[str, Any]:
        """The report's ``robust_training``: the budget, the epochs and the held-out check."""
        return {"robust_training": robust_summary(result.record)}

    def notes(self, result: HardeningResult, plan: RunPlan, *, accuracy_drop: float) -> list[str]:
        return robust_notes(result.record, accuracy_drop)


class AdversarialTraining(_Trained):
    """PGD adversarial training (or its fast FGSM variant) of the upload; stage ``training``."""

    info = ADVERSARIAL

    def loss(self, plan: RunPlan) -> LossFactory:
        return pgd_loss


class Trades(_Trained):
    """TRADES training of the upload; stage ``training``."""

    info = TRADES

    def loss(self, plan: RunPlan) -> LossFactory:
        return trades_loss(plan.spec.robust.trades_beta)

    def parameters(self, plan: RunPlan) -> dict[str, float]:
        return {"beta": plan.spec.robust.trades_beta}


class RobustDistillation:
    """ARD: an adversarially trained teacher (or the upload as is), then a student of the same
    architecture (or ``distillation.student_architecture``) on its soft labels at T (the
    distillation section's temperature), on adversarial inputs. Stages ``teacher``,
    ``soft_labels``, ``student``."""

    info = ROBUST_DISTILLATION
    name = ROBUST_DISTILLATION.name
    title = ROBUST_DISTILLATION.title

    def report_section(self, result: HardeningResult, plan: RunPlan) -> dict[str, Any]:
        """The report's ``robust_training`` (its temperature and alpha are there): the budget,
        the epochs and the held-out check of the student."""
        return {"robust_training": robust_summary(result.record)}

    def notes(self, result: HardeningResult, plan: RunPlan, *, accuracy_drop: float) -> list[str]:
        return robust_notes(result.record, accuracy_drop)

    def harden(
        self,
        uploaded: LoadedModel,
        data: Dataset,
        plan: RunPlan,
        *,
        on_progress: ProgressFn,
        should_cancel: CancelFn,
    ) -> HardeningResult:
        spec = plan.spec
        device = torch.device(plan.device)
        torch.manual_seed(spec.seed)
        timings: dict[str, float] = {}
        teacher_losses: list[float] = []
        with timed_stage("teacher", should_cancel, timings):
            teacher = _start(uploaded, plan).to(device)
            if spec.robust.teacher == "adversarial":
                teacher_losses = _fit(
                    teacher, data, plan, pgd_loss, stage="teacher", on_progress=on_progress,
                    should_cancel=should_cancel,
                ).losses  # fmt: skip
        with timed_stage("soft_labels", should_cancel, timings):
            on_progress("soft_labels", 0, 1)
            inputs = data.x_train.to(device)
            teacher_logits = logits_of(with_normalization(teacher, spec.normalization), inputs)
            soft_labels = torch.softmax(teacher_logits / spec.distillation.temperature, dim=1)
            on_progress("soft_labels", 1, 1)
        with timed_stage("student", should_cancel, timings):
            if spec.distillation.student_architecture:
                student = build_zoo_model(
                    spec.distillation.student_architecture, num_classes=data.num_classes,
                    input_shape=data.input_shape,
                )  # fmt: skip
            else:
                student = uploaded.fresh_copy(reinitialise=True)
            alpha = spec.robust.distillation_alpha
            loss = ard_loss(soft_labels, spec.distillation.temperature, alpha)
            record = _fit(
                student, data, plan, loss, stage="student", on_progress=on_progress,
                should_cancel=should_cancel,
            )  # fmt: skip
        record.parameters.update(
            temperature=spec.distillation.temperature, alpha=spec.robust.distillation_alpha
        )
        return HardeningResult(
            teacher=teacher, student=student, timings=timings,
            losses={"teacher": teacher_losses, "student": record.losses}, record=record,
        )  # fmt: skip
