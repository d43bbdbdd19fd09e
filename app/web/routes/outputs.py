"""A job's outputs: its artifacts (model.onnx, report.json, report.html) and its server-sent
progress events."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Path, Request, Response
from fastapi.responses import FileResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.convertors import Convertor, register_url_convertor

from app.infra.db import JobState
from app.infra.job_resource import ARTIFACT_TYPES, job_out
from app.infra.store import is_terminal
from app.web import api_docs as docs
from app.web.deps import Services, current_owner, get_services
from app.web.errors import JobNotDoneError, NotFoundError
from app.web.problem_docs import responses
from app.web.routes.jobs import JobId, job_or_404
from core.names import ARTIFACT_NAMES

router = APIRouter()


class _ArtifactName(Convertor[str]):
    """Matches only the artifact names, so /jobs/{id}/cancel with GET is a 405 (Allow: POST)
    and an unknown file a 404, instead of the download route refusing the name."""

    regex = "|".join(re.escape(name) for name in ARTIFACT_NAMES)

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("artifact_name", _ArtifactName())


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
    job = job_or_404(services, job_id, owner)
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
