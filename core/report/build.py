"""What a run records about itself: the ONNX metadata, the model summaries and the report.

Split from :mod:`core.pipeline`, which runs the stages and calls these to write down the result.
"""

from __future__ import annotations

import dataclasses
import json
import platform
from importlib import metadata as importlib_metadata
from pathlib import Path

from torch import Tensor, nn

from core.audit.schema import Evaluation, Verdict
from core.datasets.references import Dataset
from core.deploy.onnx_export import ExportResult
from core.hardening.method import HardeningMethod, HardeningResult, RobustTraining
from core.hardening.training import logits_of
from core.intake.upload import LoadedModel
from core.names import MODEL_ONNX
from core.plan import RunPlan
from core.report.schema import (
    DatasetSplit,
    ExportSummary,
    MethodComparison,
    ModelSummary,
    Report,
    RobustTrainingSummary,
)


def software_versions() -> dict[str, str]:
    """Versions of the software that produced an artifact, for the report and ONNX metadata."""
    versions = {"python": platform.python_version()}
    for name in ("harden", "torch", "onnx", "onnxruntime", "numpy"):
        try:
            versions[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            versions[name] = "unknown"
    return versions


def model_summary(module: nn.Module, inputs: Tensor, labels: Tensor) -> ModelSummary:
    """Clean accuracy and mean |logit| of ``module`` on the test split."""
    logits = logits_of(module, inputs)
    return ModelSummary(
        clean_accuracy=float((logits.argmax(dim=1) == labels).float().mean()),
        mean_abs_logit=float(logits.abs().mean()),
        test_samples=int(len(labels)),
    )


def outputs_sentence(result: HardeningResult) -> str:
    """What model.onnx outputs and how to read it, in one sentence (the report and the ONNX
    metadata say the same)."""
    temperature = result.output_temperature
    if temperature is None:
        return (
            "model.onnx outputs plain logits, on the scale of an undefended model's: their "
            "softmax gives the model's class probabilities."
        )
    return (
        f"model.onnx outputs T-scaled logits (T={temperature:g}: about {temperature:g} times an "
        "undistilled model's), so their softmax is saturated, near one-hot, and no calibrated "
        f"probability; take softmax(logits / {temperature:g}) for probabilities on the uploaded "
        "model's scale."
    )


def onnx_metadata(
    plan: RunPlan,
    data: Dataset,
    uploaded: LoadedModel,
    *,
    method: HardeningMethod,
    result: HardeningResult,
    created_at: str,
) -> dict[str, str]:
    """The ONNX file's metadata_props: how the student was made, what input it expects and
    what it outputs (``outputs``: ``t_scaled_logits`` for defensive distillation, with its
    ``temperature``; ``logits`` otherwise). The pipeline adds the audit's ``verdict`` and writes
    the file once the evaluation has run (:func:`core.deploy.onnx_export.write_onnx`)."""
    spec = plan.spec
    versions = software_versions()
    outputs: dict[str, str] = {"outputs": "logits", "outputs_note": outputs_sentence(result)}
    if result.output_temperature is not None:
        outputs |= {
            "outputs": "t_scaled_logits",
            "temperature": repr(result.output_temperature),
            # The paper's word for it: the student is deployed at T=1, i.e. its raw logits.
            "deployed_temperature": "1",
        }
    return {
        **outputs,
        "classes": json.dumps(data.class_names),
        "input_shape": json.dumps([-1, *data.input_shape]),
        "input_range": json.dumps(list(spec.input_range)),
        # The ONNX model is the bare student: like the upload, it expects normalised input.
        "normalization": json.dumps(
            spec.normalization.model_dump() if spec.normalization else None
        ),
        "dataset": plan.dataset,
        "uploaded_model_sha256": uploaded.sha256,
        "seed": str(spec.seed),
        "software": json.dumps({k: versions[k] for k in ("torch", "onnx", "harden")}),
        "created_at": created_at,
        "method": method.name,
        "method_title": method.title,
    }


# A student this far below the upload is worth a word in the report (the 1.5 points are the
# bar bench/results/student_accuracy.md measures every architecture against).
ACCURACY_DROP_NOTE = 0.015


def accuracy_note(
    models: dict[str, ModelSummary], plan: RunPlan, result: HardeningResult
) -> str | None:
    """A sentence for the report when the student is far below the upload; None otherwise."""
    drop = models["uploaded"].clean_accuracy - models["student"].clean_accuracy
    if drop <= ACCURACY_DROP_NOTE:
        return None
    if result.robust is not None:
        # Training against attacks trades clean accuracy for robustness (Tsipras et al. 2019):
        # the cost is stated, not treated as a failure.
        return (
            f"the hardened model's clean accuracy is {100 * drop:.1f} points below the uploaded "
            f"model's: the price of training against {result.robust.norm} attacks of size "
            f"{result.robust.epsilon:g}; a smaller robust.epsilon (or a larger model) costs less"
        )
    spec = plan.spec
    if spec.distillation.student_parametrization == "plain":
        advice = "use the default student_parametrization 'output_scale'"
    elif result.student_stop != "converged":
        advice = "raise student_epochs, or start it from the teacher (student_init='teacher')"
    elif spec.distillation.student_init == "scratch" and not (
        result.student_check is not None and result.student_check.fell_back
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
        f"after {len(result.student_losses)} epochs ({result.student_steps} optimizer steps, "
        f"stopped: {result.student_stop}) at T={plan.spec.distillation.temperature:g}: {advice}"
    )


def student_check_note(result: HardeningResult) -> str | None:
    """A sentence for the report when the scratch student failed its check and the job deployed
    a student warm-started from the teacher instead; None otherwise."""
    check = result.student_check
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


def dataset_split(data: Dataset, train_samples: int) -> DatasetSplit:
    """Where the run's train/test split came from, and its sizes."""
    split = data.split
    return DatasetSplit(
        source=split.source,
        train_samples=train_samples,
        test_samples=len(data.y_test),
        split_by_test_fraction=split.source == "test_fraction",
        test_fraction=split.test_fraction,
        seed=split.seed,
    )


def build_report(
    plan: RunPlan,
    model_file: Path,
    uploaded: LoadedModel,
    data: Dataset,
    models: dict[str, ModelSummary],
    result: HardeningResult,
    exported: ExportResult,
    *,
    created_at: str,
    notes: list[str],
    timings: dict[str, float],
    evaluation: Evaluation | None,
    verdict: Verdict | None,
    method: HardeningMethod,
    comparison: list[MethodComparison],
) -> Report:
    """The report of one run (validated by its pydantic model)."""
    return Report(
        created_at=created_at,
        software=software_versions(),
        device=plan.device,
        compute=dataclasses.asdict(plan.compute),
        spec=plan.spec_as_run().model_dump(mode="json"),
        input={
            "model": {
                "file": model_file.name,
                "format": uploaded.format,
                "sha256": uploaded.sha256,
                "architecture": uploaded.architecture,
            },
            "dataset": {
                "reference": plan.dataset,
                "num_classes": data.num_classes,
                "class_names": data.class_names,
                "input_shape": list(data.input_shape),
                "train_samples": plan.train_samples,
                "test_samples": int(len(data.y_test)),
            },
        },
        dataset_split=dataset_split(data, plan.train_samples),
        models=models,
        method=method.name,
        method_title=method.title,
        robust_training=robust_summary(result.robust),
        **method.report_section(result, plan),
        export=ExportSummary(
            file=MODEL_ONNX,
            sha256=exported.sha256,
            opset=exported.opset,
            parity_samples=exported.parity_samples,
            max_abs_diff=exported.max_abs_diff,
            max_rel_diff=exported.max_rel_diff,
            prediction_agreement=exported.prediction_agreement,
            exporter=exported.exporter,
            output_temperature=result.output_temperature,
            outputs=outputs_sentence(result),
        ),
        timings_s=timings,
        notes=notes,
        evaluation=evaluation,
        verdict=verdict,
        comparison=comparison,
    )


def robust_summary(record: RobustTraining | None) -> RobustTrainingSummary | None:
    """The report's record of training against attacks (None for distillation)."""
    if record is None:
        return None
    return RobustTrainingSummary(
        norm=record.norm, epsilon=record.epsilon, steps=record.steps,
        step_size=record.step_size, fast=record.fast, warmup_epochs=record.warmup_epochs,
        epochs=record.epochs, best_epoch=record.best_epoch,
        held_out_samples=record.held_out_samples,
        held_out_robust_accuracy=record.held_out_robust_accuracy,
        fell_back_at=record.fell_back_at, parameters=record.parameters,
        loss_history=record.losses,
    )  # fmt: skip


def method_comparison(
    method: HardeningMethod,
    result: HardeningResult,
    student: ModelSummary,
    *,
    training_s: float,
    evaluation: Evaluation | None,
    verdict: Verdict | None,
) -> MethodComparison:
    """One compared method's row of the report."""
    return MethodComparison(
        method=method.name, method_title=method.title, training_s=training_s, student=student,
        robust_training=robust_summary(result.robust), evaluation=evaluation, verdict=verdict,
    )  # fmt: skip
