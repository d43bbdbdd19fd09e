"""What a run records about itself: the ONNX metadata, the model summaries and the report.

Split from :mod:`core.pipeline`, which runs the stages and calls these to write down the result.
"""

from __future__ import annotations

import dataclasses
import json
import platform
from importlib import metadata as importlib_metadata
from pathlib import Path

import torch
from torch import Tensor, nn

from core.audit.schema import Evaluation, Verdict
from core.contract.certification import Certification
from core.datasets.dataset import Dataset
from core.deploy.onnx_export import ExportResult
from core.hardening.method import HardeningMethod, HardeningResult
from core.intake.upload import LoadedModel
from core.modules import logits_of
from core.names import MODEL_ONNX
from core.plan import RunPlan
from core.report.intervals import wilson_interval
from core.report.schema import (
    ClassAccuracy,
    DatasetSplit,
    ExportSummary,
    MethodComparison,
    ModelSummary,
    Report,
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
    """Clean accuracy (overall and per class, with 95% intervals) and mean |logit| of ``module``
    on the test split."""
    logits = logits_of(module, inputs)
    right = logits.argmax(dim=1) == labels
    classes = logits.shape[1]
    samples = torch.bincount(labels, minlength=classes).tolist()
    correct = torch.bincount(labels[right], minlength=classes).tolist()
    return ModelSummary(
        clean_accuracy=float(right.float().mean()),
        mean_abs_logit=float(logits.abs().mean()),
        test_samples=int(len(labels)),
        per_class=[
            ClassAccuracy(
                label=label,
                samples=count,
                accuracy=hits / count if count else 0.0,
                interval=wilson_interval(hits, count),
            )
            for label, (count, hits) in enumerate(zip(samples, correct, strict=True))
        ],
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
    if result.noise_sigma is not None:
        # The base classifier of a smoothed one: what harden_client's SmoothedClassifier needs to
        # predict as the certified classifier does (PREDICT, with abstain).
        draws, _ = plan.spec.certification.counts(plan.device.split(":")[0])
        outputs |= {
            "smoothing_sigma": repr(result.noise_sigma),
            "smoothing_n": str(draws),
            "smoothing_alpha": repr(plan.spec.certification.alpha),
        }
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
    certification: Certification | None = None,
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
                "conversions": list(data.conversions),
            },
        },
        dataset_split=dataset_split(data, plan.train_samples),
        models=models,
        method=method.name,
        method_title=method.title,
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
        certification=certification,
    )


def method_comparison(
    method: HardeningMethod,
    result: HardeningResult,
    plan: RunPlan,
    student: ModelSummary,
    *,
    training_s: float,
    evaluation: Evaluation | None,
    verdict: Verdict | None,
) -> MethodComparison:
    """One compared method's row of the report."""
    return MethodComparison(
        method=method.name, method_title=method.title, training_s=training_s, student=student,
        evaluation=evaluation, verdict=verdict, **method.report_section(result, plan),
    )  # fmt: skip
