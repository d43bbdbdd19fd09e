"""Validation of dataset arrays: layout, labels, finiteness and value range.

Used by :mod:`core.datasets.references`.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from core.errors import DatasetError

# More classes than this is a label encoding gone wrong (ids, hashes), not a classifier: the
# model's output layer and the one-hot arithmetic would be that wide.
MAX_CLASSES = 100_000


class CheckedArrays(NamedTuple):
    """Arrays that passed every check: float32 NCHW images, int64 labels."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    class_names: list[str]
    # What was done to the stored arrays to make them so, in words (the report lists them).
    conversions: tuple[str, ...] = ()


def _to_nchw(name: str, x: np.ndarray) -> np.ndarray:
    if x.ndim == 3:  # (N, H, W) grayscale
        return x[:, None, :, :]
    if _channels_last(name, x.shape):
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    return x


def _conversions(x: np.ndarray, input_range: tuple[float, float]) -> tuple[str, ...]:
    """In words, what :func:`validate_arrays` does to stored images ``x`` beyond checking them:
    a layout changed or a dtype scaled, which a user should see rather than have done silently."""
    done = []
    if x.ndim == 3:
        done.append(f"images stored as (N, H, W) {tuple(x.shape)} were given one channel")
    elif x.ndim == 4 and _channels_last("x", x.shape):
        done.append(
            f"images stored channels-last (N, H, W, C) {tuple(x.shape)} were transposed to "
            "(N, C, H, W)"
        )
    if x.dtype == np.uint8:
        low, high = input_range
        done.append(f"uint8 images were scaled from 0..255 to the input_range [{low:g}, {high:g}]")
    return tuple(done)


def _channels_last(name: str, shape: tuple[int, ...]) -> bool:
    """Whether a 4-D image array of ``shape`` is NHWC (else NCHW); refuses other layouts."""
    if len(shape) != 4:
        raise DatasetError(
            f"{name} has shape {shape}; expected (N, H, W), (N, C, H, W) or (N, H, W, C)",
            hint="store images as a 3-D or 4-D array",
        )
    channels_first = shape[1] in (1, 3, 4)
    channels_last = shape[3] in (1, 3, 4)
    if channels_first or channels_last:
        return not channels_first
    raise DatasetError(
        f"{name} has shape {shape}: no channel dimension of size 1, 3 or 4 in position 1 "
        "(NCHW) or last (NHWC)",
        hint="store images as (N, C, H, W) or (N, H, W, C) with 1, 3 or 4 channels",
    )


def image_shape(name: str, shape: tuple[int, ...]) -> tuple[int, int, int]:
    """(C, H, W) of one image of an array of ``shape``, as :func:`validate_arrays` lays it out."""
    if len(shape) == 3:
        return (1, shape[1], shape[2])
    if _channels_last(name, shape):
        return (shape[3], shape[1], shape[2])
    return (shape[1], shape[2], shape[3])


def check_labels(name: str, y: np.ndarray, n_images: int) -> np.ndarray:
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise DatasetError(
            f"{name} has shape {y.shape}; expected one integer label per image",
            hint="store class indices (0..num_classes-1), not one-hot vectors",
        )
    if len(y) != n_images:
        raise DatasetError(
            f"{name} has {len(y)} labels but there are {n_images} images",
            hint="give exactly one label per image",
        )
    if y.dtype.kind == "f":
        if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
            raise DatasetError(
                f"{name} holds non-integer labels", hint="store class indices as integers"
            )
    elif y.dtype.kind not in "iub":
        raise DatasetError(
            f"{name} has dtype {y.dtype}; labels must be integers",
            hint="store class indices as an integer array",
        )
    y = y.astype(np.int64)
    if len(y) and y.min() < 0:
        raise DatasetError(
            f"{name} holds negative labels (min {int(y.min())})",
            hint="labels must be class indices 0..num_classes-1",
        )
    return y


def stored_range(
    name: str, dtype: np.dtype, source_range: tuple[float, float] | None
) -> tuple[float, float] | None:
    """The value range the images are stored in: 0..255 for uint8, else ``source_range``
    (None: floats already in input units). Refuses other dtypes."""
    if dtype == np.uint8:
        return (0.0, 255.0)
    if dtype.kind in "iu" or dtype == np.bool_:
        raise DatasetError(
            f"{name} has dtype {dtype}; images must be uint8 (0..255) or floating point",
            hint="convert to uint8 or to float32 values inside input_range",
        )
    if dtype.kind != "f":
        raise DatasetError(
            f"{name} has dtype {dtype}; images must be uint8 or floating point",
            hint="convert to uint8 or float32",
        )
    return source_range


def check_values(
    name: str, finite: bool, found: tuple[float, float], input_range: tuple[float, float]
) -> None:
    """Float images in input units: all finite, all inside ``input_range``."""
    if not finite:
        raise DatasetError(
            f"{name} contains NaN or infinite values", hint="clean or drop those images"
        )
    (low, high), (found_low, found_high) = input_range, found
    if found_low < low or found_high > high:
        raise DatasetError(
            f"{name} has values in [{found_low:g}, {found_high:g}], outside the input_range "
            f"[{low:g}, {high:g}]",
            hint="store the raw images (uint8 0..255, or floats inside input_range) and set the "
            "job's normalization {mean, std} when the model expects normalised inputs (values "
            "like these usually are already normalised); or set input_range to the range the "
            "model takes",
        )


def _scale(
    name: str,
    x: np.ndarray,
    source_range: tuple[float, float] | None,
    input_range: tuple[float, float],
) -> np.ndarray:
    low, high = input_range
    source_range = stored_range(name, x.dtype, source_range)
    x = x.astype(np.float64)
    if not np.all(np.isfinite(x)):
        check_values(name, False, (0.0, 0.0), input_range)
    if source_range is not None:
        src_low, src_high = source_range
        return ((x - src_low) / (src_high - src_low) * (high - low) + low).astype(np.float32)
    check_values(name, True, (float(x.min()), float(x.max())), input_range)
    return x.astype(np.float32)


def check_classes(
    y_train: np.ndarray, y_test: np.ndarray, class_names: list[str] | None, ref: str = ""
) -> list[str]:
    """The class names (given, or ``"0"``..``"K-1"`` from the labels), once the labels are
    known good: at least two classes trained, none past the last, none only in the test."""
    if class_names is None:
        num_classes = int(max(y_train.max(), y_test.max())) + 1
        if num_classes > MAX_CLASSES:
            raise DatasetError(
                f"labels go up to {num_classes - 1}; at most {MAX_CLASSES} classes are supported",
                hint="labels must be class indices 0..num_classes-1, numbered without gaps",
                reference=ref,
            )
        class_names = [str(i) for i in range(num_classes)]
    num_classes = len(class_names)
    if num_classes < 2 or len(np.unique(y_train)) < 2:
        raise DatasetError(
            f"the training split has {len(np.unique(y_train))} class(es); a classifier needs "
            "at least 2",
            hint="include images of at least two classes",
            reference=ref,
        )
    if y_train.max() >= num_classes or y_test.max() >= num_classes:
        raise DatasetError(
            f"labels go up to {int(max(y_train.max(), y_test.max()))} but there are only "
            f"{num_classes} classes",
            hint="labels must be class indices 0..num_classes-1",
            reference=ref,
        )
    unseen = sorted(set(np.unique(y_test).tolist()) - set(np.unique(y_train).tolist()))
    if unseen:
        raise DatasetError(
            f"y_test has labels {unseen[:10]} that never occur in y_train",
            hint="every test class needs training images; check the label encoding",
            reference=ref,
        )
    return class_names


def validate_arrays(
    ref: str,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    class_names: list[str] | None,
    source_range: tuple[float, float] | None,
    input_range: tuple[float, float],
) -> CheckedArrays:
    """Validate raw arrays: NCHW float32 images inside ``input_range``, int64 labels."""
    for name, x in (("x_train", x_train), ("x_test", x_test)):
        if len(x) == 0:
            raise DatasetError(
                f"{name} is empty", hint="both splits need at least one image", reference=ref
            )
    conversions = _conversions(x_train, input_range)
    x_train = _to_nchw("x_train", x_train)
    x_test = _to_nchw("x_test", x_test)
    if x_train.shape[1:] != x_test.shape[1:]:
        raise DatasetError(
            f"x_train images have shape {x_train.shape[1:]} but x_test images {x_test.shape[1:]}",
            hint="train and test images must have the same channels, height and width",
            reference=ref,
        )
    y_train = check_labels("y_train", y_train, len(x_train))
    y_test = check_labels("y_test", y_test, len(x_test))
    class_names = check_classes(y_train, y_test, class_names, ref)
    num_classes = len(class_names)
    x_train = _scale("x_train", x_train, source_range, input_range)
    x_test = _scale("x_test", x_test, source_range, input_range)
    return CheckedArrays(
        np.ascontiguousarray(x_train),
        y_train,
        np.ascontiguousarray(x_test),
        y_test,
        num_classes,
        class_names,
        conversions,
    )
