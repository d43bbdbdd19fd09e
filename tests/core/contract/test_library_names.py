"""Datasets named by library (torchvision:MNIST, hf:mnist) or by a well-known name (cifar10,
mnist): refused with the fix (export an .npz, then pass or register it), not as a missing path;
a file or folder of that name still loads."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from core.contract.library_names import EXPORT_HINT, dataset_name_refusal
from core.contract.spec import HardenSpec
from core.datasets.references import load_dataset
from core.errors import DatasetError

NO_DOWNLOAD = "do not download datasets by library name"
FIX = ("numpy.savez(", "--dataset mnist.npz", "harden datasets upload mnist.npz", "dataset:<id>")


def _refusal(ref: str) -> DatasetError:
    with pytest.raises(DatasetError) as caught:
        load_dataset(ref)
    assert "does not exist" not in caught.value.message
    assert caught.value.fields["reference"] == ref
    return caught.value


@pytest.mark.parametrize(
    ("ref", "library"),
    [
        ("torchvision:MNIST", "torchvision"),
        ("hf:mnist", "Hugging Face"),
        ("huggingface:cifar10", "Hugging Face"),
        ("hf:ylecun/mnist", "Hugging Face"),
        ("hf://datasets/ylecun/mnist", "Hugging Face"),
        ("tfds:mnist", "TensorFlow Datasets"),
        ("kaggle:cats-vs-dogs", "Kaggle"),
    ],
)
def test_a_library_name_is_refused_with_the_export_fix(ref: str, library: str) -> None:
    error = _refusal(ref)
    assert error.message.startswith(f"{ref!r} names a {library} dataset")
    assert NO_DOWNLOAD in error.message and "no internet access" in error.message
    assert error.hint.endswith(EXPORT_HINT) and all(part in error.hint for part in FIX)


def test_an_unknown_prefix_is_refused_as_no_reference_form() -> None:
    error = _refusal("zenodo:12345")
    assert "'zenodo:' is not a dataset reference form" in error.message
    assert NO_DOWNLOAD in error.message and error.hint == EXPORT_HINT


@pytest.mark.parametrize(
    ("ref", "builtin"),
    [("mnist", "builtin:mnist"), ("MNIST", "builtin:mnist"), ("Digits", "builtin:digits")],
)
def test_a_builtin_named_bare_points_to_the_builtin(ref: str, builtin: str) -> None:
    error = _refusal(ref)
    assert error.message.endswith(f"did you mean {builtin}?")
    assert error.hint.startswith(f"name it {builtin}") and error.hint.endswith(EXPORT_HINT)


def test_a_library_name_of_a_builtin_mentions_the_builtin() -> None:
    assert _refusal("torchvision:MNIST").hint.startswith("use builtin:mnist (bundled with harden)")
    assert not _refusal("torchvision:CIFAR10").hint.startswith("use builtin:")


@pytest.mark.parametrize(
    "ref", ["cifar10", "CIFAR10", "fashion_mnist", "Fashion-MNIST", "imagenet"]
)
def test_a_well_known_name_gets_the_export_fix(ref: str) -> None:
    error = _refusal(ref)
    assert "is a dataset's name, not a file" in error.message
    assert "do not download datasets by name" in error.message and error.hint == EXPORT_HINT


@pytest.mark.parametrize("ref", ["nowhere", "run:1/data.npz", "C:data.npz", "notes:v2.npz"])
def test_paths_are_still_missing_paths(ref: str) -> None:
    assert dataset_name_refusal(ref) is None
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset(ref)


@pytest.mark.parametrize("name", ["CIFAR10", "torchvision:MNIST"])
def test_an_existing_file_of_such_a_name_loads(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    with open(name, "wb") as handle:  # np.savez would add .npz to a path
        np.savez(handle, x=rng.random((12, 1, 4, 4), dtype=np.float32), y=np.arange(12) % 3)
    dataset = load_dataset(name)
    assert dataset.num_classes == 3 and dataset.reference == name


def test_an_existing_folder_named_mnist_is_read_as_a_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mnist").mkdir()  # empty: the image-folder reader refuses it, not the name check
    with pytest.raises(DatasetError, match="class folder"):
        load_dataset("mnist")


def test_the_hints_example_writes_an_npz_that_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Run the hint's own code with torchvision.datasets.MNIST's data and targets (uint8 N x 28 x
    # 28, int64 labels) but no download, so the fix it shows cannot drift from what loads.
    example = re.search(r"e\.g\. (.*?); then pass", EXPORT_HINT)
    assert example is not None
    mnist = SimpleNamespace(
        data=torch.randint(0, 256, (60, 28, 28), dtype=torch.uint8), targets=torch.arange(60) % 10
    )
    fake = SimpleNamespace(datasets=SimpleNamespace(MNIST=lambda root, download: mnist))
    monkeypatch.chdir(tmp_path)
    exec(example.group(1), {"torchvision": fake, "numpy": np})  # noqa: S102
    dataset = load_dataset("mnist.npz")
    assert dataset.input_shape == (1, 28, 28) and dataset.num_classes == 10
    assert len(dataset.x_train) + len(dataset.x_test) == 60 and float(dataset.x_train.max()) <= 1


def test_the_spec_leaves_hf_uris_to_the_refusal_with_the_fix() -> None:
    assert HardenSpec(dataset="hf://datasets/ylecun/mnist").dataset.startswith("hf://")
    with pytest.raises(ValidationError, match="dataset URI scheme 'ftp'"):
        HardenSpec(dataset="ftp://host/data.npz")
