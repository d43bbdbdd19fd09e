"""Response models of the HTTP API beyond the job resource (app/infra/job_resource.py)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from app.infra.db import JobState
from app.infra.job_resource import ErrorOut, JobOut
from core.report.summary import VerdictSummary


class JobList(BaseModel):
    """One page of the caller's jobs, newest first."""

    items: list[JobOut] = Field(description="The jobs of this page.")
    total: int = Field(description="Jobs matching the filter, all pages together.")
    limit: int = Field(description="Page size asked for (1..200).")
    offset: int = Field(description="How many matching jobs come before this page.")
    next: str | None = Field(description="URL of the next page, or null on the last one.")


def _job_field(name: str) -> str:
    return JobOut.model_fields[name].description or ""


class JobProgress(BaseModel):
    """An ``event: progress`` of GET /jobs/{id}/events: the part of the job that changes while it
    runs. The rest, the ~3 KB spec above all, is in the stream's first event (``event: job``,
    the whole job) and not sent again. eta_s, error and verdict are left out while null."""

    id: str = Field(description=_job_field("id"))
    state: JobState = Field(description=_job_field("state"))
    stage: str | None = Field(description=_job_field("stage"))
    progress: float = Field(ge=0, le=1, description=_job_field("progress"))
    eta_s: int | None = Field(None, description=_job_field("eta_s"))
    cancel_requested: bool = Field(description=_job_field("cancel_requested"))
    error: ErrorOut | None = Field(None, description=_job_field("error"))
    verdict: VerdictSummary | None = Field(
        None, description="Once the job succeeded: " + _job_field("verdict")
    )

    @classmethod
    def of(cls, job: JobOut) -> JobProgress:
        """The progress event of ``job`` (its verdict is null until it succeeded)."""
        return cls.model_validate(job.model_dump(include=set(cls.model_fields)))

    def event_data(self) -> str:
        """The event's JSON, without eta_s, error and verdict while they are null."""
        unset = {name for name in ("eta_s", "error", "verdict") if getattr(self, name) is None}
        return self.model_dump_json(exclude=unset)


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
    job_ids: list[str] | None = Field(
        None, description="conflict (DELETE /datasets/{id}): the queued or running jobs reading it."
    )
    state: str | None = Field(None, description="job_not_done: the job's current state.")
    checks: dict[str, bool] | None = Field(
        None, description="not_ready: which dependency (database, broker) is reachable."
    )
