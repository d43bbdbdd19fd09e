"""Response models of the HTTP API beyond the job resource (app/infra/job_resource.py)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from app.infra.job_resource import JobOut


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
    job_ids: list[str] | None = Field(
        None, description="conflict (DELETE /datasets/{id}): the queued or running jobs reading it."
    )
    state: str | None = Field(None, description="job_not_done: the job's current state.")
    checks: dict[str, bool] | None = Field(
        None, description="not_ready: which dependency (database, broker) is reachable."
    )
