"""The verdict in a few numbers: what a pipeline acts on without reading ``report.json``.

The job resource (``GET /jobs/{id}``, the job list, webhook bodies), ``harden status``, the
Python client's ``wait()`` and the CLI's ``--fail-on`` gates all carry this one model. It is built
from a report by :meth:`core.report.schema.Report.verdict_summary`. Pydantic only: the web
process, which must stay free of torch and of the audit code, imports it too.
"""

from __future__ import annotations

import math
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field

from core.names import VerdictLabel
from core.report.comparison import ComparisonToBaseline
from core.report.next_step import NextStep

# An upload within this share of the way from chance to perfect accuracy (or within three
# standard errors of chance) is treated as untrained: every robustness number of it is noise.
UNTRAINED_MARGIN: Final = 0.1


def near_chance(accuracy: float, num_classes: int, samples: int) -> bool:
    """Whether ``accuracy`` on ``samples`` test images of ``num_classes`` classes is so close to
    chance that the model is untrained (or does not match the data): within UNTRAINED_MARGIN of
    the way from chance to 1, or within three binomial standard errors of chance."""
    chance = 1.0 / num_classes
    noise = 3 * math.sqrt(chance * (1 - chance) / max(samples, 1))
    return accuracy <= chance + max(UNTRAINED_MARGIN * (1 - chance), noise)


def decisive_accuracy(worst_case: float | None, strongest_attack: float) -> float:
    """A model's robust accuracy as the verdict weighs it at one budget: its per-sample worst case
    over the attacks where measured (never above the strongest single attack's), else the
    strongest attack's."""
    if worst_case is not None:
        return min(worst_case, strongest_attack)
    return strongest_attack


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CleanAccuracy(_Strict):
    """Accuracy on the held-out test split, without attack."""

    uploaded: float = Field(ge=0, le=1, description="The uploaded model's.")
    student: float = Field(ge=0, le=1, description="The hardened model's (model.onnx).")


class RobustAt(_Strict):
    """Both models under the strongest attack at one norm and budget (the report's
    ``verdict.strongest`` row)."""

    norm: Literal["linf", "l2"] = Field(description="The threat model's norm.")
    epsilon: float = Field(description="The budget, in input units.")
    uploaded_robust_accuracy: float = Field(
        ge=0, le=1, description="The uploaded model's robust accuracy under its strongest attack."
    )
    student_robust_accuracy: float = Field(
        ge=0, le=1, description="The hardened model's robust accuracy under its strongest attack."
    )
    uploaded_attack: str = Field(description="The attack strongest on the uploaded model.")
    student_attack: str = Field(description="The attack strongest on the hardened model.")
    uploaded_worst_case: float | None = Field(
        None,
        ge=0,
        le=1,
        description="The uploaded model's per-sample worst case over every attack (a sample "
        "counts only if every attack failed on it); null where not measured on both models.",
    )
    student_worst_case: float | None = Field(
        None,
        ge=0,
        le=1,
        description="The hardened model's per-sample worst case over every attack; null where "
        "not measured on both models.",
    )

    @property
    def student_decisive(self) -> float:
        """The hardened model's robust accuracy the verdict weighs (:func:`decisive_accuracy`)."""
        return decisive_accuracy(self.student_worst_case, self.student_robust_accuracy)


class CertifiedAt(_Strict):
    """Both models' smoothed classifiers at one certified L2 radius (the report's
    ``certification``): the share of the certified test images whose class is right and
    certified at least that far."""

    radius: float = Field(description="The L2 radius, in input units.")
    uploaded_certified_accuracy: float = Field(
        ge=0, le=1, description="The uploaded model's smoothed classifier's."
    )
    student_certified_accuracy: float = Field(
        ge=0, le=1, description="The hardened model's smoothed classifier's (the gate's number)."
    )


class CorruptionDropAt(_Strict):
    """One corruption, averaged over its severities: both models and the hardened one's loss."""

    corruption: str = Field(description="The corruption's name, e.g. 'fog'.")
    uploaded: float = Field(ge=0, le=1, description="The upload's mean accuracy under it.")
    student: float = Field(ge=0, le=1, description="The hardened model's mean accuracy under it.")
    drop_points: float = Field(description="(uploaded - student) x 100: points lost.")
    noise_points: float = Field(
        ge=0, description="1.96 paired standard errors of that drop, in points."
    )


class CorruptionSummary(_Strict):
    """What hardening cost under common corruptions (the report's ``corruptions``): what
    ``--fail-on corruption-drop=POINTS`` reads."""

    family: Literal["colour", "grayscale"] = Field(
        description="'colour' (CIFAR-10-C's corruptions) or 'grayscale' (MNIST-C's)."
    )
    samples: int = Field(ge=1, description="Test images corrupted.")
    uploaded: float = Field(ge=0, le=1, description="The upload's mean corruption accuracy.")
    student: float = Field(ge=0, le=1, description="The hardened model's mean corruption accuracy.")
    drop_points: float = Field(description="Mean corruption accuracy lost, in points.")
    noise_points: float = Field(ge=0, description="1.96 paired standard errors of that drop.")
    margin_points: float = Field(
        ge=0, description="The spec's margin: the verdict says 'weaker under' beyond it."
    )
    weaker_under: list[str] = Field(
        default_factory=list,
        description="Corruptions where the loss exceeds both the margin and its noise.",
    )
    per_corruption: list[CorruptionDropAt] = Field(
        default_factory=list, description="Each corruption, averaged over its severities."
    )

    def drops_beyond(self, points: float) -> list[tuple[str, float, float]]:
        """(name, drop, noise) where the loss exceeds ``points`` and its own noise: the mean
        corruption accuracy (named 'mean') first, then each corruption; the verdict's rule for
        'weaker under' with ``points`` as the margin."""
        rows = [("mean", self.drop_points, self.noise_points)] + [
            (row.corruption, row.drop_points, row.noise_points) for row in self.per_corruption
        ]
        return [row for row in rows if row[1] > points and row[1] > row[2]]


class VerdictSummary(_Strict):
    """The audit's verdict on model.onnx with the numbers behind it."""

    label: VerdictLabel = Field(
        description="'masked' (the gain, if any, is gradient masking), 'no measurable gain' or "
        "'real gain' (README: Reading the report)."
    )
    headline: str = Field(description="The verdict in one or two sentences, for people.")
    method: str = Field(description="The hardening method of model.onnx, e.g. 'distillation'.")
    clean_accuracy: CleanAccuracy = Field(
        description="Both models' accuracy on the held-out test split, without attack."
    )
    robust: list[RobustAt] = Field(
        default_factory=list,
        description="Per norm and budget audited, both models under the strongest attack.",
    )
    certified: list[CertifiedAt] = Field(
        default_factory=list,
        description="Per L2 radius certified (randomized smoothing), both smoothed classifiers' "
        "certified accuracy; empty when the job did not certify.",
    )
    baseline: ComparisonToBaseline | None = Field(
        None,
        description="The hardened model against the job's baseline (the report's "
        "comparison_to_baseline): what --fail-on regression=POINTS reads.",
    )
    untrained_upload: bool = Field(
        False,
        description="The uploaded model's clean accuracy on the test split is at or near chance "
        "(1 / number of classes, within 10% of the way to 100% or 3 standard errors): it is "
        "untrained or does not match the dataset, and every robustness number is noise. What "
        "--fail-on untrained reads.",
    )
    corruptions: CorruptionSummary | None = Field(
        None,
        description="Both models under common corruptions and what hardening cost there; null "
        "when the job did not measure it.",
    )
    next_step: NextStep | None = Field(
        None,
        description="What to do next, chosen by the verdict, with the `harden run` command "
        "(the report's summary.next_step).",
    )
