"""The report users act on: its versioned pydantic schema.

``report.json`` always validates against :class:`Report`; ``schemas/report.schema.json`` in the
repository is generated from it (``python -m core.report.schema > schemas/report.schema.json``).
No torch import here: the API and clients may read reports too. The HTML page is rendered by
:func:`core.report.html.render_html`, which imports this module (never the other way round).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, computed_field, model_validator

from core.audit.schema import Evaluation, Verdict, fill_strongest_intervals
from core.contract.certification import Certification
from core.contract.corruptions import CorruptionRobustness
from core.contract.methods import CATALOGUE, with_sections
from core.contract.spec import FLAT_DISTILLATION_FIELDS
from core.report.comparison import ComparisonToBaseline
from core.report.intervals import INTERVAL_DESCRIPTION, INTERVAL_METHOD, accuracy_interval
from core.report.next_step import NextStep, next_step
from core.report.overview import Measured, ReportSummary, RobustSummary, WhatRan
from core.report.summary import CertifiedAt as SummaryCertifiedAt
from core.report.summary import (
    CleanAccuracy,
    CorruptionDropAt,
    CorruptionSummary,
    RobustAt,
    VerdictSummary,
    near_chance,
)

# 1.1: export.max_rel_diff and export.prediction_agreement.
# 1.2: distillation.student_epochs_auto and distillation.student_steps.
# 1.3: distillation.student_parametrization, student_stop, student_final_divergence,
#      student_deployed; an auto student trains until its loss converges.
# 1.4: method, method_title, robust_training and comparison (hardening methods beyond
#      distillation; distillation is null for a method that does not distil);
#      evaluation.preset (autoattack), evaluation.method, models.*.worst_case (per-sample worst
#      case over attacks), verdict.strongest[].*_worst_case and autoattack_missing.
# 1.5: export.outputs and export.output_temperature (T-scaled logits or plain logits).
# 1.6: dataset_split (where the train/test split came from: the dataset's own, a seeded
#      stratified test_fraction split, or a builtin's fixed one), evaluation.threat_model.
# 1.7: compute (training precision, channels_last, cudnn_benchmark on the device).
# 1.8: distillation.student_check (a scratch student's held-out accuracy against the upload's,
#      and whether the job fell back to a student warm-started from the teacher).
# 1.9: distillation.student_check.finished_accuracy (a scratch student short at its plateau is
#      measured again after its low-rate finish before it is replaced).
# 2.0: breaking for readers of 1.x (read one with read_report, which upgrades it):
#      spec.distillation holds the eight distillation settings that 1.x kept at the top of the
#      spec; a comparison row carries its method's own section (distillation or
#      robust_training), as the job's own method does; timings_s has one key per stage the
#      method declares (core.contract.methods), so adversarial training and TRADES time
#      ``training`` where 1.x said ``student``. New: certification (randomized smoothing's
#      certificates of both models, stage ``certify``) and the sections methods declare in the
#      catalogue (randomized_smoothing's ``smoothing``).
# 2.1: additive: summary (what report.html shows first: the verdict, clean accuracy on the test
#      split, robust accuracy at the deciding budget, what ran, how long, the next step; derived,
#      written on every dump), verdict.deciding, a 95% Wilson interval beside every accuracy
#      (models.*.clean_accuracy_interval, evaluation's points, worst cases and strongest rows),
#      models.*.per_class. A 2.0 report reads as 2.1 with them filled in.
# 2.2: additive: resumed_from (a job that took over an earlier attempt's checkpoints: which
#      attempt, the stage and epoch it went on from, what was not retrained).
REPORT_VERSION = "2.2"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


_Model = TypeVar("_Model", bound=BaseModel)


class ClassAccuracy(_Section):
    """One class's clean accuracy on the test split."""

    label: int = Field(ge=0, description="The class index (input.dataset.class_names names it).")
    samples: int = Field(ge=0, description="Test images of this class.")
    accuracy: float = Field(ge=0, le=1, description="Of them, the share classified right.")
    interval: tuple[float, float] = Field(description=INTERVAL_DESCRIPTION)


class ModelSummary(_Section):
    """One model's clean behaviour on the held-out test split."""

    clean_accuracy: float = Field(
        ge=0,
        le=1,
        description="On the whole held-out test split (test_samples images), without attack. "
        "The evaluation's clean_accuracy is on its attacked samples only.",
    )
    clean_accuracy_interval: tuple[float, float] | None = Field(
        None, description=INTERVAL_DESCRIPTION + " Filled in when read, if missing."
    )
    mean_abs_logit: float = Field(ge=0)
    test_samples: int = Field(ge=1)
    per_class: list[ClassAccuracy] = Field(
        default_factory=list,
        description="Clean accuracy per class on the test split, by class index (empty in "
        "reports before 2.1).",
    )

    @model_validator(mode="after")
    def _with_interval(self) -> ModelSummary:
        if self.clean_accuracy_interval is None:
            self.clean_accuracy_interval = accuracy_interval(self.clean_accuracy, self.test_samples)
        return self


class DatasetSplit(_Section):
    """The run's train/test split and where it came from."""

    source: Literal["given", "test_fraction", "builtin"] = Field(
        description="'given': the dataset's own (train/ and test/ folders, or x_train/x_test); "
        "'test_fraction': split here, stratified by class; 'builtin': the builtin's fixed split."
    )
    train_samples: int = Field(ge=1)
    test_samples: int = Field(ge=1)
    split_by_test_fraction: bool
    test_fraction: float | None = Field(None, description="The share held out, when split here.")
    seed: int | None = Field(
        None, description="The split's seed (the job's seed, when split here)."
    )


class ExportSummary(_Section):
    """The ONNX file and its parity with torch."""

    file: str
    sha256: str
    opset: int
    parity_samples: int
    max_abs_diff: float = Field(
        ge=0, description="Largest |onnxruntime - torch| on held-out samples."
    )
    exporter: str = Field("", description="Torch exporter that wrote it: dynamo or torchscript.")
    max_rel_diff: float = Field(
        0.0, ge=0, description="max_abs_diff over the largest |logit| torch gave on those samples."
    )
    prediction_agreement: float = Field(
        1.0, ge=0, le=1, description="Fraction of those samples given the same class by both."
    )
    output_temperature: float | None = Field(
        None,
        description="T when the file outputs T-scaled logits (defensive distillation: about T "
        "times an undistilled model's, softmax saturated); null for plain logits.",
    )
    outputs: str = Field(
        "", description="What the file outputs and how to read it, in one sentence."
    )


class StudentCheckSummary(_Section):
    """Whether the student trained from scratch kept the upload's accuracy (spec.student_max_drop;
    core.hardening.method.StudentCheck)."""

    held_out_samples: int = Field(
        ge=1, description="Training images held out from the scratch student to check it on."
    )
    upload_test_accuracy: float = Field(ge=0, le=1, description="The bar: the upload's.")
    max_drop: float = Field(ge=0, le=1, description="The spec's student_max_drop.")
    standard_error: float = Field(
        ge=0,
        description="Of the difference between the two accuracies (binomial, from the sample "
        "counts; the student's that decides): the check allows this much more, so that noise "
        "alone does not fail it.",
    )
    scratch_accuracy: float = Field(
        ge=0,
        le=1,
        description="The scratch student's accuracy on the held-out images when its loss "
        "reached a plateau, before its low-learning-rate finish.",
    )
    scratch_epochs: int = Field(
        ge=0, description="Epochs the scratch student trained to its plateau."
    )
    finished_accuracy: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="Only when scratch_accuracy fell short: the same student's accuracy on the "
        "held-out images after its low-learning-rate finish on the images it trained on. This "
        "one then decides.",
    )
    fell_back: bool = Field(
        description="True when the held-out accuracy that decides (finished_accuracy where "
        "measured, else scratch_accuracy) was below upload_test_accuracy - max_drop - "
        "standard_error: the deployed student was warm-started from the teacher instead "
        "(student_init 'teacher')."
    )


class DistillationSummary(_Section):
    # The epoch budget comes from core.plan.RunPlan, when an auto student stops from
    # core.hardening.training.Convergence; measured in bench/results/student_accuracy.md.
    temperature: float
    teacher_epochs: int
    student_epochs: int = Field(description="Epochs the student trained.")
    student_epochs_auto: bool = Field(
        False,
        description="True when the spec left student_epochs unset: the student trained until "
        "its soft-label loss converged, within a step bound.",
    )
    student_steps: int = Field(0, ge=0, description="Optimizer steps the student trained.")
    student_stop: str = Field(
        "",
        description="Why the student's training stopped: 'converged', 'step bound' (auto, the "
        "bound reached first) or 'epochs as set'.",
    )
    student_final_divergence: float | None = Field(
        None,
        description="The student's last-epoch loss above the soft labels' entropy: its KL "
        "divergence to them (0 would be a perfect copy of the teacher at T).",
    )
    student_parametrization: str = Field(
        "",
        description=(
            "output_scale or plain (core.contract.spec.HardenSpec.student_parametrization)."
        ),
    )
    student_deployed: str = Field(
        "", description="How the student's T-times output became the exported model."
    )
    optimizer: str
    teacher_start: str = Field(description="How the teacher was started from the upload.")
    student_init: str = Field(
        description="What the deployed student started from: 'scratch', 'teacher' or a zoo "
        "architecture's name."
    )
    student_check: StudentCheckSummary | None = Field(
        None, description="The scratch student's accuracy check; null when none ran."
    )
    train_samples: int
    teacher_loss_history: list[float] = Field(default_factory=list)
    student_loss_history: list[float] = Field(default_factory=list)


class RobustTrainingSummary(_Section):
    """How a method that trains against attacks trained (core.hardening.method.RobustTraining)."""

    norm: str
    epsilon: float = Field(description="Training budget, in input units.")
    steps: int = Field(description="PGD steps of the inner maximisation.")
    step_size: float
    fast: bool = Field(description="Single-step FGSM from a random start (Wong et al. 2020).")
    warmup_epochs: int = Field(description="Epochs over which epsilon grew linearly from 0.")
    epochs: int = Field(description="Epochs trained.")
    best_epoch: int = Field(description="The epoch whose weights were kept (1-based).")
    held_out_samples: int = Field(description="Training samples held out for the PGD check.")
    held_out_robust_accuracy: list[float] = Field(
        default_factory=list,
        description="PGD robust accuracy at the full budget on the held-out samples, per epoch.",
    )
    fell_back_at: int | None = Field(
        None,
        description="Epoch (1-based) where fast training lost half its best held-out robust "
        "accuracy (catastrophic overfitting) and went on with PGD from the best epoch.",
    )
    parameters: dict[str, float] = Field(
        default_factory=dict, description="Method parameters, e.g. TRADES' beta."
    )
    loss_history: list[float] = Field(default_factory=list)


class MethodComparison(_Section):
    """One more method run on the same upload and audited beside the job's own model."""

    method: str
    method_title: str
    training_s: float = Field(description="Seconds its training took.")
    student: ModelSummary = Field(description="Its model's clean behaviour on the test split.")
    distillation: DistillationSummary | None = None
    robust_training: RobustTrainingSummary | None = None
    evaluation: Evaluation | None = None
    verdict: Verdict | None = None


def _with_method_records(base: type[_Model]) -> type[_Model]:
    """``base`` with one optional field per method that declares a report section of its own in
    the catalogue (core.contract.methods: ``record``): a new method's record is part of the
    report and its JSON Schema without an edit here."""
    sections = (info.record for info in CATALOGUE.values() if info.record is not None)
    return with_sections(base, sections, optional=True)


if not TYPE_CHECKING:  # the type checker sees the class above; templates read them by name
    MethodComparison = _with_method_records(MethodComparison)


class ResumedFrom(_Section):
    """Where a job resumed from: the checkpoints of an earlier attempt (core/checkpoint.py)."""

    attempt: int | None = Field(
        description="The attempt whose checkpoints were taken over (null outside the service)."
    )
    stage: str = Field(description="The stage of the last training taken over.")
    epoch: int = Field(
        description="Its epochs done when saved: this run went on after this epoch (1-based)."
    )
    ended: bool = Field(
        description="Whether that training had ended (then nothing of it was retrained)."
    )
    trainings: int = Field(description="How many trainings were taken over.")
    epochs_not_retrained: int = Field(
        description="Epochs over every training taken over that this run did not train again."
    )


class Report(_Section):
    """Everything a hardening job produced, in one document."""

    report_version: str = REPORT_VERSION
    created_at: str
    software: dict[str, str]
    device: str
    compute: dict[str, Any] = Field(
        default_factory=dict,
        description="How training used the device (core/compute.py): training_precision "
        "('float32' or 'bfloat16' autocast), channels_last, cudnn_benchmark.",
    )
    spec: dict[str, Any] = Field(
        description="The resolved job spec (core.contract.spec.HardenSpec)."
    )
    input: dict[str, Any] = Field(
        description="Upload: format, sha256, architecture; dataset facts."
    )
    dataset_split: DatasetSplit | None = Field(
        None, description="The train/test split the run used and where it came from."
    )
    models: dict[str, ModelSummary] = Field(
        description="Clean accuracy per model: 'uploaded', 'teacher', 'student'."
    )
    method: str = Field("distillation", description="The hardening method of model.onnx.")
    method_title: str = Field("", description="The method, with its paper.")
    distillation: DistillationSummary | None = Field(
        None, description="Defensive distillation's record; null for other methods."
    )
    robust_training: RobustTrainingSummary | None = Field(
        None, description="Training against attacks; null for defensive distillation."
    )
    export: ExportSummary
    timings_s: dict[str, float] = Field(description="Seconds per pipeline stage.")
    notes: list[str] = Field(
        default_factory=list, description="Anything the run did differently from what was asked."
    )
    # Filled by core.audit.evaluate; None when evaluation is disabled.
    evaluation: Evaluation | None = None
    verdict: Verdict | None = None
    certification: Certification | None = Field(
        None,
        description="Randomized smoothing's certificates of the upload and the hardened model as "
        "base classifiers (what is certified: the smoothed classifiers, see its 'what').",
    )
    corruptions: CorruptionRobustness | None = Field(
        None,
        description="Both models' accuracy under common corruptions at five severities and what "
        "hardening cost there (None when the spec disabled it).",
    )
    comparison_to_baseline: ComparisonToBaseline | None = Field(
        None,
        description="The hardened model against the job's baseline (spec.baseline) on the same "
        "attacks, budgets and samples, with paired 95% intervals (core/report/comparison.py).",
    )
    resumed_from: ResumedFrom | None = Field(
        None,
        description="Set when the job resumed from an earlier attempt's checkpoints (its worker "
        "was lost): what was taken over. With the same seed the results are those of a run "
        "never stopped.",
    )
    comparison: list[MethodComparison] = Field(
        default_factory=list,
        description="The other methods the spec named, each run on the same upload and audited "
        "the same way, for a side-by-side comparison (their models are not exported).",
    )

    @model_validator(mode="after")
    def _with_intervals(self) -> Report:
        """Reports before 2.1: the verdicts' strongest-attack rows get their intervals."""
        for verdict, evaluation in [
            (self.verdict, self.evaluation),
            *((other.verdict, other.evaluation) for other in self.comparison),
        ]:
            if verdict is not None and evaluation is not None:
                fill_strongest_intervals(verdict, evaluation)
        return self

    @model_validator(mode="before")
    @classmethod
    def _derived_fields_are_not_read(cls, data: Any) -> Any:
        """``summary`` is derived from the rest on every dump: a stored one is dropped."""
        if isinstance(data, dict) and "summary" in data:
            data = {key: value for key, value in data.items() if key != "summary"}
        return data

    @computed_field(  # type: ignore[prop-decorator]
        description="What report.html shows first, derived from the fields below on every dump "
        f"(core/report/overview.py); intervals: {INTERVAL_METHOD}."
    )
    @property
    def summary(self) -> ReportSummary:
        """The verdict, the test split's clean accuracy, robust accuracy at the deciding budget,
        what ran, how long, and the next step."""
        verdict, evaluation = self.verdict, self.evaluation
        return ReportSummary(
            verdict=verdict.label if verdict else None,
            headline=verdict.headline if verdict else None,
            clean_accuracy={
                role: Measured(
                    accuracy=model.clean_accuracy,
                    samples=model.test_samples,
                    interval=model.clean_accuracy_interval,
                )
                for role in ("uploaded", "student")
                if (model := self.models.get(role)) is not None
            },
            robust=self._robust_summary(),
            ran=WhatRan(
                method=self.method,
                method_title=self.method_title or self.method,
                compared=[other.method for other in self.comparison],
                preset=evaluation.preset if evaluation else None,
                attacks=(
                    [a.attack for a in evaluation.models["student"].attacks]
                    if evaluation and "student" in evaluation.models
                    else []
                ),
                threat_model=evaluation.threat_model if evaluation else None,
                dataset=str((self.input.get("dataset") or {}).get("reference", "")),
            ),
            duration_s=sum(self.timings_s.values()),
            next_step=self.next_step(),
        )

    def _robust_summary(self) -> RobustSummary | None:
        row = self.verdict.deciding if self.verdict else None
        if row is None:
            return None
        worst = bool(row.worst_case_samples) and row.uploaded_worst_case is not None
        samples = row.worst_case_samples if worst else None
        samples = samples or (self.evaluation.samples if self.evaluation else 0)
        pairs = (
            [
                (row.uploaded_worst_case, row.uploaded_worst_case_interval),
                (row.student_worst_case, row.student_worst_case_interval),
            ]
            if worst
            else [
                (row.uploaded_robust_accuracy, row.uploaded_robust_accuracy_interval),
                (row.student_robust_accuracy, row.student_robust_accuracy_interval),
            ]
        )
        uploaded, student = (
            Measured(accuracy=accuracy or 0.0, samples=samples, interval=interval)
            for accuracy, interval in pairs
        )
        return RobustSummary(
            norm=row.norm,
            epsilon=row.epsilon,
            measure="worst case" if worst else "strongest attack",
            uploaded=uploaded,
            student=student,
        )

    def next_step(self) -> NextStep:
        """What to do after this report (core/report/next_step.py)."""
        robust = self._robust_summary()
        gate = None
        if robust is not None and robust.student.interval is not None:
            gate = (robust.norm, robust.epsilon, robust.student.interval[0])
        return next_step(
            self.verdict.label if self.verdict else None,
            untrained_upload=self.untrained_upload,
            method=self.method,
            spec=self.spec,
            model_file=str((self.input.get("model") or {}).get("file", "model")),
            dataset=str((self.input.get("dataset") or {}).get("reference", "")),
            gate=gate,
        )

    def verdict_summary(self) -> VerdictSummary | None:
        """The verdict on model.onnx in a few numbers (the job resource's ``verdict``); None
        when the run was not audited."""
        if self.verdict is None:
            return None
        return VerdictSummary(
            label=self.verdict.label,
            headline=self.verdict.headline,
            method=self.method,
            clean_accuracy=CleanAccuracy(
                uploaded=self.models["uploaded"].clean_accuracy,
                student=self.models["student"].clean_accuracy,
            ),
            robust=[
                RobustAt(
                    norm=row.norm,
                    epsilon=row.epsilon,
                    uploaded_robust_accuracy=row.uploaded_robust_accuracy,
                    student_robust_accuracy=row.student_robust_accuracy,
                    uploaded_attack=row.uploaded_attack,
                    student_attack=row.student_attack,
                    uploaded_worst_case=row.uploaded_worst_case,
                    student_worst_case=row.student_worst_case,
                )
                for row in self.verdict.strongest
            ],
            certified=self._certified_summary(),
            baseline=self.comparison_to_baseline,
            corruptions=self._corruption_summary(),
            untrained_upload=self.untrained_upload,
            next_step=self.next_step(),
        )

    @property
    def untrained_upload(self) -> bool:
        """Whether the upload's clean accuracy on the test split is at or near chance."""
        uploaded = self.models.get("uploaded")
        classes = (self.input.get("dataset") or {}).get("num_classes")
        return (
            uploaded is not None
            and isinstance(classes, int)
            and classes > 1
            and near_chance(uploaded.clean_accuracy, classes, uploaded.test_samples)
        )

    def _corruption_summary(self) -> CorruptionSummary | None:
        cor = self.corruptions
        if cor is None:
            return None
        return CorruptionSummary(
            family=cor.family,
            samples=cor.samples,
            uploaded=cor.mean_corruption_accuracy["uploaded"],
            student=cor.mean_corruption_accuracy["student"],
            drop_points=cor.drop_points,
            noise_points=cor.noise_points,
            margin_points=cor.margin_points,
            weaker_under=cor.weaker_under,
            per_corruption=[
                CorruptionDropAt(
                    corruption=row.corruption,
                    uploaded=row.uploaded,
                    student=row.student,
                    drop_points=row.drop_points,
                    noise_points=row.noise_points,
                )
                for row in cor.per_corruption
            ],
        )

    def _certified_summary(self) -> list[SummaryCertifiedAt]:
        certification = self.certification
        if certification is None or {"uploaded", "student"} - set(certification.models):
            return []
        uploaded, student = certification.models["uploaded"], certification.models["student"]
        return [
            SummaryCertifiedAt(
                radius=up.radius,
                uploaded_certified_accuracy=up.certified_accuracy,
                student_certified_accuracy=st.certified_accuracy,
            )
            for up, st in zip(uploaded.certified, student.certified, strict=True)
        ]


if not TYPE_CHECKING:
    Report = _with_method_records(Report)

# The methods of 1.x whose one training stage was timed as ``student``.
_SINGLE_STAGE_1X = ("adversarial", "trades")


def _upgrade_1x(data: dict[str, Any]) -> dict[str, Any]:
    """A 1.x report's fields where 2.0 keeps them (the numbers are unchanged)."""
    data = dict(data)
    spec = dict(data.get("spec") or {})
    nested = dict(spec.get("distillation") or {})
    for name in FLAT_DISTILLATION_FIELDS:
        if name in spec:
            nested.setdefault(name, spec.pop(name))
    spec["distillation"] = nested
    data["spec"] = spec
    if data.get("method") in _SINGLE_STAGE_1X and "student" in (data.get("timings_s") or {}):
        data["timings_s"] = {
            ("training" if stage == "student" else stage): seconds
            for stage, seconds in data["timings_s"].items()
        }
    data["report_version"] = REPORT_VERSION
    return data


def read_report(data: dict[str, Any]) -> Report:
    """A ``report.json`` of this major version, or of 1.x upgraded to it; any other version is
    refused with what to do (a report is read by the worker, the CLI and clients, which may be
    older or newer than the job that wrote it)."""
    version = str(data.get("report_version", ""))
    major = version.split(".", 1)[0]
    if major == "1":
        data = _upgrade_1x(data)
    elif major != REPORT_VERSION.split(".", 1)[0]:
        raise ValueError(
            f"report_version {version or '(none)'} is not one this version reads "
            f"({REPORT_VERSION.split('.', 1)[0]}.x or 1.x): upgrade harden to read it"
        )
    return Report.model_validate(data)


def report_json_schema() -> dict[str, Any]:
    """The JSON Schema of ``report.json`` as written (committed as
    ``schemas/report.schema.json``): the serialization schema, which holds the derived
    ``summary``."""
    return Report.model_json_schema(mode="serialization")


if __name__ == "__main__":
    print(json.dumps(report_json_schema(), indent=2, sort_keys=True))
