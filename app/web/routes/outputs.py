"""A job's outputs: downloading its artifacts (model.onnx, report.json, report.html, report.sarif,
MODEL_CARD.md) and its model as a serving layout (Triton, KServe)."""

from __future__ import annotations

import re
import shutil
from typing import Annotated, Literal

from fastapi import APIRouter, Header, Path, Query, Response
from fastapi.responses import FileResponse, StreamingResponse
from starlette.background import BackgroundTask
from starlette.convertors import Convertor, register_url_convertor

from app.infra.db import Job, JobState
from app.infra.job_resource import ARTIFACT_TYPES
from app.web import api_docs as docs
from app.web.deps import OwnerDep, ServicesDep
from app.web.errors import JobNotDoneError, NotFoundError
from app.web.routes.jobs import JobId, job_or_404
from app.web.serving import serving_layout_zip
from core.deploy.serving_layout import DEFAULT_MAX_BATCH_SIZE, NAME_PATTERN, LayoutOptions
from core.names import ARTIFACT_NAMES, MODEL_ONNX

router = APIRouter(prefix="/jobs/{job_id}", tags=["artifacts"])

# The path parameter's type: a Literal, so the OpenAPI document lists the names inline (an Enum
# would add a schema component). tests/app/web/test_jobs.py checks it equals ARTIFACT_NAMES.
ArtifactName = Literal["model.onnx", "report.json", "report.html", "report.sarif", "MODEL_CARD.md"]


class _ArtifactName(Convertor[str]):
    """Matches only the artifact names, so /jobs/{id}/cancel with GET is a 405 (Allow: POST)
    and an unknown file a 404, instead of the download route refusing the name."""

    regex = "|".join(re.escape(name) for name in ARTIFACT_NAMES)

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("artifact_name", _ArtifactName())


def stored_sha256(job: Job, artifact: str) -> str:
    """The sha256 of a succeeded job's ``artifact``; 409 (job_not_done) before it succeeded,
    with a hint for the state it is in."""
    sha256 = (job.artifacts or {}).get(artifact)
    if job.state == JobState.succeeded and sha256:
        return str(sha256)
    detail = f"job {job.id} is {job.state}; {artifact} exists once it has succeeded"
    hint = "wait for state 'succeeded' (GET /jobs/{id} or /jobs/{id}/events)"
    if job.state == JobState.failed:
        hint = f"the job failed ({job.error_code}: {job.error_message}); fix and resubmit"
    elif job.state == JobState.cancelled:
        hint = "the job was cancelled and will never have artifacts: submit it again"
    elif job.state == JobState.expired:
        hint = "the job's files were deleted after the retention period: submit it again"
    raise JobNotDoneError(detail, hint=hint, state=str(job.state))


@router.get(
    "/{artifact:artifact_name}",
    summary="Download an artifact (model.onnx, report.json, report.html, report.sarif, "
    "MODEL_CARD.md)",
    description="Streamed, with `ETag` = the file's sha256 (send `If-None-Match` to get 304). "
    "409 until the job has succeeded.",
    response_class=Response,
    responses=docs.DOWNLOAD_RESPONSES,
)
def get_artifact(
    job_id: JobId,
    artifact: Annotated[
        ArtifactName,
        Path(
            description="Which file: model.onnx, report.json, report.html, report.sarif "
            "(the findings as SARIF 2.1.0) or MODEL_CARD.md (a Hugging Face model card)."
        ),
    ],
    owner: OwnerDep,
    services: ServicesDep,
    if_none_match: Annotated[
        str | None, Header(description="ETags of copies you hold; a match answers 304.")
    ] = None,
) -> Response:
    job = job_or_404(services, job_id, owner)
    sha256 = stored_sha256(job, artifact)
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


@router.get(
    "/layout.zip",
    summary="Download model.onnx as a serving layout (Triton or KServe model repository)",
    description="A zip of a model repository: `<name>/config.pbtxt` (Triton's model config, "
    "inputs, outputs, data types and dims read from the ONNX graph, a dynamic batch as "
    "`max_batch_size`) and `<name>/<version>/model.onnx` (the job's file, its metadata intact); "
    "`layout=kserve` adds `inference-service.yaml`, a KServe InferenceService serving the "
    "repository over the v2 protocol. 409 until the job has succeeded.",
    response_class=Response,
    responses=docs.LAYOUT_RESPONSES,
)
def get_layout(
    job_id: JobId,
    owner: OwnerDep,
    services: ServicesDep,
    layout: Annotated[
        Literal["triton", "kserve"], Query(description="triton, or kserve (adds the manifest).")
    ] = "triton",
    name: Annotated[
        str | None,
        Query(
            pattern=NAME_PATTERN,
            description="The model's name in the repository; default harden-<first 8 digits of "
            "the job id>.",
        ),
    ] = None,
    version: Annotated[int, Query(ge=1, le=2**31 - 1, description="The version folder.")] = 1,
    max_batch_size: Annotated[
        int, Query(ge=1, le=2**31 - 1, description="Triton's max_batch_size (dynamic batch).")
    ] = DEFAULT_MAX_BATCH_SIZE,
    storage_uri: Annotated[
        str | None,
        Query(max_length=1024, description="KServe: where the repository will be copied."),
    ] = None,
) -> Response:
    job = job_or_404(services, job_id, owner)
    stored_sha256(job, MODEL_ONNX)
    options = LayoutOptions(
        layout, name or f"harden-{job.id[:8]}", version, max_batch_size, storage_uri
    )
    archive = serving_layout_zip(services, job.id, options)
    filename = f"{job.id}-{layout}.zip"
    return FileResponse(
        archive,
        media_type="application/zip",
        filename=filename,
        background=BackgroundTask(shutil.rmtree, archive.parent, ignore_errors=True),
    )
