"""Registered datasets: upload once, list, read, delete. Jobs name them ``dataset:<id>``."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path as FilePath
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from app.infra.db import Dataset, is_job_id
from app.web.api_docs import json_content
from app.web.datasets import (
    DATASET_FORM,
    DatasetList,
    DatasetOut,
    dataset_out,
    datasets_of,
    register,
)
from app.web.deps import OwnerDep, Services, ServicesDep
from app.web.errors import ConflictError, NotFoundError
from app.web.problem_docs import AUTH, responses
from app.web.problem_examples import EXAMPLE_DATASET_ID
from app.web.routes.jobs import MAX_OFFSET
from app.web.uploads import receive_form, remove

router = APIRouter(prefix="/datasets", tags=["datasets"])

DatasetId = Annotated[
    str,
    Path(
        description="The dataset's id, as POST /datasets answered it.",
        examples=[EXAMPLE_DATASET_ID],
    ),
]
_EXAMPLE = dataset_out(
    Dataset(
        id=EXAMPLE_DATASET_ID,
        owner="alice",
        name="cifar10-subset.npz",
        sha256="5d41402abc4b2a76b9719d911017c592ae4f3c2d6e7b8a9c0d1e2f3a4b5c6d7e",
        size_bytes=31_457_280,
        file_name="dataset.npz",
        created_at=datetime(2026, 12, 3, 9, 30, 0, tzinfo=UTC),
    )
).model_dump(mode="json")
_PAGE = DatasetList(
    items=[DatasetOut.model_validate(_EXAMPLE)], total=1, limit=20, offset=0, next=None
).model_dump(mode="json")
_UPLOAD_FORM = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["dataset"],
                    "properties": {
                        "dataset": {
                            "type": "string",
                            "format": "binary",
                            "description": "An .npz (x and y, split by a job's test_fraction, "
                            "or x_train, y_train, x_test, y_test) or a zip or tar(.gz) of "
                            "<class>/ image folders, optionally under train/ and test/.",
                        },
                        "name": {
                            "type": "string",
                            "description": "A name to recognise it by (default: the file's).",
                        },
                        "input_range": {
                            "type": "string",
                            "description": "JSON [low, high]: float pixels must lie inside it "
                            "(default [0, 1]; uint8 images fit any).",
                            "example": "[0, 1]",
                        },
                    },
                }
            }
        },
    }
}


def dataset_or_404(services: Services, dataset_id: str, owner: str) -> Dataset:
    dataset = datasets_of(services).get(dataset_id, owner) if is_job_id(dataset_id) else None
    if dataset is None:
        raise NotFoundError(
            f"no dataset {dataset_id!r}",
            hint="check the id (GET /datasets lists yours); datasets of other API keys are not "
            "visible",
        )
    return dataset


@router.post(
    "",
    status_code=201,
    response_model=DatasetOut,
    summary="Register a dataset: upload it once, name it in jobs",
    description="The upload is streamed to disk, refused past the size limit and checked as a "
    "dataset sent with a job is (arrays, labels, pixel values, archive layout), then stored. "
    "Jobs name it `dataset:<id>` (or `dataset:sha256:<hex>`) in their config instead of "
    "uploading it again. Uploading a file you registered before answers that dataset (200).",
    openapi_extra=_UPLOAD_FORM,
    responses=responses(
        {
            201: {
                "description": "Registered; `Location` is its URL.",
                "headers": {
                    "Location": {
                        "description": "URL path of the dataset.",
                        "schema": {"type": "string"},
                    }
                },
                "content": json_content(registered=("A new dataset", _EXAMPLE)),
            },
            200: {
                "model": DatasetOut,
                "description": "The same file was registered before by this API key: that dataset.",
                "content": json_content(registered=("The earlier dataset", _EXAMPLE)),
            },
        },
        *AUTH,
        "dataset_not_multipart",
        "dataset_too_large",
        "no_dataset_part",
        "bad_input_range",
        "npz_missing_arrays",
    ),
)
async def post_dataset(request: Request, owner: OwnerDep, services: ServicesDep) -> JSONResponse:
    folder = FilePath(services.settings.upload_dir) / f"incoming-{uuid.uuid4().hex}"
    try:
        form = await receive_form(request, folder, services.settings.max_upload_bytes, DATASET_FORM)
        dataset, created = await run_in_threadpool(register, services, owner, form)
    finally:
        await run_in_threadpool(remove, folder)
    return JSONResponse(
        dataset_out(dataset).model_dump(mode="json"),
        status_code=201 if created else 200,
        headers={"Location": f"/datasets/{dataset.id}"},
    )


@router.get(
    "",
    response_model=DatasetList,
    summary="List your registered datasets, newest first",
    description="Only the caller's datasets. Page with `limit` and `offset`; `next` is the URL "
    "of the following page.",
    responses=responses(
        {
            200: {
                "description": "One page of datasets.",
                "content": json_content(page=("One dataset", _PAGE)),
            }
        },
        *AUTH,
        "bad_page",
    ),
)
def list_datasets(
    owner: OwnerDep,
    services: ServicesDep,
    limit: Annotated[int, Query(ge=1, le=200, description="Datasets per page, 1..200.")] = 20,
    offset: Annotated[
        int, Query(ge=0, le=MAX_OFFSET, description="Datasets to skip, 0..1000000000.")
    ] = 0,
) -> DatasetList:
    items, total = datasets_of(services).list_datasets(owner, limit=limit, offset=offset)
    following = f"/datasets?limit={limit}&offset={offset + limit}"
    return DatasetList(
        items=[dataset_out(d) for d in items],
        total=total,
        limit=limit,
        offset=offset,
        next=following if offset + len(items) < total else None,
    )


@router.get(
    "/{dataset_id}",
    response_model=DatasetOut,
    summary="A registered dataset: its reference, sha256, size and format",
    description="`reference` is what a job's config names as its dataset.",
    responses=responses(
        {
            200: {
                "description": "The dataset.",
                "content": json_content(dataset=("A dataset", _EXAMPLE)),
            }
        },
        *AUTH,
        "unknown_dataset",
    ),
)
def get_dataset(dataset_id: DatasetId, owner: OwnerDep, services: ServicesDep) -> DatasetOut:
    return dataset_out(dataset_or_404(services, dataset_id, owner))


@router.delete(
    "/{dataset_id}",
    status_code=204,
    summary="Delete a registered dataset and its file",
    description="Refused (409) while a queued or running job reads it; ended jobs keep their "
    "reports.",
    responses=responses(
        {204: {"description": "Deleted: the dataset's row and file are gone."}},
        *AUTH,
        "unknown_dataset",
        "dataset_in_use",
    ),
)
def delete_dataset(dataset_id: DatasetId, owner: OwnerDep, services: ServicesDep) -> Response:
    dataset = dataset_or_404(services, dataset_id, owner)
    outcome = datasets_of(services).delete_unused(dataset.id, owner)
    if outcome.jobs_reading:
        raise ConflictError(
            f"dataset {dataset.id} is read by queued or running jobs: "
            f"{', '.join(outcome.jobs_reading)}",
            hint="wait for those jobs to end, or cancel them (POST /jobs/{id}/cancel), then "
            "delete the dataset",
            job_ids=list(outcome.jobs_reading),
        )
    services.artifacts.delete_job(dataset.id)
    return Response(status_code=204)
