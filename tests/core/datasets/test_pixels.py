"""core.datasets.pixels: decoded pixels bounded per image and per dataset, from the images'
headers, at upload (archive listings) and in the worker before anything is decoded (issue 25)."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import pytest

from core.datasets.archives import check_archive_listing
from core.datasets.image_folder import read_image_folder
from core.datasets.npz_file import read_npz
from core.datasets.pixels import (
    HEADER_BYTES,
    MAX_DATASET_PIXELS,
    MAX_IMAGE_PIXELS,
    header_size,
)
from core.datasets.zip_images import read_zip_images
from core.errors import DatasetError
from tests.app.conftest import npy_bytes, npz_of_members
from tests.core.archive_files import image_tar, image_zip, png_claiming

# 12000x12000: what the four PNGs in 2.5 KB claimed (a 2.3 GB scratch file); 20000x20000
# is past Pillow's own DecompressionBombError threshold (2 x 89,478,485 pixels).
HUGE = [12_000, 20_000]


def _folder_of(image: bytes, per_class: int = 2) -> dict[str, bytes]:
    return {f"{label}/{index}.png": image for label in "ab" for index in range(per_class)}


def _png(width: int, height: int) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (width, height)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_the_size_comes_from_the_header_alone() -> None:
    assert header_size(png_claiming(12_000, 9_000), "x") == (12_000, 9_000)
    # The first HEADER_BYTES of a file are enough: the pixels after them are never read.
    assert header_size(_png(300, 200)[:HEADER_BYTES], "x") == (300, 200)
    assert header_size(b"not an image", "x") is None


def test_pillows_bomb_warning_raised_as_an_error_is_the_same_refusal(tmp_path: Path) -> None:
    # Where warnings are errors (python -W error), Pillow's DecompressionBombWarning is raised:
    # it must still be a 422-style DatasetError, not an internal error.
    from PIL import Image

    path = tmp_path / "data.zip"
    path.write_bytes(image_zip(_folder_of(png_claiming(12_000, 12_000))))
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with pytest.raises(DatasetError, match="16,777,216 pixels per image"):
            check_archive_listing(path)
        with pytest.raises(DatasetError, match="16,777,216 pixels per image"):
            read_zip_images(path, (0.0, 1.0), test_fraction=0.5, seed=0)


@pytest.mark.parametrize("side", HUGE)
@pytest.mark.parametrize("kind", ["zip", "tar"])
def test_a_huge_image_is_refused_from_the_listing(side: int, kind: str, tmp_path: Path) -> None:
    images = _folder_of(png_claiming(side, side))
    path = tmp_path / f"data.{kind}"
    path.write_bytes(image_zip(images) if kind == "zip" else image_tar(images, "w:gz"))
    assert path.stat().st_size < 10_000
    with pytest.raises(DatasetError, match="per image") as refused:
        check_archive_listing(path)
    assert refused.value.fields["limit_pixels"] == MAX_IMAGE_PIXELS
    assert "4096x4096" in refused.value.hint


def test_a_dataset_of_many_large_images_is_refused_from_the_listing(tmp_path: Path) -> None:
    # Each image inside the per-image bound, 30 together past the dataset's.
    images = _folder_of(png_claiming(4096, 4096), per_class=15)
    assert MAX_DATASET_PIXELS < 30 * 4096 * 4096
    path = tmp_path / "data.zip"
    path.write_bytes(image_zip(images))
    with pytest.raises(DatasetError, match="limit per dataset") as refused:
        check_archive_listing(path)
    assert refused.value.fields["limit_pixels"] == MAX_DATASET_PIXELS


@pytest.mark.parametrize("side", HUGE)
def test_the_worker_refuses_a_huge_image_before_decoding_it(side: int, tmp_path: Path) -> None:
    root = tmp_path / "images"
    for name, data in _folder_of(png_claiming(side, side)).items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    with pytest.raises(DatasetError, match="per image") as refused:
        read_image_folder(root, (0.0, 1.0), test_fraction=0.5, seed=0, scratch_dir=scratch)
    assert refused.value.code == "invalid_dataset"
    assert list(scratch.iterdir()) == []


def test_the_worker_refuses_a_dataset_past_its_pixels_before_the_scratch_file(
    tmp_path: Path,
) -> None:
    # Real 4096x4096 PNGs (16 KB each): the first one is decoded, then the split's pixels are
    # known and refused before its scratch file is made.
    path = tmp_path / "data.zip"
    path.write_bytes(image_zip(_folder_of(_png(4096, 4096), per_class=20)))
    with pytest.raises(DatasetError, match="limit per dataset"):
        read_zip_images(path, (0.0, 1.0), test_fraction=0.2, seed=0, max_bytes=2**31)


def test_images_inside_the_bounds_are_read(tmp_path: Path) -> None:
    path = tmp_path / "data.zip"
    path.write_bytes(image_zip(_folder_of(_png(28, 28), per_class=4)))
    checked, _ = read_zip_images(path, (0.0, 1.0), test_fraction=0.5, seed=0)
    assert checked.x_train.shape[1:] == (1, 28, 28)


def test_an_npz_declaring_huge_images_is_refused_from_its_headers(tmp_path: Path) -> None:
    # Headers only: no data follows them, and none is read.
    x = npy_bytes(np.zeros((2, 1, 1, 1), np.uint8), header_shape=(2, 1, 5000, 5000))
    path = tmp_path / "huge.npz"
    path.write_bytes(npz_of_members({"x": x, "y": npy_bytes(np.array([0, 1]))}))
    with pytest.raises(DatasetError, match="per image") as refused:
        read_npz("upload", path, (0.0, 1.0), test_fraction=0.5, seed=0)
    assert refused.value.fields["limit_pixels"] == MAX_IMAGE_PIXELS
