"""A job's dataset reference, parsed in one place (torch-free): a builtin, the file sent with the
job, a registered or remote dataset the worker fetches, or a local path (``harden run`` only).

The spec validates references with :func:`parse_dataset_ref`, the API refuses what the service
does not read, the run plan decides between the file and the name, and the loader opens what the
parsed reference says; each says "'upload' but no file" with :func:`missing_upload`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from core.contract.fetched_refs import (
    FORMS,
    RegisteredRef,
    RemoteRef,
    is_fetched_reference,
    parse_fetched_reference,
)
from core.contract.library_names import dataset_name_refusal
from core.errors import DatasetError
from core.names import BUILTIN_DATASETS

UPLOAD = "upload"


@dataclass(frozen=True)
class BuiltinRef:
    """``builtin:mnist`` or ``builtin:digits``."""

    name: str


@dataclass(frozen=True)
class UploadRef:
    """``upload``: the dataset file sent with the job."""


@dataclass(frozen=True)
class LocalRef:
    """A local file or folder (``harden run``), from a path or a ``file:///`` URI. ``text`` is
    the reference as given: a missing ``mnist`` or ``hf:mnist`` is refused with the export fix
    (core.contract.library_names) where it is opened."""

    path: Path
    text: str


DatasetRef = BuiltinRef | UploadRef | RegisteredRef | RemoteRef | LocalRef


def parse_dataset_ref(ref: str) -> DatasetRef:
    """What ``ref`` names; DatasetError says what is malformed and the form to use."""
    if ref == UPLOAD:
        return UploadRef()
    if ref.startswith("builtin:"):
        if ref not in BUILTIN_DATASETS:
            raise DatasetError(
                f"unknown builtin dataset {ref!r}",
                hint=f"use one of {', '.join(BUILTIN_DATASETS)}",
                reference=ref,
            )
        return BuiltinRef(ref)
    if is_fetched_reference(ref):
        try:
            return parse_fetched_reference(ref)
        except ValueError as exc:
            raise DatasetError(str(exc), hint=f"use {FORMS}", reference=ref) from exc
    parsed = urlparse(ref)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise DatasetError(
                f"file URI {ref!r} names host {parsed.netloc!r}",
                hint="use file:///absolute/path (three slashes) for a local file",
                reference=ref,
            )
        return LocalRef(Path(unquote(parsed.path)), ref)
    # A single letter before ':' is a Windows drive, not a scheme; hf://... names a library's
    # dataset, refused with its export fix where paths are opened.
    if len(parsed.scheme) > 1 and "://" in ref and dataset_name_refusal(ref) is None:
        raise DatasetError(
            f"dataset URI scheme {parsed.scheme!r} of {ref!r} is not supported",
            hint=f"use {', '.join(BUILTIN_DATASETS)}, {FORMS}, or send the file with the job "
            "(harden run also reads a local path)",
            reference=ref,
        )
    return LocalRef(Path(ref), ref)


def missing_dataset() -> DatasetError:
    """The refusal of a job that names no dataset. There is no default: a model trained on
    anything but MNIST used to be hardened against builtin:mnist and fail in the worker."""
    return DatasetError(
        "the job names no dataset",
        hint="name one in config.dataset (harden submit/run --dataset): builtin:mnist (4,000 "
        "train / 1,000 test MNIST images) or builtin:digits; or send a file with the job (curl "
        "-F dataset=@data.npz; --dataset-file data.npz); or a registered dataset (harden "
        "datasets upload data.npz, then dataset:<id>)",
    )


def missing_upload() -> DatasetError:
    """The refusal of ``dataset: 'upload'`` when no dataset file came with the job."""
    return DatasetError(
        "the dataset is 'upload' but no dataset file was sent",
        hint="send the file with the job (curl -F dataset=@data.npz; harden submit "
        "--dataset-file data.npz), or name a dataset such as "
        f"{' or '.join(BUILTIN_DATASETS)}",
    )
