"""Submitting a job: POST /harden, and the schema of its config."""

from __future__ import annotations

import uuid
from pathlib import Path as FilePath
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from app.infra.job_resource import JobOut, job_out
from app.web import api_docs as docs
from app.web.deps import OwnerDep, ServicesDep
from app.web.submit import submit
from app.web.uploads import receive_form, remove
from core.contract.spec import spec_json_schema

router = APIRouter(tags=["jobs"])


@router.get(
    "/spec/schema",
    summary="JSON Schema of the job config",
    responses={
        200: {
            "description": "The JSON Schema (draft 2020-12) of HardenSpec.",
            "content": docs.json_content(
                abridged=("Two of its properties", docs.spec_schema_example())
            ),
        }
    },
)
def spec_schema() -> dict[str, Any]:
    """The schema of the `config` part of POST /harden: every field, its type, default and
    allowed range. No authentication."""
    return spec_json_schema()


@router.post(
    "/harden",
    status_code=202,
    response_model=JobOut,
    summary="Submit a model to harden",
    description="Uploads are streamed to disk and refused past the size limit. The model format "
    "is checked before the job is queued. With an `Idempotency-Key`, a retried POST returns the "
    "job of the first one (200) instead of creating another.",
    openapi_extra=docs.SUBMIT_FORM,
    responses=docs.SUBMIT_RESPONSES,
)
async def post_harden(
    request: Request,
    owner: OwnerDep,
    services: ServicesDep,
    idempotency_key: Annotated[
        str | None, Header(max_length=255, description="Retry-safe key chosen by the client.")
    ] = None,
) -> JSONResponse:
    folder = FilePath(services.settings.upload_dir) / f"incoming-{uuid.uuid4().hex}"
    try:
        form = await receive_form(request, folder, services.settings.max_upload_bytes)
        job, created, deprecations = await run_in_threadpool(
            submit, services, owner, form, idempotency_key
        )
    finally:
        await run_in_threadpool(remove, folder)
    headers = {"Location": f"/jobs/{job.id}"}
    if deprecations:
        # A config in a form kept for compatibility (e.g. distillation settings at the top
        # level): accepted, and said so (RFC 7234's miscellaneous persistent warning).
        headers["Warning"] = ", ".join(f'299 harden "{note}"' for note in deprecations)
    return JSONResponse(
        job_out(job).model_dump(mode="json"),
        status_code=202 if created else 200,
        headers=headers,
    )
