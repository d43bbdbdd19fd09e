"""The interface every hardening method implements, and what one hands back to the pipeline.

:mod:`core.pipeline` runs a method only through :class:`HardeningMethod`; the audit, the export and
the report are the same for every method. Defensive distillation
(:mod:`core.hardening.distillation`) is the first implementation; :mod:`core.hardening.registry`
names them all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from torch import nn

from core.names import CancelFn, ProgressFn

if TYPE_CHECKING:
    from core.contract.methods import MethodInfo
    from core.datasets.dataset import Dataset
    from core.intake.upload import LoadedModel
    from core.plan import RunPlan


@dataclass
class HardeningResult:
    """What a method produced, the same for every method: the pipeline, the export, the audit,
    the report and the worker read these fields and nothing else. ``student`` is the hardened
    model (the one exported); ``teacher`` the model it learnt from, if any, and summarised beside
    it in the report. What only the method understands (how its student stopped, its held-out
    checks) is its ``record``, read back by the same method's :meth:`HardeningMethod.report_section`
    and :meth:`HardeningMethod.notes`.

    The models are bare (no normalisation layer): they expect the inputs the upload expects.
    """

    teacher: nn.Module | None
    student: nn.Module
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage it ran
    # Per stage (its catalogue name), the training loss of each epoch it trained.
    losses: dict[str, list[float]] = field(default_factory=dict)
    # T when the deployed student outputs T-scaled logits (defensive distillation: trained at T,
    # deployed at T=1, its logits are about T times an undistilled model's and their softmax is
    # saturated); None when it outputs plain logits (training against attacks, ARD: its student
    # matches the teacher's soft labels at T, so its logits have the teacher's scale).
    output_temperature: float | None = None
    # The standard deviation of the Gaussian noise it was trained under (input units), when it
    # is the base classifier of a smoothed one: the audit certifies at it, and model.onnx says it.
    noise_sigma: float | None = None
    record: Any = None  # the method's own record; opaque to everything but the method


# A hardened model this far below the upload is worth a word in the report (the 1.5 points are
# the bar bench/results/student_accuracy.md measures every architecture against).
ACCURACY_DROP_NOTE = 0.015


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
        """The report fields this method owns (distillation's ``distillation``, the methods
        training against attacks' ``robust_training``), from what it returned; nothing outside
        the method builds them."""
        ...

    def notes(self, result: HardeningResult, plan: RunPlan, *, accuracy_drop: float) -> list[str]:
        """Sentences for the report about this run of the method: what it replaced or fell back
        to, and, when the hardened model's clean accuracy is ``accuracy_drop`` below the
        upload's by more than :data:`ACCURACY_DROP_NOTE`, why and what to change."""
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
