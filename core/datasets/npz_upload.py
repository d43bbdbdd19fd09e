"""An uploaded ``.npz`` dataset checked as the worker would check it, without loading its images:
torch-free, for the API, so a file the worker would refuse is refused at upload (422).

The labels are read whole (one integer per image); the images are streamed through in chunks,
so memory stays small whatever their size. Every ``.npy`` header is checked against the bytes
that follow it: a header whose shape lies is refused, not trusted.
"""

from __future__ import annotations

import math
import zipfile
from typing import IO

import numpy as np

from core.datasets.archives import DEFAULT_MAX_BYTES
from core.datasets.checks import (
    check_classes,
    check_labels,
    check_values,
    image_shape,
    stored_range,
)
from core.datasets.layout import MIN_IMAGES_PER_CLASS
from core.datasets.npz_file import (
    NPZ_HINT,
    UNSPLIT_ARRAYS,
    NpyHeader,
    check_declared_arrays,
    missing_arrays_error,
    npz_form,
    read_npy_header,
)
from core.errors import DatasetError

CHUNK_BYTES = 8 * 1024 * 1024
SAVE_HINT = NPZ_HINT


def check_npz_upload(
    archive: zipfile.ZipFile,
    input_range: tuple[float, float],
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> tuple[tuple[int, int, int], int]:
    """Refuse (:class:`DatasetError`) an .npz that ``core.datasets.references`` would refuse:
    missing arrays, object arrays, headers that lie about their data, empty splits, image
    layouts it cannot read or that differ between splits, labels that are not class indices
    (negative, fractional, past :data:`core.datasets.checks.MAX_CLASSES`, test classes never
    trained), NaN or infinite pixels and float pixels outside ``input_range``. Returns the
    images' (C, H, W) and the number of classes, as the worker will load them."""
    present = sorted(n.removesuffix(".npy") for n in archive.namelist() if not n.endswith("/"))
    form = npz_form(present)
    if form is None:
        raise missing_arrays_error(present)
    try:
        headers = {name: _read_header(archive, name) for name in form}
        check_declared_arrays(headers, form, max_bytes)
        pairs = (
            (("x", "y"),)
            if form == UNSPLIT_ARRAYS
            else (("x_train", "y_train"), ("x_test", "y_test"))
        )
        shapes = {}
        for x, _ in pairs:
            if not headers[x].shape or headers[x].shape[0] == 0:
                raise DatasetError(f"{x} is empty", hint="both splits need at least one image")
            shapes[x] = image_shape(x, headers[x].shape)
        if len(set(shapes.values())) > 1:
            raise DatasetError(
                f"x_train images have shape {shapes['x_train']} but x_test images "
                f"{shapes['x_test']}",
                hint="train and test images must have the same channels, height and width",
            )
        labels = {
            y: check_labels(y, _read_labels(archive, y, headers[y]), headers[x].shape[0])
            for x, y in pairs
        }
        if form == UNSPLIT_ARRAYS:
            _check_splittable(labels["y"])
            num_classes = int(labels["y"].max()) + 1
        else:
            num_classes = len(check_classes(labels["y_train"], labels["y_test"], None))
        for x, _ in pairs:
            _scan_images(archive, x, headers[x], input_range)
        return next(iter(shapes.values())), num_classes
    except (zipfile.BadZipFile, EOFError, OSError) as exc:
        raise DatasetError(
            f"the uploaded .npz cannot be read (truncated or damaged?): {exc}",
            hint="re-create it with np.savez and upload it again in full",
        ) from exc


def _check_splittable(labels: np.ndarray) -> None:
    """x and y alone are split by the job's test_fraction, stratified: every class needs an
    image on each side (the worker also checks the fraction itself)."""
    check_classes(labels, labels, None)
    counts = np.bincount(labels)
    few = [int(c) for c in np.flatnonzero((counts > 0) & (counts < MIN_IMAGES_PER_CLASS))]
    if few:
        raise DatasetError(
            f"classes {few[:10]} have fewer than {MIN_IMAGES_PER_CLASS} images in y, too few to "
            "split into train and test",
            hint="add images to those classes, or " + NPZ_HINT,
        )


def _open_array(archive: zipfile.ZipFile, name: str) -> IO[bytes]:
    return archive.open(name + ".npy")


def _read_header(archive: zipfile.ZipFile, name: str) -> NpyHeader:
    with _open_array(archive, name) as member:
        return read_npy_header(member, name)


def _lying_header(name: str, header: NpyHeader, found: str) -> DatasetError:
    return DatasetError(
        f"{name}'s header says shape {header.shape} of {header.dtype} ({header.nbytes} bytes) "
        f"but {found}",
        hint="the file was cut off or altered: " + SAVE_HINT,
    )


def _read_labels(archive: zipfile.ZipFile, name: str, header: NpyHeader) -> np.ndarray:
    with _open_array(archive, name) as member:
        read_npy_header(member, name)
        data = member.read(header.nbytes + 1)
    if len(data) != header.nbytes:
        raise _lying_header(name, header, f"{len(data)} bytes follow it")
    if header.dtype.kind not in "iubf":
        raise DatasetError(
            f"{name} has dtype {header.dtype}; labels must be integers",
            hint="store class indices as an integer array",
        )
    return np.frombuffer(data, dtype=header.dtype).reshape(header.shape)


def _scan_images(
    archive: zipfile.ZipFile, name: str, header: NpyHeader, input_range: tuple[float, float]
) -> None:
    floats = stored_range(name, header.dtype, None) is None
    itemsize = header.dtype.itemsize
    chunk_bytes = max(itemsize, CHUNK_BYTES - CHUNK_BYTES % itemsize)
    seen, finite = 0, True
    low, high = math.inf, -math.inf
    with _open_array(archive, name) as member:
        read_npy_header(member, name)
        while seen < header.nbytes:
            chunk = member.read(min(chunk_bytes, header.nbytes - seen))
            if not chunk:
                raise _lying_header(name, header, f"only {seen} bytes follow it")
            seen += len(chunk)
            if floats:
                values = np.frombuffer(chunk, dtype=header.dtype)
                finite = finite and bool(np.all(np.isfinite(values)))
                if finite:
                    low, high = min(low, float(values.min())), max(high, float(values.max()))
        if member.read(1):
            raise _lying_header(name, header, "more bytes follow it")
    if floats:
        check_values(name, finite, (low, high), input_range)
