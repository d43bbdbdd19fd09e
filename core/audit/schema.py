"""The ``evaluation`` and ``verdict`` sections of the report (pydantic, torch-free).

Kept apart from ``core.report.schema`` so the robustness audit's schema can change without
touching the rest of the report; ``core.report.schema.Report`` uses these types for its two fields.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from core.contract.attacks import ThreatNorm
from core.names import VerdictLabel
from core.report.intervals import INTERVAL_DESCRIPTION, accuracy_interval
from core.report.summary import decisive_accuracy

SUCCESS_DEFINITION = (
    "An attack succeeds on a sample only if the model classified the clean sample correctly and "
    "the adversarial one wrongly (targeted attacks: as the target). Success rate = successes / "
    "correctly classified samples; robust accuracy = correctly classified and not fooled / all "
    "attacked samples."
)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _interval_field() -> Any:
    return Field(None, description=INTERVAL_DESCRIPTION + " Filled in when read, if missing.")


class AttackPoint(_Section):
    """One attack at one budget on one model."""

    epsilon: float | None = Field(
        description="Budget in input units (L0 attacks: fraction of features); None: unbounded."
    )
    samples: int = Field(ge=0, description="Samples attacked.")
    correct_before: int = Field(ge=0, description="Of those, correctly classified before.")
    success_rate: float = Field(ge=0, le=1, description="Successes / correctly classified.")
    robust_accuracy: float = Field(ge=0, le=1, description="Correct and not fooled / samples.")
    robust_accuracy_interval: tuple[float, float] | None = _interval_field()
    median_perturbation: float | None = Field(
        None, description="Median size of successful perturbations (unit: perturbation_unit)."
    )
    mean_perturbation: float | None = Field(None, description="Mean size, same unit.")
    seconds: float = Field(ge=0, description="Wall time of this attack run.")

    @model_validator(mode="after")
    def _with_interval(self) -> AttackPoint:
        if self.robust_accuracy_interval is None and self.samples:
            self.robust_accuracy_interval = accuracy_interval(self.robust_accuracy, self.samples)
        return self


class AttackSummary(_Section):
    """One attack family member (e.g. PGD, L-inf, margin loss) over its budgets."""

    attack: str = Field(description="Attack id as in the spec (e.g. 'pgd_linf_margin').")
    title: str
    norm: ThreatNorm
    loss: str = Field(description="What the attack follows: ce, margin, dlr, softmax, logits...")
    targeted: bool = False
    paper: bool = Field(description="Used by the distillation paper (Papernot et al. 2016).")
    sees_through_masking: bool = Field(
        description="Logit-level, scale-invariant, gradient-free or transfer: immune to saturation."
    )
    perturbation_unit: Literal["l2", "linf", "fraction_changed"] | None = None
    points: list[AttackPoint] = Field(default_factory=list)
    note: str | None = Field(None, description="Why an attack was skipped or how it was run.")


class GradientAmplitude(_Section):
    """L1 norm of input gradients per sample: the paper's 'adversarial gradient' (softmax of the
    true class) and, for contrast, the logit margin's, which distillation does not shrink."""

    softmax_l1_mean: float = Field(ge=0)
    softmax_l1_median: float = Field(ge=0)
    margin_l1_mean: float = Field(ge=0)
    margin_l1_median: float = Field(ge=0)
    softmax_l1: list[float] = Field(default_factory=list, description="Per-sample values.")
    margin_l1: list[float] = Field(default_factory=list, description="Per-sample values.")


class WorstCase(_Section):
    """At one budget, the per-sample worst case over every attack run on one model: a sample is
    robust only if every attack failed on it (AutoAttack's robust accuracy, Croce & Hein 2020).
    Never above the lowest single attack's robust accuracy on the same samples."""

    norm: Literal["linf", "l2"]
    epsilon: float
    samples: int = Field(
        ge=1, description="Samples every attack below ran on (a prefix when a slow one ran)."
    )
    attacks: list[str] = Field(description="The attacks run at this budget.")
    robust_accuracy: float = Field(
        ge=0, le=1, description="Correct and fooled by no attack / samples: the worst case."
    )
    robust_accuracy_interval: tuple[float, float] | None = _interval_field()
    min_mean_robust_accuracy: float = Field(
        ge=0, le=1, description="The minimum over attacks of each one's robust accuracy, here."
    )
    min_mean_attack: str = Field(description="The attack with that minimum.")

    @model_validator(mode="after")
    def _with_interval(self) -> WorstCase:
        if self.robust_accuracy_interval is None:
            self.robust_accuracy_interval = accuracy_interval(self.robust_accuracy, self.samples)
        return self


class ModelRobustness(_Section):
    """Everything measured on one model."""

    clean_accuracy: float = Field(
        ge=0,
        le=1,
        description="On the attacked samples (the evaluation's samples), not the whole test "
        "split: the report's models.*.clean_accuracy is the test split's.",
    )
    clean_accuracy_interval: tuple[float, float] | None = _interval_field()
    mean_abs_logit: float = Field(ge=0)
    gradient: GradientAmplitude
    attacks: list[AttackSummary] = Field(default_factory=list)
    worst_case: list[WorstCase] = Field(
        default_factory=list, description="Per budget (L-inf, L2), the per-sample worst case."
    )
    seconds: float = Field(ge=0)


class Evaluation(_Section):
    """The robustness audit: the uploaded model and the student side by side."""

    samples: int = Field(ge=1)
    samples_slow: int = Field(ge=1, description="Samples for JSMA, CW-L2 and Square (a prefix).")
    preset: Literal["default", "autoattack"] = Field(
        "default",
        description="The evaluation's preset (core.contract.evaluation.EvaluationSpec.preset).",
    )
    method: str | None = Field(
        None, description="The hardening method that made the hardened model, when known."
    )
    seed: int
    device: str
    input_range: tuple[float, float]
    threat_model: str | None = Field(
        None,
        description="The threat-model preset of the default budgets (core.contract.threat_models): "
        "given in the spec or chosen from the input shape; budgets the spec gave override it.",
    )
    epsilons_linf: list[float]
    epsilons_l2: list[float]
    success_definition: str = SUCCESS_DEFINITION
    models: dict[str, ModelRobustness] = Field(description="'uploaded' and 'student'.")
    seconds: float = Field(ge=0)

    @model_validator(mode="after")
    def _with_intervals(self) -> Evaluation:
        for model in self.models.values():
            if model.clean_accuracy_interval is None:
                model.clean_accuracy_interval = accuracy_interval(
                    model.clean_accuracy, self.samples
                )
        return self


class StrongestAttack(_Section):
    """At one budget, the attack leaving the lowest robust accuracy, for each model."""

    norm: Literal["linf", "l2"]
    epsilon: float
    uploaded_attack: str
    uploaded_robust_accuracy: float
    uploaded_robust_accuracy_interval: tuple[float, float] | None = Field(
        None, description=INTERVAL_DESCRIPTION + " From the strongest attack's samples."
    )
    student_attack: str
    student_robust_accuracy: float
    student_robust_accuracy_interval: tuple[float, float] | None = Field(
        None, description=INTERVAL_DESCRIPTION + " From the strongest attack's samples."
    )
    gain: float = Field(description="Student minus uploaded robust accuracy (points / 100).")
    uploaded_worst_case: float | None = Field(
        None, description="The uploaded model's per-sample worst case over attacks here."
    )
    uploaded_worst_case_interval: tuple[float, float] | None = _interval_field()
    student_worst_case: float | None = Field(None, description="The student's, likewise.")
    student_worst_case_interval: tuple[float, float] | None = _interval_field()
    worst_case_samples: int | None = Field(
        None, description="Samples both worst cases are measured on."
    )
    autoattack_missing: list[str] = Field(
        default_factory=list,
        description="AutoAttack components (APGD-CE, APGD-DLR/T, Square) that did not run here "
        "on both models; a gain counts as real only where none is missing.",
    )

    @model_validator(mode="after")
    def _with_intervals(self) -> StrongestAttack:
        samples = self.worst_case_samples
        if samples and self.uploaded_worst_case is not None:
            self.uploaded_worst_case_interval = self.uploaded_worst_case_interval or (
                accuracy_interval(self.uploaded_worst_case, samples)
            )
        if samples and self.student_worst_case is not None:
            self.student_worst_case_interval = self.student_worst_case_interval or (
                accuracy_interval(self.student_worst_case, samples)
            )
        return self

    @property
    def decisive_gain(self) -> float:
        """The gain the verdict weighs: of the per-sample worst cases where both were measured
        (what AutoAttack reports), else of the strongest single attacks."""
        if self.uploaded_worst_case is not None and self.student_worst_case is not None:
            return self.student_worst_case - self.uploaded_worst_case
        return self.gain

    @property
    def student_decisive(self) -> float:
        """The hardened model's robust accuracy the verdict weighs (its worst case where
        measured, else the strongest attack's)."""
        return decisive_accuracy(self.student_worst_case, self.student_robust_accuracy)


def deciding_row(
    label: str, strongest: list[StrongestAttack], gains: list[StrongestAttack]
) -> StrongestAttack | None:
    """The budget that decides a verdict, which its headline and the report's summary quote.

    ``real gain``: the budget of the largest gain that counted. Otherwise (``masked``, ``no
    measurable gain``, or a gain proven by a certificate rather than by attacks): the budget where
    the hardened model's robust accuracy is lowest, since that is where attacks that see through
    masking still win most clearly; L-inf first (the norm AutoAttack's components attack, the only
    one where a gain can count), the larger budget on a tie (the threat model's standard one, e.g.
    MNIST's 0.3). Never the budget with the largest apparent gain: that is what masking fakes.
    """
    if label == "real gain" and gains:
        return max(gains, key=lambda row: row.decisive_gain)
    pool = [row for row in strongest if row.norm == "linf"] or strongest
    return min(pool, key=lambda row: (row.student_decisive, -row.epsilon), default=None)


class MaskingSign(_Section):
    """One symptom of gradient masking (Athalye, Carlini, Wagner 2018, section 3.1)."""

    sign: str
    detected: bool
    evidence: str


class Verdict(_Section):
    """What the numbers mean, in words: masked, no measurable gain, or real gain."""

    label: VerdictLabel
    headline: str
    evidence: list[str] = Field(description="The sentences that decided the label, in order.")
    gains: list[StrongestAttack] = Field(
        default_factory=list, description="Budgets where the strongest attack shows a real gain."
    )
    strongest: list[StrongestAttack] = Field(default_factory=list)
    masking_signs: list[MaskingSign] = Field(default_factory=list)
    paper_attacks_gain: bool = Field(
        description="Whether the paper's attacks (JSMA on softmax, FGSM on CE) show a big gain."
    )
    deciding: StrongestAttack | None = Field(
        None,
        description="The budget that decides the label and that the headline quotes "
        "(core.audit.schema.deciding_row): 'real gain', the largest gain that counted; "
        "otherwise the L-inf budget where the hardened model's robust accuracy is lowest. "
        "Filled in when read, if missing.",
    )

    @model_validator(mode="after")
    def _with_deciding(self) -> Verdict:
        if self.deciding is None:
            self.deciding = deciding_row(self.label, self.strongest, self.gains)
        return self


def fill_strongest_intervals(verdict: Verdict, evaluation: Evaluation) -> None:
    """Give the strongest-attack rows of ``verdict`` that lack them (reports before 2.1) the 95%
    intervals of their robust accuracies, from the samples of the attack runs they name."""
    samples = {
        (role, attack.attack, point.epsilon): point.samples
        for role, model in evaluation.models.items()
        for attack in model.attacks
        for point in attack.points
    }
    rows = [*verdict.strongest, *verdict.gains, *([verdict.deciding] if verdict.deciding else [])]
    for row in rows:
        up = samples.get(("uploaded", row.uploaded_attack, row.epsilon))
        st = samples.get(("student", row.student_attack, row.epsilon))
        if row.uploaded_robust_accuracy_interval is None and up:
            row.uploaded_robust_accuracy_interval = accuracy_interval(
                row.uploaded_robust_accuracy, up
            )
        if row.student_robust_accuracy_interval is None and st:
            row.student_robust_accuracy_interval = accuracy_interval(
                row.student_robust_accuracy, st
            )
