"""Job routes: submit, read, list, cancel, delete, artifacts, server-sent events."""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path as FilePath
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.convertors import Convertor, register_url_convertor

from app import api_docs as docs
from app.db import Job, JobState
from app.deps import Services, current_owner, get_services
from app.errors import ConflictError, InvalidRequestError, JobNotDoneError, NotFoundError
from app.problem_docs import AUTH, responses
from app.schemas import ARTIFACT_NAMES, ARTIFACT_TYPES, JobList, JobOut, job_out
from app.store import is_terminal
from app.submit import submit
from app.uploads import receive_form, remove

# The events route is declared before /jobs/{id}/{artifact}, which would otherwise match it.
router = APIRouter()
# Deeper pages than this are refused (422) rather than sent to the database, whose integers
# they would overflow (a 500 before).
MAX_OFFSET = 10**9
LIST_PARAMETERS = ("state", "limit", "offset")


class _ArtifactName(Convertor[str]):
    """Matches only the artifact names, so /jobs/{id}/cancel with GET is a 405 (Allow: POST)
    and an unknown file a 404, instead of the download route refusing the name."""

    regex = "|".join(re.escape(name) for name in ARTIFACT_NAMES)

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("artifact_name", _ArtifactName())

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


def _job_or_404(services: Services, job_id: str, owner: str) -> Job:
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
    return job_out(_job_or_404(services, job_id, owner))


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
    job = _job_or_404(services, job_id, owner)
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
    job = _job_or_404(services, job_id, owner)
    if not is_terminal(job.state):
        services.store.request_cancel(job_id)
    services.store.delete(job_id)
    services.artifacts.delete_job(job_id)
    return Response(status_code=204)


@router.get(
    "/jobs/{job_id}/events",
    summary="Server-sent events of the job's state and progress until it ends",
    description="`event: job` with the job JSON whenever state, stage or progress changes; "
    "`event: end` once it has ended; a comment every 15 s keeps proxies from closing the stream.",
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
    tags=["jobs"],
)
async def job_events(
    request: Request,
    job_id: JobId,
    owner: str = Depends(current_owner),
    services: Services = Depends(get_services),
) -> StreamingResponse:
    await run_in_threadpool(_job_or_404, services, job_id, owner)
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
            last, last_sent = key, time.monotonic()
            yield f"event: job\ndata: {json.dumps(job_out(job).model_dump(mode='json'))}\n\n"
        if is_terminal(job.state):
            yield f"event: end\ndata: {json.dumps({'state': str(job.state)})}\n\n"
            return
        if time.monotonic() - last_sent > 15:
            last_sent = time.monotonic()
            yield ": keep-alive\n\n"
        if await request.is_disconnected():
            return
        await asyncio.sleep(services.settings.events_poll_s)


@router.get(
    "/jobs/{job_id}/{artifact:artifact_name}",
    summary="Download an artifact (model.onnx, report.json, report.html)",
    description="Streamed, with `ETag` = the file's sha256 (send `If-None-Match` to get 304). "
    "409 until the job has succeeded.",
    response_class=Response,
    responses=docs.DOWNLOAD_RESPONSES,
    tags=["artifacts"],
)
def get_artifact(
    job_id: JobId,
    artifact: Annotated[
        Literal["model.onnx", "report.json", "report.html"],
        Path(description="Which file: model.onnx, report.json or report.html."),
    ],
    if_none_match: Annotated[
        str | None, Header(description="ETags of copies you hold; a match answers 304.")
    ] = None,
    owner: str = Depends(current_owner),
    services: Services = Depends(get_services),
) -> Response:
    job = _job_or_404(services, job_id, owner)
    sha256 = (job.artifacts or {}).get(artifact)
    if job.state != JobState.succeeded or not sha256:
        detail = f"job {job_id} is {job.state}; {artifact} exists once it has succeeded"
        hint = "wait for state 'succeeded' (GET /jobs/{id} or /jobs/{id}/events)"
        if job.state == JobState.failed:
            hint = f"the job failed ({job.error_code}: {job.error_message}); fix and resubmit"
        elif job.state == JobState.cancelled:
            hint = "the job was cancelled and will never have artifacts: submit it again"
        elif job.state == JobState.expired:
            hint = "the job's files were deleted after the retention period: submit it again"
        raise JobNotDoneError(detail, hint=hint, state=str(job.state))
    etag = f'"{sha256}"'
    if if_none_match and etag in [t.strip() for t in if_none_match.split(",")]:
        return Response(status_code=304, headers={"ETag": etag})
    headers = {"ETag": etag, "Cache-Control": "private, max-age=0, must-revalidate"}
    media_type = ARTIFACT_TYPES[artifact]
    path = services.artifacts.local_path(job_id, artifact)
    if path is not None:
        return FileResponse(path, media_type=media_type, headers=headers, filename=artifact)
    if not services.artifacts.exists(job_id, artifact):
        raise NotFoundError(
            f"{artifact} of job {job_id} is missing from the artifact store",
            hint="the stored file was removed outside the service: resubmit the job, and tell "
            "the operators",
        )
    headers["Content-Disposition"] = f'attachment; filename="{artifact}"'
    return StreamingResponse(
        services.artifacts.iter_bytes(job_id, artifact), media_type=media_type, headers=headers
    )
