"""The job resource: how a job row looks to clients, in the API's answers and in webhook bodies.

The API and the workers (webhooks) both build it, so it lives with the shared infrastructure.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from app.infra.db import Job, JobState, utcnow
from core.contract.job_plan import ETA_MIN_SECONDS, job_plan, progress_stages, stage_fraction
from core.contract.methods import stage_names
from core.contract.spec import HardenSpec
from core.names import (
    ARTIFACT_NAMES,
    MODEL_CARD,
    MODEL_ONNX,
    REPORT_HTML,
    REPORT_JSON,
    REPORT_SARIF,
)
from core.report.summary import VerdictSummary

ARTIFACT_TYPES = {
    MODEL_ONNX: "application/octet-stream",
    REPORT_JSON: "application/json",
    REPORT_HTML: "text/html; charset=utf-8",
    REPORT_SARIF: "application/sarif+json",
    MODEL_CARD: "text/markdown; charset=utf-8",
}


def job_links(job_id: str) -> dict[str, str]:
    """The URL paths of a job: itself, its events, cancel, and the downloads."""
    base = f"/jobs/{job_id}"
    links = {"self": base, "events": f"{base}/events", "cancel": f"{base}/cancel"}
    links.update({name: f"{base}/{name}" for name in ARTIFACT_NAMES})
    return links


class ErrorOut(BaseModel):
    """Why a job failed or stopped, as the worker recorded it."""

    code: str = Field(
        description="Stable error code: a refusal of the inputs found by the worker "
        "(invalid_dataset, unsupported_model, unsafe_model, model_dataset_mismatch, "
        "invalid_spec), or 'cancelled', 'timeout', 'worker_lost', 'expired'.",
        examples=["model_dataset_mismatch"],
    )
    message: str = Field(
        description="What went wrong, for people.",
        examples=["the model outputs NaN or infinite values on the dataset's inputs"],
    )
    hint: str | None = Field(
        None,
        description="How to fix the job before resubmitting it; null when there is nothing to fix.",
        examples=["the model's last layer must have one output per dataset class"],
    )


class ArtifactOut(BaseModel):
    """A file a succeeded job produced."""

    href: str = Field(
        description="URL path to download it (GET, same API key).",
        examples=["/jobs/0b5c1b7f6f7e4b3e9a0c2d4e6f8a1b2c/model.onnx"],
    )
    sha256: str = Field(
        description="Hex SHA-256 of the file; the download's ETag is this value in quotes.",
        examples=["4c1f0e9b5d0a3e7c2b8f6a1d9e0c7b5a3f2e1d0c9b8a7f6e5d4c3b2a1f0e9d8c"],
    )
    content_type: str = Field(
        description="Media type the download is served with.",
        examples=["application/octet-stream"],
    )


class MlflowOut(BaseModel):
    """Where the MLflow hand-off put a succeeded job (the config's ``mlflow`` section or the
    service's HARDEN_MLFLOW_* settings), or why it failed: a failure is a warning, the job's
    files are stored all the same."""

    tracking_uri: str = Field(description="The MLflow tracking server.")
    experiment: str | None = Field(None, description="The experiment of the run.")
    registered_model: str | None = Field(None, description="The registered model's name.")
    alias: str | None = Field(None, description="The alias moved to the new version.")
    run_id: str | None = Field(None, description="The MLflow run; null when the hand-off failed.")
    model_version: str | None = Field(
        None, description="The new registered model version; null when the hand-off failed."
    )
    model_uri: str | None = Field(
        None,
        description="models:/<name>/<version>, for mlflow.onnx.load_model or "
        "mlflow.pyfunc.load_model.",
        examples=["models:/harden-student/3"],
    )
    warning: str | None = Field(
        None, description="Why the hand-off failed or was not attempted; null when it worked."
    )


class JobOut(BaseModel):
    """A job as clients see it (examples: app/web/api_docs.py, built from job rows)."""

    id: str = Field(description="The job id (32 hex digits); its URL is /jobs/{id}.")
    state: JobState = Field(
        description="queued, running, then succeeded, failed or cancelled; expired once the "
        "retention removed its files."
    )
    stage: str | None = Field(
        description="The stage running: "
        + ", ".join(stage_names()[:-1])
        + f" or {stage_names()[-1]} (the hardening method's stages sit between load and "
        "export: core/contract/methods.py)."
    )
    progress: float = Field(ge=0, le=1, description="Overall progress, 0..1.")
    eta_s: int | None = Field(
        None,
        description="Seconds until the job is done at its measured pace: the time running x "
        "the work left / the work done, each stage's work priced from the spec in sample passes "
        "(training steps x batch size, attack steps, forward passes: core/contract/job_plan.py) "
        "and the running stage's share from its own progress; corrected as the job goes. Null "
        "while queued or loading, before 5 s, and once the job ended.",
    )
    created_at: datetime = Field(description="When the job was submitted (UTC).")
    started_at: datetime | None = Field(
        description="When a worker first started it (UTC); null while queued."
    )
    finished_at: datetime | None = Field(
        description="When it succeeded, failed or was cancelled (UTC); null until then."
    )
    attempts: int = Field(description="How many times a worker started the job.")
    cancel_requested: bool = Field(
        description="A cancel was asked for; a running job stops within one training or attack "
        "step."
    )
    error: ErrorOut | None = Field(description="Set when the job failed or was cancelled.")
    spec: dict[str, Any] = Field(description="The job's HardenSpec as accepted.")
    model_sha256: str = Field(description="Hex SHA-256 of the uploaded model file.")
    model_format: str = Field(
        description="The upload's format, recognised by content: torchscript, torch_export, "
        "onnx or safetensors."
    )
    dataset_sha256: str | None = Field(
        description="Hex SHA-256 of the job's dataset file: the one uploaded with the job, the "
        "registered dataset it names (dataset:<id>), or the pin of an s3:// or https:// "
        "reference; null for a builtin dataset or an unpinned remote one."
    )
    artifacts: dict[str, ArtifactOut] = Field(
        description="Downloadable outputs (when the job succeeded), by name."
    )
    verdict: VerdictSummary | None = Field(
        description="The robustness audit's verdict on model.onnx with the clean and "
        "strongest-attack accuracies of both models, once the job succeeded; null before, and "
        "for a job run without the evaluation. report.json has the evidence.",
    )
    mlflow: MlflowOut | None = Field(
        None,
        description="The MLflow hand-off of a succeeded job; null when the job was not handed "
        "to MLflow.",
    )
    links: dict[str, str] = Field(
        description="URL paths of the job: self, events, cancel and the downloads."
    )


# Before this much progress or time, a pace says nothing yet (core.contract.job_plan: nor while
# loading).
ETA_MIN_PROGRESS = 0.01


def eta_seconds(job: Job, now: datetime) -> int | None:
    """The seconds a running job still needs at its measured pace, or None (see JobOut.eta_s).

    The job's plan (core.contract.job_plan) prices every stage in sample passes, from its spec;
    the stage running and its fraction done are read back from the stored progress. The ETA is
    the time running x the planned work left / the planned work done: the throughput measured so
    far (whatever the machine, the model and the load) applied to what is left. A spec that no
    longer validates (an older version's) falls back to the overall progress's own pace."""
    if job.state != JobState.running or job.started_at is None:
        return None
    elapsed = (now - job.started_at).total_seconds()
    if job.progress < ETA_MIN_PROGRESS or elapsed < ETA_MIN_SECONDS or job.stage is None:
        return None
    try:
        spec = HardenSpec.model_validate(job.spec)
    except ValidationError:
        return round(elapsed * (1 - job.progress) / job.progress)
    fraction = stage_fraction(progress_stages(spec), job.stage, job.progress)
    if fraction is None:
        return None
    remaining = job_plan(spec).remaining_s(job.stage, fraction, elapsed)
    return None if remaining is None else round(remaining)


def job_out(job: Job, now: datetime | None = None) -> JobOut:
    """The client view of a job row (``now``: the time its ETA is from; the clock's)."""
    base = f"/jobs/{job.id}"
    error = None
    if job.error_code:
        error = ErrorOut(code=job.error_code, message=job.error_message or "", hint=job.error_hint)
    artifacts = {}
    verdict = None
    if job.state == JobState.succeeded:
        verdict = VerdictSummary.model_validate(job.verdict) if job.verdict else None
        artifacts = {
            name: ArtifactOut(href=f"{base}/{name}", sha256=sha, content_type=ARTIFACT_TYPES[name])
            for name, sha in sorted((job.artifacts or {}).items())
            if name in ARTIFACT_TYPES
        }
    return JobOut(
        id=job.id,
        state=JobState(job.state),
        stage=job.stage,
        progress=job.progress,
        eta_s=eta_seconds(job, now or utcnow()),
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        attempts=job.attempts,
        cancel_requested=job.cancel_requested,
        error=error,
        spec=job.spec,
        model_sha256=job.model_sha256,
        model_format=job.model_format,
        dataset_sha256=job.dataset_sha256,
        artifacts=artifacts,
        verdict=verdict,
        mlflow=MlflowOut.model_validate(job.mlflow) if job.mlflow else None,
        links=job_links(job.id),
    )


def job_json_schema() -> dict[str, Any]:
    """The JSON Schema of a job as the API, webhooks and ``harden status`` show it (committed as
    ``schemas/job.schema.json``)."""
    return JobOut.model_json_schema()


if __name__ == "__main__":
    import json

    print(json.dumps(job_json_schema(), indent=2, sort_keys=True))
