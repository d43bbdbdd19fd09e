"""Job routes: submit, read, list, cancel, delete (the outputs are in app/web/routes/outputs.py)."""

from __future__ import annotations

import uuid
from pathlib import Path as FilePath
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from app.infra.db import Job, JobState
from app.infra.job_resource import JobOut, job_out
from app.infra.store import is_terminal
from app.web import api_docs as docs
from app.web.deps import Services, current_owner, get_services
from app.web.errors import ConflictError, InvalidRequestError, NotFoundError
from app.web.problem_docs import AUTH, responses
from app.web.schemas import JobList
from app.web.submit import submit
from app.web.uploads import receive_form, remove

router = APIRouter()
# Deeper pages than this are refused (422) rather than sent to the database, whose integers
# they would overflow (a 500 before).
MAX_OFFSET = 10**9
LIST_PARAMETERS = ("state", "limit", "offset")


JobId = Annotated[
    str,
    Path(description="The job's id, as POST /harden answered it.", examples=[docs.EXAMPLE_JOB_ID]),
]


def _refuse_unknown_parameters(request: Request, known: tuple[str, ...]) -> None:
    # A client paging with ?page=2 (or a typo such as ?stat=failed) would otherwise get the
    # first, unfiltered page again, silently, and could loop over it forever.
    unknown = sorted(set(request.query_params) - set(known))
    if unknown:
        raise InvalidRequestError(
            f"unknown query parameter(s) {', '.join(unknown)}; {request.url.path} takes "
            f"{', '.join(known)}",
            hint="page with limit (jobs per page, 1..200) and offset (jobs to skip), filter "
            "with state, e.g. /jobs?state=succeeded&limit=20&offset=40; follow 'next' for the "
            "following page",
            errors=[
                {"field": f"query.{name}", "message": "unknown query parameter", "type": "extra"}
                for name in unknown
            ],
        )


def job_or_404(services: Services, job_id: str, owner: str) -> Job:
    job = services.store.get(job_id, owner)
    if job is None:
        raise NotFoundError(
            f"no job {job_id!r}",
            hint="check the id (GET /jobs lists yours); jobs of other API keys are not visible",
        )
    return job


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
    tags=["jobs"],
)
async def post_harden(
    request: Request,
    owner: str = Depends(current_owner),
    services: Services = Depends(get_services),
    idempotency_key: Annotated[
        str | None, Header(max_length=255, description="Retry-safe key chosen by the client.")
    ] = None,
) -> JSONResponse:
    folder = FilePath(services.settings.upload_dir) / f"incoming-{uuid.uuid4().hex}"
    try:
        form = await receive_form(request, folder, services.settings.max_upload_bytes)
        job, created = await run_in_threadpool(submit, services, owner, form, idempotency_key)
    finally:
        await run_in_threadpool(remove, folder)
    return JSONResponse(
        job_out(job).model_dump(mode="json"),
        status_code=202 if created else 200,
        headers={"Location": f"/jobs/{job.id}"},
    )


@router.get(
    "/jobs",
    response_model=JobList,
    summary="List your jobs, newest first",
    description="Only the caller's jobs (all jobs belong to 'anonymous' in open mode). Page with "
    "`limit` and `offset`; `next` is the URL of the following page. Other query parameters "
    "(e.g. `page`) are refused (422).",
    responses=responses(
        {
            200: {
                "description": "One page of jobs.",
                "content": docs.json_content(page=("The first page of two jobs", docs.JOB_PAGE)),
            }
        },
        *AUTH,
        "bad_page",
    ),
    tags=["jobs"],
)
def list_jobs(
    request: Request,
    state: JobState | None = Query(None, description="Only jobs in this state."),
    limit: int = Query(20, ge=1, le=200, description="Jobs per page, 1..200."),
    offset: int = Query(
        0, ge=0, le=MAX_OFFSET, description="Jobs to skip (newest first), 0..1000000000."
    ),
    owner: str = Depends(current_owner),
    services: Services = Depends(get_services),
) -> JobList:
    _refuse_unknown_parameters(request, LIST_PARAMETERS)
    jobs, total = services.store.list_jobs(owner, state=state, limit=limit, offset=offset)
    following = None
    if offset + len(jobs) < total:
        query = f"limit={limit}&offset={offset + limit}" + (f"&state={state}" if state else "")
        following = f"/jobs?{query}"
    return JobList(
        items=[job_out(j) for j in jobs], total=total, limit=limit, offset=offset, next=following
    )


@router.get(
    "/jobs/{job_id}",
    response_model=JobOut,
    summary="A job's state, stage, progress, timings and error",
    description="Poll this (or follow /jobs/{job_id}/events) until `state` is succeeded, failed "
    "or cancelled. A failed job's `error` says why and how to fix the inputs.",
    responses=responses(
        {
            200: {
                "description": "The job.",
                "content": docs.json_content(
                    running=("Training the student", docs.RUNNING),
                    succeeded=("Done: the artifacts can be downloaded", docs.SUCCEEDED),
                    failed=("Failed: error says why", docs.FAILED),
                ),
            }
        },
        *docs.JOB_404,
    ),
    tags=["jobs"],
)
def get_job(
    job_id: JobId, owner: str = Depends(current_owner), services: Services = Depends(get_services)
) -> JobOut:
    return job_out(job_or_404(services, job_id, owner))


@router.post(
    "/jobs/{job_id}/cancel",
    response_model=JobOut,
    summary="Cancel a job",
    description="A queued job is cancelled at once; a running one stops within one training or "
    "attack step (state turns 'cancelled'). 409 when the job already succeeded or failed. "
    "Cancelling a cancelled job again answers it unchanged.",
    responses=responses(
        {
            200: {
                "description": "The job after the request: cancelled (it was queued) or running "
                "with `cancel_requested` (it stops within a step).",
                "content": docs.json_content(
                    cancelled=("A queued job, cancelled at once", docs.CANCELLED),
                    stopping=("A running job, asked to stop", docs.STOPPING),
                ),
            }
        },
        *docs.JOB_404,
        "job_already_ended",
    ),
    tags=["jobs"],
)
def cancel_job(
    job_id: JobId, owner: str = Depends(current_owner), services: Services = Depends(get_services)
) -> JobOut:
    job = job_or_404(services, job_id, owner)
    if is_terminal(job.state) and job.state != JobState.cancelled:
        raise ConflictError(
            f"job {job_id} already {job.state}", hint="only queued or running jobs can be cancelled"
        )
    updated = services.store.request_cancel(job_id) or job
    return job_out(updated)


@router.delete(
    "/jobs/{job_id}",
    status_code=204,
    summary="Delete a job and its artifacts",
    description="A running job is cancelled first.",
    responses=responses(
        {204: {"description": "Deleted: the job's row and every file of it are gone."}},
        *docs.JOB_404,
    ),
    tags=["jobs"],
)
def delete_job(
    job_id: JobId, owner: str = Depends(current_owner), services: Services = Depends(get_services)
) -> Response:
    job = job_or_404(services, job_id, owner)
    if not is_terminal(job.state):
        services.store.request_cancel(job_id)
    services.store.delete(job_id)
    services.artifacts.delete_job(job_id)
    return Response(status_code=204)
