"""core.datasets.references: builtin splits, .npz uploads, image-folder archives, refusals."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from core.datasets.references import load_dataset
from core.errors import DatasetError


def _arrays(n_train: int = 12, n_test: int = 6, shape: tuple[int, ...] = (1, 5, 5)) -> dict:
    rng = np.random.default_rng(0)
    return {
        "x_train": rng.random((n_train, *shape)).astype(np.float32),
        "y_train": np.arange(n_train) % 3,
        "x_test": rng.random((n_test, *shape)).astype(np.float32),
        "y_test": np.arange(n_test) % 3,
    }


def _npz(tmp_path: Path, **arrays: np.ndarray) -> Path:
    path = tmp_path / "data.npz"
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize(
    ("ref", "train", "test", "shape"),
    [("builtin:mnist", 4000, 1000, (1, 28, 28)), ("builtin:digits", 1437, 360, (1, 8, 8))],
)
def test_builtin_split_sizes_ranges_and_determinism(ref, train, test, shape) -> None:
    first = load_dataset(ref)
    second = load_dataset(ref)  # a fixed split: every job is scored on the same test images
    assert first.x_train.shape == (train, *shape) and first.x_test.shape == (test, *shape)
    assert first.input_shape == shape and first.num_classes == 10
    assert first.x_train.dtype == torch.float32 and first.y_train.dtype == torch.int64
    assert float(first.x_train.min()) >= 0.0 and float(first.x_train.max()) <= 1.0
    assert float(first.x_train.max()) > 0.9  # scaled to the range, not squashed
    assert torch.equal(first.x_test, second.x_test) and torch.equal(first.y_train, second.y_train)
    # stratified: every class is in the test split in about equal share
    counts = torch.bincount(first.y_test, minlength=10)
    assert int(counts.min()) >= test // 10 - 1


def test_builtin_rescaled_to_input_range() -> None:
    data = load_dataset("builtin:digits", input_range=(-1.0, 1.0))
    assert float(data.x_train.min()) == -1.0 and float(data.x_train.max()) == 1.0


def test_npz_float_nchw_round_trip(tmp_path: Path) -> None:
    arrays = _arrays()
    data = load_dataset(str(_npz(tmp_path, **arrays)))
    assert np.allclose(data.x_train.numpy(), arrays["x_train"])
    assert data.num_classes == 3 and data.class_names == ["0", "1", "2"]
    assert data.input_shape == (1, 5, 5)
    assert data.conversions == ()  # stored as used: nothing to say


def test_npz_uint8_nhwc_and_file_uri(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (8, 6, 7, 3), dtype=np.uint8)
    path = _npz(tmp_path, x_train=x, y_train=np.arange(8) % 2, x_test=x[:4], y_test=[0, 1, 0, 1])
    data = load_dataset(path.as_uri(), input_range=(0.0, 1.0))
    assert data.input_shape == (3, 6, 7)
    assert torch.allclose(data.x_train[0, 2], torch.from_numpy(x[0, :, :, 2] / 255).float())
    # Both conversions are said, not done silently (the report's notes and input list them).
    transposed, scaled = data.conversions
    assert "channels-last (N, H, W, C) (8, 6, 7, 3)" in transposed and "(N, C, H, W)" in transposed
    assert scaled == "uint8 images were scaled from 0..255 to the input_range [0, 1]"


def test_npz_three_dim_grayscale(tmp_path: Path) -> None:
    arrays = _arrays(shape=(4, 6))
    data = load_dataset(str(_npz(tmp_path, **arrays)))
    assert data.x_train.shape == (12, 1, 4, 6)
    assert data.conversions == ("images stored as (N, H, W) (12, 4, 6) were given one channel",)


def test_upload_reference(tmp_path: Path) -> None:
    data = load_dataset("upload", upload=_npz(tmp_path, **_arrays()))
    assert data.reference == "upload" and len(data.x_test) == 6


def _bad(arrays: dict, key: str, value: object) -> dict:
    changed = dict(arrays)
    if value is None:
        del changed[key]
    else:
        changed[key] = value
    return changed


BASE = _arrays()


@pytest.mark.parametrize(
    ("arrays", "words"),
    [
        (_bad(BASE, "y_test", None), "y_test"),
        (_bad(BASE, "y_train", np.arange(12) - 1), "negative"),
        (_bad(BASE, "y_test", np.full(6, 7)), "never occur in y_train"),
        (_bad(BASE, "y_train", np.linspace(0, 2, 12)), "non-integer"),
        (_bad(BASE, "y_train", np.arange(11) % 3), "11 labels"),
        (_bad(BASE, "x_test", BASE["x_test"][:, :, :4]), "shape"),
        (_bad(BASE, "x_train", np.where(np.eye(5) > 0, np.nan, BASE["x_train"])), "NaN"),
        (_bad(BASE, "x_train", BASE["x_train"] * 300), "outside the input_range"),
        (_bad(_bad(BASE, "x_test", BASE["x_test"][:0]), "y_test", np.zeros(0, int)), "empty"),
        (_bad(BASE, "y_train", np.zeros(12, int)), "at least 2"),
        (_bad(BASE, "x_train", np.zeros((12, 2, 5, 5, 1), np.float32)), "shape"),
        (_bad(BASE, "x_train", np.full((12, 1, 5, 5), "a")), "dtype"),
    ],
)
def test_malformed_npz_is_refused_with_the_problem_named(
    tmp_path: Path, arrays: dict, words: str
) -> None:
    with pytest.raises(DatasetError) as info:
        load_dataset(str(_npz(tmp_path, **arrays)))
    assert words in info.value.message
    assert info.value.hint


def test_object_arrays_are_refused_without_unpickling(tmp_path: Path) -> None:
    arrays = dict(BASE)
    arrays["y_train"] = np.array([object()] * 12, dtype=object)
    with pytest.raises(DatasetError, match="object arrays"):
        load_dataset(str(_npz(tmp_path, **arrays)))


@pytest.mark.parametrize("ref", ["ftp://host/data.npz", "gs://bucket/x.npz"])
def test_other_uri_schemes_are_refused(ref: str) -> None:
    with pytest.raises(DatasetError, match="scheme"):
        load_dataset(ref)


@pytest.mark.parametrize("ref", ["s3://bucket/data.npz", "http://example.com/x.npz"])
def test_fetched_references_are_the_services(ref: str) -> None:
    # harden run reads local files; s3:// and https:// are fetched by the service's worker.
    with pytest.raises(DatasetError, match="worker fetches"):
        load_dataset(ref)


def test_missing_and_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset(str(tmp_path / "nope.npz"))
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(DatasetError, match="neither"):
        load_dataset(str(junk))


def _png(colour: int, size: tuple[int, int] = (6, 5), mode: str = "L") -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new(mode, size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def _folder_entries(odd: str | None = None) -> dict[str, bytes]:
    entries = {}
    for split, count in (("train", 3), ("test", 2)):
        for label, name in enumerate(["cat", "dog"]):
            for i in range(count):
                entries[f"{split}/{name}/{i}.png"] = _png(40 * label + 10 * i)
    if odd:
        entries[odd] = _png(0, size=(7, 7))
    return entries


@pytest.mark.parametrize("kind", ["zip", "tar.gz"])
def test_image_folder_archive_round_trip(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "images.bin"  # misleading name: detected by content
    entries = _folder_entries()
    if kind == "zip":
        with zipfile.ZipFile(path, "w") as archive:
            for name, data in entries.items():
                archive.writestr(f"root/{name}", data)
    else:
        with tarfile.open(path, "w:gz") as archive:
            for name, data in entries.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
    data = load_dataset(str(path))
    assert data.class_names == ["cat", "dog"] and data.num_classes == 2
    assert data.x_train.shape == (6, 1, 5, 6) and data.x_test.shape == (4, 1, 5, 6)
    assert data.y_train.tolist() == [0, 0, 0, 1, 1, 1]
    # dog/2.png was filled with grey level 60: scaled /255 exactly
    assert torch.allclose(data.x_train[5], torch.full((1, 5, 6), 60 / 255))


@pytest.mark.parametrize(
    ("odd", "named"),
    [("test/dog/odd.png", "odd.png"), ("train/bird/x.png", "bird")],
    ids=["odd_size", "class_mismatch"],
)
def test_image_folder_refusal_names_the_culprit(tmp_path: Path, odd: str, named: str) -> None:
    path = tmp_path / "images.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in _folder_entries(odd=odd).items():
            archive.writestr(name, data)
    with pytest.raises(DatasetError, match=named):
        load_dataset(str(path))


def test_zip_with_parent_path_writes_nothing_outside(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    path = work / "evil.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in _folder_entries().items():
            archive.writestr(name, data)
        archive.writestr("../escaped.png", _png(1))
    with pytest.raises(DatasetError, match="outside"):
        load_dataset(str(path))
    assert not (tmp_path / "escaped.png").exists()
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["evil.zip", "work"]


@pytest.mark.parametrize("link", ["symlink", "hardlink", "absolute"])
def test_tar_with_links_or_absolute_paths_is_refused(tmp_path: Path, link: str) -> None:
    path = tmp_path / "evil.tar"
    outside = tmp_path / "outside.png"
    with tarfile.open(path, "w") as archive:
        for name, data in _folder_entries().items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        if link == "absolute":
            data = _png(1)
            info = tarfile.TarInfo(str(outside))
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        else:
            info = tarfile.TarInfo("train/cat/link.png")
            info.type = tarfile.SYMTYPE if link == "symlink" else tarfile.LNKTYPE
            info.linkname = "/etc/passwd"
            archive.addfile(info)
    with pytest.raises(DatasetError, match="link|outside"):
        load_dataset(str(path))
    assert not outside.exists()


def test_archive_size_and_count_bounds(tmp_path: Path) -> None:
    from core.datasets.archives import unpack_archive

    path = tmp_path / "big.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("train/a/zeros.png", b"\0" * 100_000)
        archive.writestr("train/a/b.png", b"x")
    with pytest.raises(DatasetError, match="bytes"):
        unpack_archive(path, tmp_path / "out1", max_bytes=10_000)
    with pytest.raises(DatasetError, match="files"):
        unpack_archive(path, tmp_path / "out2", max_files=1)


def test_declared_budget_refuses_from_the_listing_alone(tmp_path: Path) -> None:
    from core.datasets.archives import check_archive_listing
    from tests.core.archive_files import zip_claiming

    # A zip whose one entry claims 3 GiB: the listing alone is refused; the (tiny, and now
    # mismatching) data is never inflated, or the CRC/size check would fail first instead.
    path = tmp_path / "bomb.zip"
    path.write_bytes(zip_claiming(3 * 1024**3))
    with pytest.raises(DatasetError, match="unpacks to more than"):
        check_archive_listing(path)
    # Where max_bytes allows 3 GiB, the claim is still 100 times past the archive's own size.
    with pytest.raises(DatasetError, match="decompression bomb") as refused:
        check_archive_listing(path, max_bytes=4 * 1024**3)
    assert refused.value.fields["limit_bytes"] == 100 * path.stat().st_size + 64 * 1024**2
    # Within budget: the listing passes the budget and its layout is read (one class only).
    path.write_bytes(zip_claiming(5000))
    with pytest.raises(DatasetError, match="a classifier needs at least 2"):
        check_archive_listing(path)

    tar_path = tmp_path / "many.tar.gz"
    with tarfile.open(tar_path, "w:gz") as archive:
        for index in range(5):
            info = tarfile.TarInfo(f"train/a/{index}.png")
            info.size = 1000
            archive.addfile(info, io.BytesIO(b"\0" * 1000))
    with pytest.raises(DatasetError, match="more than 3 files"):
        check_archive_listing(tar_path, max_files=3)
    with pytest.raises(DatasetError, match="unpacks to more than"):
        check_archive_listing(tar_path, max_bytes=2500)
    # Within budget: the layout is read (one class in train/, nothing to split).
    with pytest.raises(DatasetError, match="a classifier needs at least 2"):
        check_archive_listing(tar_path)


def test_a_pre_normalised_npz_is_pointed_at_normalization(tmp_path: Path) -> None:
    # The hint suggested rescaling or input_range only; normalization was the right fix for
    # images stored as (x - mean) / std.
    standardised = (BASE["x_train"] - 0.5) / 0.1
    with pytest.raises(DatasetError) as info:
        load_dataset(str(_npz(tmp_path, **_bad(BASE, "x_train", standardised))))
    assert "normalization" in info.value.hint and "input_range" in info.value.hint
