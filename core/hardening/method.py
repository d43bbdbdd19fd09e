"""The interface every hardening method implements, and what one hands back to the pipeline.

:mod:`core.pipeline` runs a method only through :class:`HardeningMethod`; the audit, the export and
the report are the same for every method. Defensive distillation
(:mod:`core.hardening.distillation`) is the first implementation; :mod:`core.hardening.registry`
names them all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from torch import Tensor, nn

from core.names import CancelFn, ProgressFn

if TYPE_CHECKING:
    from core.contract.methods import MethodInfo
    from core.datasets.references import Dataset
    from core.intake.upload import LoadedModel
    from core.plan import RunPlan


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


@dataclass(frozen=True)
class StudentCheck:
    """Whether a student trained from scratch kept the upload's accuracy (spec.student_max_drop):
    its accuracy on training images held out from it, against the upload's test accuracy."""

    held_out_samples: int
    upload_test_accuracy: float
    max_drop: float
    # of the difference of the two accuracies: the scratch student falls back only when it is
    # below upload_test_accuracy - max_drop - standard_error (the last one measured)
    standard_error: float
    scratch_accuracy: float  # the scratch student's, on the held-out images, at its plateau
    scratch_epochs: int  # epochs the scratch student trained to its plateau
    fell_back: bool  # the deployed student was warm-started from the teacher instead
    # When scratch_accuracy fell short: the same student's, after its low-learning-rate finish
    # on the rows it trained on; this one decides. None when scratch_accuracy passed.
    finished_accuracy: float | None = None


@dataclass
class HardeningResult:
    """What a method produced. ``student`` is the hardened model, deployed at T=1; ``teacher`` is
    the model it learnt from, if any (distillation's has T-scaled logits) and ``soft_labels``
    what it learnt (distillation only). ``robust`` records training against attacks.

    The models are bare (no normalisation layer): they expect the inputs the upload expects.
    """

    teacher: nn.Module | None
    student: nn.Module
    soft_labels: Tensor | None = None
    robust: RobustTraining | None = None
    teacher_losses: list[float] = field(default_factory=list)
    student_losses: list[float] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage it ran
    teacher_start: str = ""  # how the teacher was started from the upload, for the report
    student_steps: int = 0  # optimizer steps the student trained
    # Why its training stopped: 'converged', 'step bound' (auto, the plan's bound reached) or
    # 'epochs as set' (the spec's student_epochs).
    student_stop: str = ""
    student_final_divergence: float | None = None  # last epoch's loss above its floor (KL)
    student_deployed: str = ""  # how the student's T-times output became its deployed form
    # T when the deployed student outputs T-scaled logits (defensive distillation: trained at T,
    # deployed at T=1, its logits are about T times an undistilled model's and their softmax is
    # saturated); None when it outputs plain logits (training against attacks, ARD: its student
    # matches the teacher's soft labels at T, so its logits have the teacher's scale).
    output_temperature: float | None = None
    student_check: StudentCheck | None = None  # distillation from scratch, when it was checked


class HardeningMethod(Protocol):
    """One way of hardening an upload."""

    @property
    def name(self) -> str:
        """The method's key in core.hardening.registry.METHODS."""
        ...

    @property
    def title(self) -> str:
        """What the method is, with its paper; written into the ONNX file's metadata."""
        ...

    @property
    def info(self) -> MethodInfo:
        """Its torch-free description: name, stages, costs (core.contract.methods)."""
        ...

    def report_section(self, result: HardeningResult, plan: RunPlan) -> dict[str, Any]:
        """The report fields this method owns (e.g. distillation's ``distillation``), from what
        it returned; nothing outside the method builds them."""
        ...

    def harden(
        self,
        uploaded: LoadedModel,
        data: Dataset,
        plan: RunPlan,
        *,
        on_progress: ProgressFn,
        should_cancel: CancelFn,
    ) -> HardeningResult:
        """Harden ``uploaded`` on ``data`` as ``plan`` says, on ``plan.device``. Reports its own
        stages through ``on_progress`` and raises JobCancelledError once ``should_cancel()``."""
        ...
