"""Response models of the HTTP API (and the job JSON sent to webhooks)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from app.db import Job, JobState

ARTIFACT_NAMES = ("model.onnx", "report.json", "report.html")
ARTIFACT_TYPES = {
    "model.onnx": "application/octet-stream",
    "report.json": "application/json",
    "report.html": "text/html; charset=utf-8",
}


class ErrorOut(BaseModel):
    code: str = Field(examples=["invalid_dataset"])
    message: str = Field(examples=["x_test is missing from the uploaded .npz"])
    hint: str | None = Field(None, examples=["Save the arrays with np.savez(..., x_test=...)"])


class ArtifactOut(BaseModel):
    href: str = Field(examples=["/jobs/3f2a.../model.onnx"])
    sha256: str
    content_type: str


class JobOut(BaseModel):
    """A job as clients see it."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "0b5c1b7f6f7e4b3e9a0c2d4e6f8a1b2c",
                    "state": "running",
                    "stage": "student",
                    "progress": 0.42,
                    "created_at": "2026-11-25T07:00:00Z",
                    "started_at": "2026-11-25T07:00:01Z",
                    "finished_at": None,
                    "attempts": 1,
                    "error": None,
                    "spec": {"dataset": "builtin:digits", "temperature": 100.0},
                    "model_sha256": "9f...",
                    "model_format": "torchscript",
                    "dataset_sha256": None,
                    "artifacts": {},
                    "links": {"self": "/jobs/0b5c...", "events": "/jobs/0b5c.../events"},
                }
            ]
        }
    )

    id: str
    state: JobState
    stage: str | None = Field(
        description="load, teacher, soft_labels, student, export, evaluate or report."
    )
    progress: float = Field(ge=0, le=1, description="Overall progress, 0..1.")
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    attempts: int = Field(description="How many times a worker started the job.")
    cancel_requested: bool
    error: ErrorOut | None = Field(description="Set when the job failed or was cancelled.")
    spec: dict[str, Any] = Field(description="The job's HardenSpec as accepted.")
    model_sha256: str
    model_format: str
    dataset_sha256: str | None
    artifacts: dict[str, ArtifactOut] = Field(
        description="Downloadable outputs (when the job succeeded), by name."
    )
    links: dict[str, str]


class JobList(BaseModel):
    items: list[JobOut]
    total: int = Field(description="Jobs matching the filter, all pages together.")
    limit: int
    offset: int
    next: str | None = Field(description="URL of the next page, or null on the last one.")


class Problem(BaseModel):
    """An error (application/problem+json, RFC 9457)."""

    type: str = Field(examples=["https://harden.dev/problems/unsafe_model"])
    title: str = Field(examples=["Unprocessable Content"])
    status: int = Field(examples=[422])
    detail: str = Field(examples=["The model file is a pickle, which runs code when loaded."])
    code: str = Field(examples=["unsafe_model"])
    hint: str | None = Field(
        None, examples=["Export it with torch.jit.save, torch.export.save or ONNX."]
    )
    errors: list[dict[str, str]] | None = Field(
        None, description="Field errors of a 422: [{field, message, type}]."
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
    links = {"self": base, "events": f"{base}/events", "cancel": f"{base}/cancel"}
    links.update({name: f"{base}/{name}" for name in ARTIFACT_NAMES})
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
        links=links,
    )
