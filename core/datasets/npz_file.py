"""An .npz dataset file read into checked arrays: ``x_train, y_train, x_test, y_test``, or ``x``
and ``y`` alone, split by ``test_fraction`` (stratified, seeded)."""

from __future__ import annotations

import math
import tokenize
import zipfile
from pathlib import Path
from typing import IO, NamedTuple

import numpy as np

from core.datasets.archives import DEFAULT_MAX_BYTES
from core.datasets.checks import CheckedArrays, check_labels, image_shape, validate_arrays
from core.datasets.pixels import PixelBudget
from core.datasets.split import SplitRecord, stratified_split
from core.errors import DatasetError
from core.names import NPZ_ARRAYS

UNSPLIT_ARRAYS = ("x", "y")
NPZ_HINT = (
    "save it with np.savez(path, x=images, y=labels) (split by test_fraction) or "
    "np.savez(path, x_train=..., y_train=..., x_test=..., y_test=...)"
)


# What numpy's .npy header parser raises on a malformed header: ValueError mostly, but a cut
# or unbalanced header dict fails in the tokenizer or the literal parser under it (a 500 once).
_MALFORMED_HEADER = (
    ValueError,
    SyntaxError,
    TypeError,
    OverflowError,
    MemoryError,
    RecursionError,
    tokenize.TokenError,
)


class NpyHeader(NamedTuple):
    """The shape and dtype an .npy member's header declares."""

    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


def read_npy_header(member: IO[bytes], name: str) -> NpyHeader:
    """Reads the magic and header of one .npy member (never its data, never a pickle);
    :class:`DatasetError` for anything but a numeric array's well-formed header."""
    try:
        version = np.lib.format.read_magic(member)
        shape, _, dtype = (
            np.lib.format.read_array_header_1_0(member)
            if version == (1, 0)
            else np.lib.format.read_array_header_2_0(member)
        )
        if any(not isinstance(n, int) or n < 0 for n in shape):
            raise ValueError(f"shape {shape} has a negative dimension")
    except _MALFORMED_HEADER as exc:
        raise DatasetError(
            f"{name} in the .npz is not a valid array: its .npy header is cut off or malformed "
            f"({type(exc).__name__}: {str(exc)[:200]})",
            hint="save plain numeric arrays with np.savez and upload the file in full",
        ) from exc
    if dtype.hasobject:
        raise DatasetError(
            f"{name} in the .npz is an object array: object arrays are refused (they would need "
            "unpickling)",
            hint="save numeric arrays (float32 images, integer labels)",
        )
    return NpyHeader(tuple(int(n) for n in shape), dtype)


def check_declared_arrays(
    headers: dict[str, NpyHeader], form: tuple[str, ...], max_bytes: int = DEFAULT_MAX_BYTES
) -> None:
    """Refuse, from the headers alone, arrays past ``max_bytes`` in all and images past the
    pixel bounds (:mod:`core.datasets.pixels`), before any array's data is read."""
    total = sum(header.nbytes for header in headers.values())
    if total > max_bytes:
        largest = max(headers, key=lambda name: headers[name].nbytes)
        raise DatasetError(
            f"the .npz headers declare {total:,} bytes of arrays ({largest}: shape "
            f"{headers[largest].shape} of {headers[largest].dtype}), more than the "
            f"{max_bytes:,} a job may load",
            hint="upload fewer or smaller images",
            limit_bytes=max_bytes,
        )
    pixels = PixelBudget()
    for name in form:
        shape = headers[name].shape
        if name.startswith("x") and len(shape) in (3, 4) and shape[0] > 0:
            _, height, width = image_shape(name, shape)
            pixels.add(f"the {shape[0]} images of {name}", width, height, shape[0])


def npz_form(names: list[str]) -> tuple[str, ...] | None:
    """The arrays an .npz holding ``names`` is read from: the four split arrays when all are
    there, else ``x`` and ``y``; None when it holds neither form."""
    if all(name in names for name in NPZ_ARRAYS):
        return NPZ_ARRAYS
    if all(name in names for name in UNSPLIT_ARRAYS):
        return UNSPLIT_ARRAYS
    return None


def missing_arrays_error(names: list[str], ref: str = "") -> DatasetError:
    """The refusal of an .npz holding neither form, naming what it lacks."""
    missing = [a for a in NPZ_ARRAYS if a not in names]
    if any(a in names for a in UNSPLIT_ARRAYS):
        missing = [a for a in UNSPLIT_ARRAYS if a not in names]
    return DatasetError(
        f"the .npz file lacks the array(s) {', '.join(missing)} "
        f"(it has: {', '.join(sorted(names)) or 'none'})",
        hint=NPZ_HINT,
        reference=ref or None,
        missing=missing,
    )


def read_npz(
    ref: str, path: Path, input_range: tuple[float, float], *, test_fraction: float, seed: int
) -> tuple[CheckedArrays, SplitRecord]:
    """The checked arrays of the .npz at ``path`` and how its split came about."""
    arrays: dict[str, np.ndarray] = {}
    try:
        with zipfile.ZipFile(path) as archive:
            names = [n.removesuffix(".npy") for n in archive.namelist() if not n.endswith("/")]
            form = npz_form(names)
            if form is None:
                raise missing_arrays_error(names, ref)
            headers = {}
            for name in form:
                with archive.open(name + ".npy") as member:
                    headers[name] = read_npy_header(member, name)
        # Checked before np.load allocates what the headers declare.
        check_declared_arrays(headers, form)
        # allow_pickle=False: an object array would be unpickled, i.e. run the uploader's code.
        with np.load(path, allow_pickle=False) as npz:
            for name in form:
                arrays[name] = npz[name]
    except DatasetError as exc:
        exc.fields.setdefault("reference", ref)
        raise
    except _MALFORMED_HEADER as exc:
        raise DatasetError(
            f"the .npz file cannot be read as numeric arrays ({type(exc).__name__}: "
            f"{str(exc)[:200]})",
            hint="store images and labels as numeric arrays (uint8 or float32 images, integer "
            "labels) with np.savez",
            reference=ref,
        ) from exc
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise DatasetError(
            f"cannot read the .npz file: {exc}", hint="re-save it with np.savez", reference=ref
        ) from exc
    record = SplitRecord("given")
    if form == UNSPLIT_ARRAYS:
        x = arrays["x"]
        if x.ndim == 0 or len(x) == 0:
            raise DatasetError("x is empty", hint="store at least one image per class in x")
        y = check_labels("y", arrays["y"], len(x))
        train, test = stratified_split(y, test_fraction, seed)
        arrays = {"x_train": x[train], "y_train": y[train], "x_test": x[test], "y_test": y[test]}
        record = SplitRecord("test_fraction", test_fraction=test_fraction, seed=seed)
    checked = validate_arrays(
        ref,
        arrays["x_train"],
        arrays["y_train"],
        arrays["x_test"],
        arrays["y_test"],
        None,
        None,
        input_range,
    )
    return checked, record
