"""Datasets named the way a training script names them (``torchvision:MNIST``, ``hf:mnist``,
``cifar10``, ``mnist``), refused with the fix: the workers have no internet access to dataset hubs
and download nothing by name, so the dataset has to become a file first.

Torch-free: the API refuses these references at submit and ``harden run`` when no file or folder
of that name exists, both with the words defined here (``load_dataset`` checks the path first).
"""

from __future__ import annotations

import re

from core.errors import DatasetError
from core.names import BUILTIN_DATASETS

# The prefixes people type for a dataset library, and the library's name in the refusal.
LIBRARY_PREFIXES = {
    "torchvision": "torchvision",
    "hf": "Hugging Face",
    "huggingface": "Hugging Face",
    "datasets": "Hugging Face",
    "tfds": "TensorFlow Datasets",
    "tensorflow_datasets": "TensorFlow Datasets",
    "keras": "Keras",
    "kaggle": "Kaggle",
    "openml": "OpenML",
    "sklearn": "scikit-learn",
}
# Well-known image datasets, lower case without '-' and '_' (fashion_mnist -> fashionmnist).
WELL_KNOWN_NAMES = frozenset(
    {
        "cifar10", "cifar100", "fashionmnist", "kmnist", "emnist", "qmnist", "svhn", "stl10",
        "usps", "imagenet", "imagenet1k", "tinyimagenet", "celeba", "caltech101", "caltech256",
        "gtsrb", "flowers102", "food101", "eurosat", "omniglot", "places365", "coco",
    }
)  # fmt: skip
# Our own prefixes: builtin: and dataset: have their own checks, file: is a path.
_OWN_PREFIXES = frozenset({"builtin", "dataset", "file"})
# 'name:rest' or 'name://rest'; a one-letter prefix is a Windows drive (C:data.npz).
_PREFIXED = re.compile(r"([A-Za-z][A-Za-z0-9_.-]+):(//)?(.*)", re.S)
_FILE_SUFFIXES = (".npz", ".zip", ".tar", ".tgz", ".gz")

EXPORT_HINT = (
    "export it to an .npz with x_train, y_train, x_test, y_test (or x and y), e.g. "
    "d = torchvision.datasets.MNIST('data', download=True); "
    "numpy.savez('mnist.npz', x=d.data.numpy(), y=d.targets.numpy()); then pass the file "
    "(harden run MODEL --dataset mnist.npz, or harden submit MODEL --dataset-file mnist.npz), or "
    "register it once (harden datasets upload mnist.npz) and name it dataset:<id>; an s3:// or "
    "https:// reference to the file works too"
)
_NO_DOWNLOADS = (
    "(the workers have no internet access to torchvision, Hugging Face or other dataset hubs)"
)


def dataset_name_refusal(ref: str) -> DatasetError | None:
    """The refusal of ``ref`` when it names a dataset by library (``torchvision:MNIST``,
    ``hf:mnist``, any other ``prefix:name`` that is not a reference form) or by a well-known
    name (``cifar10``; ``mnist`` and ``digits`` point to the builtins); None otherwise.

    Returned, not raised: ``harden run`` raises it only when no file or folder ``ref`` exists.
    """
    match = _PREFIXED.fullmatch(ref)
    if match is not None:
        prefix, name = match.group(1), match.group(3)
        library = LIBRARY_PREFIXES.get(prefix.lower())
        if library is not None:
            what = f"{ref!r} names a {library} dataset"
        elif prefix.lower() in _OWN_PREFIXES or match.group(2) or not _looks_like_a_name(name):
            return None  # a reference form, another URI scheme or a path with a colon in it
        else:
            what = f"{ref!r}: '{prefix}:' is not a dataset reference form"
        message = f"{what}; harden and its workers do not download datasets by library name "
        message += _NO_DOWNLOADS
        return DatasetError(message, hint=_builtin_note(name) + EXPORT_HINT, reference=ref)
    builtin = _builtin_named(ref)
    if builtin is not None:
        return DatasetError(
            f"dataset {ref!r} is not a file or a dataset reference: did you mean {builtin}?",
            hint=f"name it {builtin}, bundled with harden; for one of your own, {EXPORT_HINT}",
            reference=ref,
        )
    if _normalised(ref) in WELL_KNOWN_NAMES:
        return DatasetError(
            f"dataset {ref!r} is a dataset's name, not a file or a dataset reference; harden and "
            f"its workers do not download datasets by name {_NO_DOWNLOADS}",
            hint=EXPORT_HINT,
            reference=ref,
        )
    return None


def _normalised(name: str) -> str:
    return name.strip().lower().replace("-", "").replace("_", "")


def _builtin_named(name: str) -> str | None:
    """``builtin:mnist`` for 'MNIST', ``builtin:digits`` for 'digits'; None for other names."""
    wanted = f"builtin:{_normalised(name)}"
    return wanted if wanted in BUILTIN_DATASETS else None


def _builtin_note(name: str) -> str:
    # torchvision:MNIST may want the full set, but the bundled subset could be enough.
    builtin = _builtin_named(name.rsplit("/", 1)[-1])
    return f"use {builtin} (bundled with harden), or " if builtin else ""


def _looks_like_a_name(rest: str) -> bool:
    """A dataset's name (mnist, cifar-10), not the rest of a path (run:1/data.npz)."""
    return bool(rest) and not any(c in rest for c in "/\\") and not rest.endswith(_FILE_SUFFIXES)
