"""Registered datasets: a dataset uploaded once (POST /datasets), checked completely then, stored
in the artifact store, and named by jobs as ``dataset:<id>`` or ``dataset:sha256:<hex>``.

The upload goes through the same streaming form parser and the same checks as a dataset sent
with a job (app/web/uploads.py: arrays, labels, pixel values, archive layout, size bounds); a
refused upload leaves no row and no file.
"""

from __future__ import annotations

import json
import math
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from app.infra.dataset_store import DatasetExists, DatasetStore
from app.infra.db import Dataset, new_job_id
from app.web.deps import Services
from app.web.errors import InvalidRequestError
from app.web.uploads import FormShape, ParsedForm, check_dataset_upload
from core.contract.fetched_refs import REGISTERED_PREFIX
from core.errors import DatasetError

DATASET_FORM = FormShape(
    "POST /datasets",
    ("dataset",),
    ("name", "input_range"),
    "send the parts 'dataset' (file), optional 'name' (text) and 'input_range' (JSON, e.g. [0, 1])",
    "send the dataset as a file part named 'dataset' (curl -F dataset=@data.npz)",
)
DEFAULT_INPUT_RANGE = (0.0, 1.0)


class DatasetOut(BaseModel):
    """A registered dataset."""

    id: str = Field(description="The dataset's id (32 hex digits).")
    reference: str = Field(
        description="What a job's config names as its dataset: dataset:<id>.",
    )
    name: str = Field(description="The name given at upload (else the file's name).")
    sha256: str = Field(
        description="sha256 of the file; jobs may also name it dataset:sha256:<hex>."
    )
    size_bytes: int = Field(description="Size of the file in bytes.")
    format: str = Field(description="npz, zip, tar or tar.gz, as found by the upload check.")
    created_at: datetime = Field(description="When it was uploaded (UTC).")


class DatasetList(BaseModel):
    """One page of the caller's registered datasets, newest first."""

    items: list[DatasetOut] = Field(description="The datasets of this page.")
    total: int = Field(description="The caller's datasets, all pages together.")
    limit: int = Field(description="Page size asked for (1..200).")
    offset: int = Field(description="How many datasets come before this page.")
    next: str | None = Field(description="URL of the next page, or null on the last one.")


def dataset_out(dataset: Dataset) -> DatasetOut:
    return DatasetOut(
        id=dataset.id,
        reference=f"{REGISTERED_PREFIX}{dataset.id}",
        name=dataset.name,
        sha256=dataset.sha256,
        size_bytes=dataset.size_bytes,
        format=dataset.file_name.removeprefix("dataset."),
        created_at=dataset.created_at,
    )


def datasets_of(services: Services) -> DatasetStore:
    return DatasetStore(services.store.engine)


def register(services: Services, owner: str, form: ParsedForm) -> tuple[Dataset, bool]:
    """Check and store an uploaded dataset. Returns (dataset, created): the owner's earlier
    dataset, uncreated, when they registered the same file before."""
    upload = form.files.get("dataset")
    if upload is None:
        raise DatasetError(
            "the request has no 'dataset' file part",
            hint="send the dataset as a file part named 'dataset' (curl -F dataset=@data.npz)",
        )
    input_range = _input_range(form.fields.get("input_range"))
    if upload.size == 0:
        raise DatasetError(
            "the dataset file is empty",
            hint="send an .npz (x_train, y_train, x_test, y_test) or a zip/tar of image folders",
        )
    file_name, _ = check_dataset_upload(upload.path, input_range)
    name = (form.fields.get("name") or upload.filename or file_name).strip()[:255] or file_name
    store = datasets_of(services)
    existing = store.find_by_sha256(owner, upload.sha256)
    if existing is not None:
        return existing, False
    dataset_id = new_job_id()
    try:
        services.artifacts.put(dataset_id, file_name, upload.path, move=True)
        dataset = store.create(
            Dataset(
                id=dataset_id,
                owner=owner,
                name=name,
                sha256=upload.sha256,
                size_bytes=upload.size,
                file_name=file_name,
            )
        )
    except DatasetExists as race:  # the same file, registered by a concurrent request
        services.artifacts.delete_job(dataset_id)
        return race.dataset, False
    except BaseException:
        services.artifacts.delete_job(dataset_id)
        raise
    return dataset, True


def _input_range(text: str | None) -> tuple[float, float]:
    """The 'input_range' part: the range float pixels are checked against (as a job's
    input_range); uint8 images fit any."""
    if text is None or not text.strip():
        return DEFAULT_INPUT_RANGE
    try:
        value: Any = json.loads(text)
    except json.JSONDecodeError:
        value = None
    if (
        isinstance(value, list)
        and len(value) == 2
        and all(isinstance(v, int | float) and math.isfinite(v) for v in value)
        and value[0] < value[1]
    ):
        return float(value[0]), float(value[1])
    message = f"input_range must be a JSON list [low, high] with low < high, got {text[:80]!r}"
    raise InvalidRequestError(
        f"The request is invalid: form.input_range: {message}",
        hint="send e.g. input_range=[0, 1] (the range of the models' inputs), or leave it out "
        "for [0, 1]",
        errors=[{"field": "form.input_range", "message": message, "type": "input_range"}],
    )
