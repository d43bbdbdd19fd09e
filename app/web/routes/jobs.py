"""Job routes: list, read, follow (server-sent events), cancel, delete. Submitting is in
app/web/routes/harden.py, the downloads in app/web/routes/outputs.py."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from app.infra.db import Job, JobState, is_job_id
from app.infra.job_resource import JobOut, job_out
from app.infra.store import is_terminal
from app.web import api_docs as docs
from app.web.deps import OwnerDep, Services, ServicesDep
from app.web.errors import ConflictError, InvalidRequestError, NotFoundError
from app.web.problem_docs import AUTH, responses
from app.web.schemas import JobList, JobProgress

router = APIRouter(prefix="/jobs", tags=["jobs"])
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
    job = services.store.get(job_id, owner) if is_job_id(job_id) else None
    if job is None:
        raise NotFoundError(
            f"no job {job_id!r}",
            hint="check the id (GET /jobs lists yours); jobs of other API keys are not visible",
        )
    return job


@router.get(
    "",
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
)
def list_jobs(
    request: Request,
    owner: OwnerDep,
    services: ServicesDep,
    state: Annotated[JobState | None, Query(description="Only jobs in this state.")] = None,
    limit: Annotated[int, Query(ge=1, le=200, description="Jobs per page, 1..200.")] = 20,
    offset: Annotated[
        int, Query(ge=0, le=MAX_OFFSET, description="Jobs to skip (newest first), 0..1000000000.")
    ] = 0,
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
    "/{job_id}",
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
)
def get_job(job_id: JobId, owner: OwnerDep, services: ServicesDep) -> JobOut:
    return job_out(job_or_404(services, job_id, owner))


@router.post(
    "/{job_id}/cancel",
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
)
def cancel_job(job_id: JobId, owner: OwnerDep, services: ServicesDep) -> JobOut:
    job = job_or_404(services, job_id, owner)
    if is_terminal(job.state) and job.state != JobState.cancelled:
        raise ConflictError(
            f"job {job_id} already {job.state}", hint="only queued or running jobs can be cancelled"
        )
    updated = services.store.request_cancel(job_id) or job
    return job_out(updated)


@router.delete(
    "/{job_id}",
    status_code=204,
    summary="Delete a job and its artifacts",
    description="A running job is cancelled first.",
    responses=responses(
        {204: {"description": "Deleted: the job's row and every file of it are gone."}},
        *docs.JOB_404,
    ),
)
def delete_job(job_id: JobId, owner: OwnerDep, services: ServicesDep) -> Response:
    job = job_or_404(services, job_id, owner)
    if not is_terminal(job.state):
        services.store.request_cancel(job_id)
    services.store.delete(job_id)
    services.artifacts.delete_job(job_id)
    return Response(status_code=204)


@router.get(
    "/{job_id}/events",
    summary="Server-sent events of the job's state and progress until it ends",
    description="`event: job` first, with the whole job as GET /jobs/{job_id} answers it; then "
    "`event: progress` whenever state, stage or progress changes, with only what changes "
    "(JobProgress: state, stage, progress, eta_s, cancel_requested, error, and the verdict once "
    "it succeeded; not the spec again); `event: end` once it has ended; a comment every 15 s "
    "keeps proxies from closing the stream.",
    response_class=StreamingResponse,
    responses=responses(
        {
            200: {
                "description": "An event stream (text/event-stream) that ends after `event: end`.",
                "content": {
                    "text/event-stream": {
                        "schema": docs.SERVER_SENT_EVENT,
                        "example": docs.event_stream_example(),
                    }
                },
            }
        },
        *docs.JOB_404,
    ),
)
async def job_events(
    request: Request,
    job_id: JobId,
    owner: OwnerDep,
    services: ServicesDep,
) -> StreamingResponse:
    await run_in_threadpool(job_or_404, services, job_id, owner)
    return StreamingResponse(
        _event_stream(request, services, job_id, owner),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _event_stream(
    request: Request, services: Services, job_id: str, owner: str
) -> AsyncIterator[str]:
    last: tuple[Any, ...] | None = None
    last_sent = time.monotonic()
    while True:
        job = await run_in_threadpool(services.store.get, job_id, owner)
        if job is None:
            yield 'event: end\ndata: {"state": "deleted"}\n\n'
            return
        key = (job.state, job.stage, round(job.progress, 3), job.cancel_requested)
        if key != last:
            resource = job_out(job)
            if last is None:  # the whole job once, then only what changes (not the spec again)
                yield f"event: job\ndata: {resource.model_dump_json()}\n\n"
            else:
                yield f"event: progress\ndata: {JobProgress.of(resource).event_data()}\n\n"
            last, last_sent = key, time.monotonic()
        if is_terminal(job.state):
            yield f"event: end\ndata: {json.dumps({'state': str(job.state)})}\n\n"
            return
        if time.monotonic() - last_sent > 15:
            last_sent = time.monotonic()
            yield ": keep-alive\n\n"
        if await request.is_disconnected():
            return
        await asyncio.sleep(services.settings.events_poll_s)
