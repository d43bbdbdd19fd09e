"""Streaming multipart uploads to disk, with a size limit, and the cheap checks of an upload.

Starlette's ``request.form()`` spools every file whole before the route sees it; here the body is
parsed chunk by chunk, written to disk as it arrives and refused (413) the moment a file passes
the limit, so an oversized upload costs neither memory nor disk.
"""

from __future__ import annotations

import hashlib
import shutil
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, cast

import anyio
from fastapi import Request
from python_multipart.exceptions import ParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from app.web.errors import BadRequestError, PayloadTooLargeError
from core.datasets.archives import check_archive_listing, is_tar
from core.datasets.layout import DATASET_FORMS
from core.datasets.npz_upload import check_npz_upload
from core.errors import DatasetError

MAX_TEXT_BYTES = 1024 * 1024


@dataclass(frozen=True)
class FormShape:
    """The parts one endpoint's multipart form takes, and how to say so when a part is wrong."""

    endpoint: str
    file_fields: tuple[str, ...]
    text_fields: tuple[str, ...]
    parts_hint: str  # for an unknown part
    first_file_hint: str  # for a body that is no multipart form


JOB_FORM = FormShape(
    "POST /harden",
    ("model", "dataset"),
    ("config",),
    "send the parts 'model' (file), optional 'dataset' (file) and 'config' (JSON text)",
    "send the model as a file part named 'model' (curl -F model=@model.pt)",
)


@dataclass
class SavedFile:
    """One uploaded file, on disk, with its size and sha256."""

    field: str
    filename: str
    path: Path
    size: int = 0
    sha256: str = ""


@dataclass
class ParsedForm:
    files: dict[str, SavedFile] = field(default_factory=dict)
    fields: dict[str, str] = field(default_factory=dict)


class _Collector:
    """python-multipart callbacks writing file parts to ``folder``."""

    def __init__(self, folder: Path, max_bytes: int, shape: FormShape) -> None:
        self.folder = folder
        self.shape = shape
        self.max_bytes = max_bytes
        self.form = ParsedForm()
        self._header_field = b""
        self._header_value = b""
        self._headers: dict[bytes, bytes] = {}
        self._name = ""
        self._file: SavedFile | None = None
        self._handle: IO[bytes] | None = None
        self._digest: Any = None
        self._text = bytearray()
        self.open_part = False

    def callbacks(self) -> dict[str, Any]:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": lambda d, s, e: self._add("_header_field", d[s:e]),
            "on_header_value": lambda d, s, e: self._add("_header_value", d[s:e]),
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
        }

    def _add(self, attribute: str, data: bytes) -> None:
        setattr(self, attribute, getattr(self, attribute) + data)

    def _part_begin(self) -> None:
        self.open_part = True
        self._headers = {}
        self._text = bytearray()
        self._file = None

    def _header_end(self) -> None:
        self._headers[self._header_field.lower()] = self._header_value
        self._header_field = self._header_value = b""

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        self._name = options.get(b"name", b"").decode("utf-8", "replace")
        filename = options.get(b"filename")
        if self._name in self.shape.file_fields:
            if self._name in self.form.files:
                raise BadRequestError(
                    f"the form has two '{self._name}' parts", hint="send each file once"
                )
            path = self.folder / self._name
            self._file = SavedFile(self._name, (filename or b"").decode("utf-8", "replace"), path)
            self._handle = path.open("wb")
            self._digest = hashlib.sha256()
        elif self._name not in self.shape.text_fields:
            raise BadRequestError(f"unknown form field {self._name!r}", hint=self.shape.parts_hint)

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        if self._file is not None and self._handle is not None:
            self._file.size += len(chunk)
            if self._file.size > self.max_bytes:
                raise PayloadTooLargeError(
                    f"the '{self._name}' upload is larger than the limit of {self.max_bytes} bytes",
                    hint="send a smaller file, or ask the operator to raise "
                    "HARDEN_MAX_UPLOAD_BYTES",
                    limit_bytes=self.max_bytes,
                )
            self._handle.write(chunk)
            self._digest.update(chunk)
        else:
            self._text += chunk
            if len(self._text) > MAX_TEXT_BYTES:
                raise PayloadTooLargeError(
                    f"the '{self._name}' field is larger than {MAX_TEXT_BYTES} bytes",
                    hint="the config is a small JSON document",
                )

    def _part_end(self) -> None:
        self.open_part = False
        if self._file is not None and self._handle is not None:
            self._handle.close()
            self._handle = None
            self._file.sha256 = self._digest.hexdigest()
            self.form.files[self._name] = self._file
            self._file = None
        elif self._name:
            self.form.fields[self._name] = self._text.decode("utf-8", "replace")

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()


async def receive_form(
    request: Request, folder: Path, max_bytes: int, shape: FormShape = JOB_FORM
) -> ParsedForm:
    """Parse the multipart body into ``folder`` (created; the caller removes it on error); only
    the parts ``shape`` names are taken."""
    content_type, options = parse_options_header(request.headers.get("content-type", ""))
    boundary = options.get(b"boundary")
    if content_type != b"multipart/form-data" or not boundary:
        raise BadRequestError(
            f"{shape.endpoint} takes multipart/form-data", hint=shape.first_file_hint
        )
    declared = request.headers.get("content-length")
    # The files plus the text parts can never legitimately exceed this: refuse without reading.
    most = len(shape.file_fields) * max_bytes + (len(shape.text_fields) + 1) * MAX_TEXT_BYTES
    if declared and declared.isdigit() and int(declared) > most:
        raise PayloadTooLargeError(
            f"the request body ({declared} bytes) is larger than the upload limit of "
            f"{max_bytes} bytes per file",
            hint="send a smaller file, or ask the operator to raise HARDEN_MAX_UPLOAD_BYTES",
            limit_bytes=max_bytes,
        )
    folder.mkdir(parents=True, exist_ok=True)
    collector = _Collector(folder, max_bytes, shape)
    parser = MultipartParser(boundary, cast(Any, collector.callbacks()))
    try:
        async for chunk in request.stream():
            # File writes happen in the callbacks: run them off the event loop.
            await anyio.to_thread.run_sync(parser.write, chunk)
        parser.finalize()
    except ParseError as exc:
        raise BadRequestError(
            f"the multipart body is malformed ({exc})",
            hint="let your HTTP client build the form (curl -F, httpx files=...)",
        ) from exc
    finally:
        collector.close()
    if collector.open_part:
        raise BadRequestError(
            "the multipart body ended in the middle of a part",
            hint="the upload was cut off: send it again",
        )
    return collector.form


def remove(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)


def check_dataset_upload(
    path: Path, input_range: tuple[float, float]
) -> tuple[str, tuple[tuple[int, int, int], int] | None]:
    """Check an uploaded dataset as far as the file alone allows (no torch, no model); return
    the name to store it under and, for an .npz, its images' (C, H, W) and number of classes
    (what an ONNX upload's interface is checked against at submit).

    An .npz is checked as the worker will check it (core.datasets.npz_upload: arrays, headers
    against their data, labels, pixel values against ``input_range``), streaming its images; an
    archive's listing is checked (core.datasets.archives: entries outside it, links, devices,
    size, truncation; every decompressed byte counted, so a bomb stops at its expansion bound)
    and its images' sizes from their headers (core.datasets.pixels), none decoded. Only what
    needs the model (its input shape, its number of classes) is left to the worker, which checks
    it before training.
    """
    with path.open("rb") as handle:
        head = handle.read(4)
    if head.startswith(b"PK"):
        try:
            with zipfile.ZipFile(path) as archive:
                names = [n for n in archive.namelist() if not n.endswith("/")]
                is_npz = bool(names) and all(n.endswith(".npy") for n in names)
            # The listing first: a zip bomb is refused before anything is inflated.
            check_archive_listing(path, image_folder=not is_npz)
            if is_npz:
                with zipfile.ZipFile(path) as archive:
                    shape = check_npz_upload(archive, input_range)
                return "dataset.npz", shape
        except zipfile.BadZipFile as exc:
            raise DatasetError(
                f"the dataset upload is a damaged zip file ({exc})",
                hint="re-create the .npz or .zip and upload it again",
            ) from exc
        return "dataset.zip", None
    if not is_tar(path):
        raise DatasetError(
            "the dataset upload is neither an .npz nor a zip/tar archive",
            hint=f"send {DATASET_FORMS}",
        )
    check_archive_listing(path)
    return ("dataset.tar.gz" if head.startswith(b"\x1f\x8b") else "dataset.tar"), None
