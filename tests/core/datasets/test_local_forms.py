"""Datasets where users keep them: a folder of class folders (with or without train/ and test/),
an archive without a split, an .npz with only x and y; a seeded stratified test_fraction split;
image folders memory-mapped from an unlinked scratch file; refusals that name the fix."""

from __future__ import annotations

import io
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pydantic import ValidationError

from core.contract.spec import HardenSpec
from core.datasets.references import load_dataset
from core.errors import DatasetError

CLASSES = {"cat": 8, "dog": 12, "eel": 4}  # unbalanced on purpose


def _png(value: int, size: tuple[int, int] = (6, 5)) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", size, color=value).save(buffer, format="PNG")
    return buffer.getvalue()


def _entries(prefix: str = "") -> dict[str, bytes]:
    """Class folders of PNGs whose grey level says which image each is (unique per image)."""
    entries, value = {}, 0
    for name, count in CLASSES.items():
        for index in range(count):
            entries[f"{prefix}{name}/{index}.png"] = _png(value)
            value += 1
    return entries


def _write_tree(root: Path, entries: dict[str, bytes]) -> Path:
    for name, data in entries.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def _grey_levels(images: torch.Tensor) -> list[int]:
    return [round(float(v) * 255) for v in images[:, 0, 0, 0]]


def test_folder_of_class_folders_is_split_stratified_and_seeded(tmp_path: Path) -> None:
    root = _write_tree(tmp_path / "pets", _entries())
    data = load_dataset(str(root), test_fraction=0.25, seed=3)
    assert data.class_names == ["cat", "dog", "eel"] and data.input_shape == (1, 5, 6)
    assert (data.split.source, data.split.test_fraction, data.split.seed) == (
        "test_fraction", 0.25, 3,
    )  # fmt: skip
    assert len(data.y_train) + len(data.y_test) == sum(CLASSES.values())
    # Stratified: each class's share of the test split is its share of the data (2, 3, 1).
    assert torch.bincount(data.y_test).tolist() == [2, 3, 1]
    # Every image is on exactly one side.
    train, test = _grey_levels(data.x_train), _grey_levels(data.x_test)
    assert sorted(train + test) == list(range(sum(CLASSES.values())))
    # The same seed gives the same split; another seed another one.
    again = load_dataset(str(root), test_fraction=0.25, seed=3)
    assert torch.equal(again.x_test, data.x_test) and torch.equal(again.y_train, data.y_train)
    other = load_dataset(str(root), test_fraction=0.25, seed=4)
    assert _grey_levels(other.x_test) != test


def test_folder_with_its_own_split_keeps_it(tmp_path: Path) -> None:
    entries = _entries("train/") | {f"test/{name}/t.png": _png(200) for name in CLASSES}
    data = load_dataset(str(_write_tree(tmp_path / "d", entries)), test_fraction=0.5)
    assert data.split.source == "given" and data.split.seed is None
    assert len(data.y_test) == 3 and len(data.y_train) == sum(CLASSES.values())


def test_train_folder_alone_is_split(tmp_path: Path) -> None:
    data = load_dataset(str(_write_tree(tmp_path / "d", _entries("train/"))), test_fraction=0.25)
    assert data.split.source == "test_fraction" and len(data.y_test) == 6


def test_archive_without_a_split_matches_the_folder(tmp_path: Path) -> None:
    path = tmp_path / "pets.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for name, payload in _entries("pets/").items():  # under one top folder
            archive.writestr(name, payload)
    from_zip = load_dataset(str(path), seed=1)
    from_folder = load_dataset(str(_write_tree(tmp_path / "pets", _entries())), seed=1)
    assert from_zip.split.source == "test_fraction" and from_zip.split.test_fraction == 0.2
    assert torch.equal(from_zip.x_test, from_folder.x_test)
    assert torch.equal(from_zip.y_train, from_folder.y_train)


def test_image_folders_are_memory_mapped_from_an_unlinked_file(tmp_path: Path) -> None:
    data = load_dataset(str(_write_tree(tmp_path / "pets", _entries())))
    maps = Path("/proc/self/maps").read_text()
    # The pixels live in a file mapping (pages the kernel may drop), whose name is already gone.
    assert "harden-images-" in maps and "(deleted)" in maps
    assert float(data.x_train.sum()) > 0


def test_npz_with_only_x_and_y_is_split(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.random((30, 4, 4)).astype(np.float32)
    y = np.repeat([0, 1, 2], 10)
    path = tmp_path / "xy.npz"
    np.savez(path, x=x, y=y)
    data = load_dataset(str(path), test_fraction=0.3, seed=5)
    assert data.split.source == "test_fraction" and data.split.seed == 5
    assert torch.bincount(data.y_test).tolist() == [3, 3, 3]
    assert data.x_train.shape == (21, 1, 4, 4) and data.input_shape == (1, 4, 4)
    rows = {tuple(r.flatten().tolist()) for r in np.concatenate([data.x_train, data.x_test])}
    assert rows == {tuple(r.flatten().tolist()) for r in x}


@pytest.mark.parametrize(
    ("arrays", "named"),
    [
        ({"x": np.zeros((4, 3, 3))}, r"lacks the array\(s\) y "),
        ({"x_train": np.zeros((4, 3, 3)), "y_train": np.zeros(4)}, "x_test, y_test"),
        ({"x": np.zeros((5, 3, 3)), "y": np.array([0, 0, 0, 0, 1])}, "the smallest has 1"),
    ],
    ids=["x_without_y", "train_without_test", "class_of_one"],
)
def test_npz_refusals_name_the_forms(tmp_path: Path, arrays: dict, named: str) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(DatasetError, match=named) as caught:
        load_dataset(str(path))
    assert "test_fraction" in caught.value.hint or "x_train" in caught.value.hint


def test_folder_refusals_name_the_fix(tmp_path: Path) -> None:
    one_image = _write_tree(
        tmp_path / "a", {"cat/1.png": _png(1), "dog/1.png": _png(2), "dog/2.png": _png(3)}
    )
    with pytest.raises(DatasetError, match=r"\['cat'\].*fewer than 2 images"):
        load_dataset(str(one_image))
    # 24 images of 3 classes: 5% is 2 test images, fewer than the classes.
    with pytest.raises(DatasetError, match="test_fraction 0.05") as caught:
        load_dataset(str(_write_tree(tmp_path / "b", _entries())), test_fraction=0.05)
    assert "give the dataset its own test split" in caught.value.hint
    with pytest.raises(DatasetError, match="does not exist") as caught:
        load_dataset(str(tmp_path / "nowhere"))
    assert "<class>/<image>" in caught.value.hint and "x and y" in caught.value.hint


@pytest.mark.parametrize("fraction", [0, 0.005, 0.95, 1])
def test_test_fraction_is_validated(fraction: float) -> None:
    with pytest.raises(ValidationError, match="test_fraction"):
        HardenSpec(test_fraction=fraction)


def _zip_bytes(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, payload in entries.items():
            archive.writestr(name, payload)
    return buffer.getvalue()


def test_a_zip_is_decoded_from_the_archive_without_unpacking(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "pets.zip"
    path.write_bytes(_zip_bytes(_entries()))
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    data = load_dataset(str(path), seed=1)
    assert len(data.y_train) + len(data.y_test) == sum(CLASSES.values())
    assert list(scratch.iterdir()) == []  # no unpacked folder; the scratch arrays are unlinked


def test_a_zip_entry_larger_than_its_header_says_is_refused(tmp_path: Path) -> None:
    data = bytearray(_zip_bytes(_entries()))
    central = data.find(b"PK\x01\x02")  # the first entry's central directory record
    data[central + 24 : central + 28] = (10).to_bytes(4, "little")  # claims 10 bytes
    path = tmp_path / "lying.zip"
    path.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match="cannot be read|header says") as caught:
        load_dataset(str(path))
    assert "re-create" in caught.value.hint
