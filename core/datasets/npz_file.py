"""An .npz dataset file read into checked arrays: ``x_train, y_train, x_test, y_test``, or ``x``
and ``y`` alone, split by ``test_fraction`` (stratified, seeded)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from core.datasets.checks import CheckedArrays, check_labels, validate_arrays
from core.datasets.split import SplitRecord, stratified_split
from core.errors import DatasetError
from core.names import NPZ_ARRAYS

UNSPLIT_ARRAYS = ("x", "y")
NPZ_HINT = (
    "save it with np.savez(path, x=images, y=labels) (split by test_fraction) or "
    "np.savez(path, x_train=..., y_train=..., x_test=..., y_test=...)"
)


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
        # allow_pickle=False: an object array would be unpickled, i.e. run the uploader's code.
        with np.load(path, allow_pickle=False) as npz:
            form = npz_form(list(npz.files))
            if form is None:
                raise missing_arrays_error(list(npz.files), ref)
            for name in form:
                arrays[name] = npz[name]
    except DatasetError:
        raise
    except ValueError as exc:
        raise DatasetError(
            f"the .npz file holds object arrays, which are refused ({exc})",
            hint="store images and labels as numeric arrays (uint8 or float32 images, integer "
            "labels)",
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
