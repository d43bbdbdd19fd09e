"""Response models of the HTTP API (and the job JSON sent to webhooks)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from app.db import Job, JobState

ARTIFACT_NAMES = ("model.onnx", "report.json", "report.html")
ARTIFACT_TYPES = {
    "model.onnx": "application/octet-stream",
    "report.json": "application/json",
    "report.html": "text/html; charset=utf-8",
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


class JobOut(BaseModel):
    """A job as clients see it (examples: app/api_docs.py, built from job rows)."""

    id: str = Field(description="The job id (32 hex digits); its URL is /jobs/{id}.")
    state: JobState = Field(
        description="queued, running, then succeeded, failed or cancelled; expired once the "
        "retention removed its files."
    )
    stage: str | None = Field(
        description="load, teacher, soft_labels, student, export, evaluate or report."
    )
    progress: float = Field(ge=0, le=1, description="Overall progress, 0..1.")
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
        description="Hex SHA-256 of the uploaded dataset; null for a builtin dataset."
    )
    artifacts: dict[str, ArtifactOut] = Field(
        description="Downloadable outputs (when the job succeeded), by name."
    )
    links: dict[str, str] = Field(
        description="URL paths of the job: self, events, cancel and the three downloads."
    )


class JobList(BaseModel):
    """One page of the caller's jobs, newest first."""

    items: list[JobOut] = Field(description="The jobs of this page.")
    total: int = Field(description="Jobs matching the filter, all pages together.")
    limit: int = Field(description="Page size asked for (1..200).")
    offset: int = Field(description="How many matching jobs come before this page.")
    next: str | None = Field(description="URL of the next page, or null on the last one.")


class Health(BaseModel):
    """GET /healthz."""

    status: str = Field(description="Always 'ok' (an answer at all is the signal).")


class Readiness(BaseModel):
    """GET /readyz when every dependency answers."""

    status: str = Field(description="'ready'.")
    checks: dict[str, bool] = Field(description="Each dependency (database, broker): reachable.")


class Problem(BaseModel):
    """An error (application/problem+json, RFC 9457). Members beyond ``hint`` appear only with
    the codes that set them."""

    type: str = Field(
        description="URI naming the problem: https://harden.dev/problems/ + code.",
        examples=["https://harden.dev/problems/unsafe_model"],
    )
    title: str = Field(
        description="The HTTP status' reason phrase.", examples=["Unprocessable Entity"]
    )
    status: int = Field(description="The HTTP status code, repeated.", examples=[422])
    detail: str = Field(
        description="What was wrong with this request.",
        examples=[
            "the model file is a Python pickle, which runs arbitrary code when loaded; it was "
            "not opened"
        ],
    )
    code: str = Field(
        description="Stable machine-readable error code (the list is in each response's "
        "description).",
        examples=["unsafe_model"],
    )
    hint: str | None = Field(
        None,
        description="How to fix the request.",
        examples=["re-save the model with torch.jit.save(torch.jit.script(model), path), ..."],
    )
    errors: list[dict[str, str]] | None = Field(
        None,
        description="invalid_request, invalid_spec: the fields that failed, "
        "[{field, message, type}].",
    )
    format: str | None = Field(None, description="unsafe_model: the format found ('pickle').")
    missing: list[str] | None = Field(
        None, description="invalid_dataset: the arrays the uploaded .npz lacks."
    )
    limit_bytes: int | None = Field(
        None, description="payload_too_large: the per-file upload limit in bytes."
    )
    job_id: str | None = Field(
        None, description="idempotency_conflict: the job created with this Idempotency-Key."
    )
    state: str | None = Field(None, description="job_not_done: the job's current state.")
    checks: dict[str, bool] | None = Field(
        None, description="not_ready: which dependency (database, broker) is reachable."
    )


def job_out(job: Job) -> JobOut:
    """The client view of a job row."""
    base = f"/jobs/{job.id}"
    error = None
    if job.error_code:
        error = ErrorOut(code=job.error_code, message=job.error_message or "", hint=job.error_hint)
    artifacts = {}
    if job.state == JobState.succeeded:
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
        links=job_links(job.id),
    )
