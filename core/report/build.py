"""What a run records about itself: the ONNX metadata, the model summaries and the report.

Split from :mod:`core.pipeline`, which runs the stages and calls these to write down the result.
"""

from __future__ import annotations

import json
import platform
from importlib import metadata as importlib_metadata
from pathlib import Path

import torch
from torch import Tensor, nn

from core.audit.schema import Evaluation, Verdict
from core.datasets.references import Dataset
from core.deploy.onnx_export import ExportResult
from core.hardening.distillation import DistillResult, logits_of
from core.intake.upload import LoadedModel
from core.report.schema import DistillationSummary, ExportSummary, ModelSummary, Report
from core.spec import HardenSpec

MODEL_FILE = "model.onnx"


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


def onnx_metadata(
    spec: HardenSpec, data: Dataset, uploaded: LoadedModel, created_at: str
) -> dict[str, str]:
    """The ONNX file's metadata_props: how the student was made and what input it expects."""
    versions = software_versions()
    return {
        "temperature": repr(spec.temperature),
        "deployed_temperature": "1",
        "classes": json.dumps(data.class_names),
        "input_shape": json.dumps([-1, *data.input_shape]),
        "input_range": json.dumps(list(spec.input_range)),
        # The ONNX model is the bare student: like the upload, it expects normalised input.
        "normalization": json.dumps(
            spec.normalization.model_dump() if spec.normalization else None
        ),
        "dataset": data.reference,
        "uploaded_model_sha256": uploaded.sha256,
        "seed": str(spec.seed),
        "software": json.dumps({k: versions[k] for k in ("torch", "onnx", "harden")}),
        "created_at": created_at,
        "method": "defensive distillation (Papernot et al., IEEE S&P 2016)",
    }


# A student this far below the upload is worth a word in the report: it is a training budget
# problem (measured on builtin:digits with the zoo mlp uploaded at 98.1%: 30 student epochs of 12
# steps 73.3%; the auto default's 80 epochs 82.5%; 6,000 steps 96.7%; see core.spec).
ACCURACY_DROP_NOTE = 0.015


def accuracy_note(models: dict[str, ModelSummary], spec: HardenSpec, steps: int) -> str | None:
    """A sentence for the report when the student is far below the upload; None otherwise."""
    drop = models["uploaded"].clean_accuracy - models["student"].clean_accuracy
    if drop <= ACCURACY_DROP_NOTE:
        return None
    return (
        f"the student's clean accuracy is {100 * drop:.1f} points below the uploaded model's "
        f"after {spec.student_epochs} epochs ({steps} optimizer steps); at T={spec.temperature:g} "
        "the student needs many steps to grow its logits: raise student_epochs, or start it from "
        "the teacher (student_init='teacher')"
    )


def build_report(
    spec: HardenSpec,
    resolved: HardenSpec,
    model_file: Path,
    uploaded: LoadedModel,
    data: Dataset,
    models: dict[str, ModelSummary],
    result: DistillResult,
    exported: ExportResult,
    *,
    created_at: str,
    device: torch.device,
    notes: list[str],
    timings: dict[str, float],
    evaluation: Evaluation | None,
    verdict: Verdict | None,
) -> Report:
    """The report of one run (validated by its pydantic model)."""
    return Report(
        created_at=created_at,
        software=software_versions(),
        device=str(device),
        spec=resolved.model_dump(mode="json"),
        input={
            "model": {
                "file": model_file.name,
                "format": uploaded.format,
                "sha256": uploaded.sha256,
                "architecture": uploaded.architecture,
            },
            "dataset": {
                "reference": data.reference,
                "num_classes": data.num_classes,
                "class_names": data.class_names,
                "input_shape": list(data.input_shape),
                "train_samples": int(len(data.y_train)),
                "test_samples": int(len(data.y_test)),
            },
        },
        models=models,
        distillation=DistillationSummary(
            temperature=spec.temperature,
            teacher_epochs=spec.teacher_epochs,
            student_epochs=resolved.student_epochs,
            student_epochs_auto=spec.student_epochs is None,
            student_steps=resolved.student_steps(len(data.y_train)),
            optimizer=spec.optimizer,
            teacher_start=result.teacher_start,
            student_init=spec.student_architecture or spec.student_init,
            train_samples=int(len(data.y_train)),
            teacher_loss_history=result.teacher_losses,
            student_loss_history=result.student_losses,
        ),
        export=ExportSummary(
            file=MODEL_FILE,
            sha256=exported.sha256,
            opset=exported.opset,
            parity_samples=exported.parity_samples,
            max_abs_diff=exported.max_abs_diff,
            max_rel_diff=exported.max_rel_diff,
            prediction_agreement=exported.prediction_agreement,
            exporter=exported.exporter,
        ),
        timings_s=timings,
        notes=notes,
        evaluation=evaluation,
        verdict=verdict,
    )
