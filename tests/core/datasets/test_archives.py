"""core.datasets.archives bounded in work: every decompressed byte counts, the bytes after a tar's
last entry included, and reading stops the moment the budget is passed (issue 25)."""

from __future__ import annotations

import bz2
import gzip
import lzma
from pathlib import Path

import pytest

from core.datasets import archives
from core.datasets.archives import (
    EXPANSION_ALLOWANCE,
    MAX_EXPANSION_RATIO,
    check_archive_listing,
    unpack_archive,
)
from core.errors import DatasetError
from tests.core.archive_files import image_tar, png_claiming, tar_bomb, tar_with_pax_header

GIB = 1024**3
# The zeros each bomb holds: enough to be past its expansion bound many times over. (gzip
# cannot pack more than about 1,000 zeros per byte, so its bomb is a smaller one.)
BOMBS = {"bz2": 8 * GIB, "xz": 1 * GIB, "gz": GIB // 4}


class _Counted:
    """The decompressors of core.datasets.archives, counting the bytes they hand out."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.bytes = 0
        originals = dict(archives._DECOMPRESSORS)
        for magic, make in originals.items():
            monkeypatch.setitem(archives._DECOMPRESSORS, magic, self._wrap(make))

    def _wrap(self, make):  # type: ignore[no-untyped-def]
        def counted(raw):  # type: ignore[no-untyped-def]
            source = make(raw)
            read = source.read

            def counting_read(size: int = -1) -> bytes:
                data = read(size)
                self.bytes += len(data)
                return data

            source.read = counting_read
            return source

        return counted


def _limit(path: Path) -> int:
    return MAX_EXPANSION_RATIO * path.stat().st_size + EXPANSION_ALLOWANCE


@pytest.mark.parametrize("compression", sorted(BOMBS))
@pytest.mark.parametrize("where", ["after the last entry", "inside an entry"])
@pytest.mark.parametrize("read", ["listing", "unpacking"])
def test_a_compressed_tar_bomb_is_refused_after_its_expansion_limit(
    compression: str, where: str, read: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / f"bomb.tar.{compression}"
    path.write_bytes(tar_bomb(compression, BOMBS[compression], inside=where == "inside an entry"))
    counted = _Counted(monkeypatch)
    with pytest.raises(DatasetError) as refused:
        if read == "listing":
            check_archive_listing(path)
        else:
            unpack_archive(path, tmp_path / "out")
    error = refused.value
    assert "unpacks to more than" in error.message and "decompression bomb" in error.message
    assert error.fields["limit_bytes"] == _limit(path) < 100 * 1024**2
    assert "PNG or JPEG" in error.hint
    # Decompression stopped at the limit (within one read), not at the end of the zeros, and
    # nothing past the limit reached the disk.
    assert counted.bytes <= error.fields["limit_bytes"] + 1
    unpacked = sum(f.stat().st_size for f in tmp_path.rglob("*") if f.is_file() and f != path)
    assert unpacked <= error.fields["limit_bytes"]


def test_the_issue_bomb_is_a_few_kilobytes_refused_from_64_mib(tmp_path: Path) -> None:
    # 8 GiB of zeros after a real tar's end, in about 30 KB of bzip2 (the issue's had 6.5 KB).
    path = tmp_path / "bomb.tar.bz2"
    path.write_bytes(tar_bomb("bz2", 8 * GIB))
    assert path.stat().st_size < 64 * 1024
    with pytest.raises(DatasetError, match="expands like a decompression bomb"):
        check_archive_listing(path)


def test_a_huge_pax_header_is_refused_before_it_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # tarfile reads a pax header whole into memory: its declared size is refused first.
    path = tmp_path / "pax.tar.bz2"
    path.write_bytes(tar_with_pax_header(GIB))
    counted = _Counted(monkeypatch)
    with pytest.raises(DatasetError, match="a tar header of 1073741824 bytes"):
        check_archive_listing(path)
    assert counted.bytes < 1024**2


def test_the_absolute_byte_bound_still_holds_for_a_large_archive(tmp_path: Path) -> None:
    images = {f"{label}/{index}.png": png_claiming(8, 8) for label in "ab" for index in range(4)}
    path = tmp_path / "plain.tar"
    path.write_bytes(image_tar(images))
    assert check_archive_listing(path) is not None
    with pytest.raises(DatasetError, match="more than 4,000 bytes, the limit of a dataset") as e:
        check_archive_listing(path, max_bytes=4000)
    assert e.value.fields["limit_bytes"] == 4000


@pytest.mark.parametrize("compress", [gzip.compress, bz2.compress, lzma.compress])
def test_real_compressed_image_folders_stay_inside_the_bounds(compress, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    images = {f"{label}/{index}.png": png_claiming(28, 28) for label in "ab" for index in range(50)}
    path = tmp_path / "images.tar.x"
    path.write_bytes(compress(image_tar(images)))
    layout = check_archive_listing(path)
    assert layout is not None and layout.counts() == {"all": 100}
    out = unpack_archive(path, tmp_path / "out")
    assert sorted(p.name for p in (out / "a").iterdir())[:2] == ["0.png", "1.png"]


def test_trailing_bytes_of_a_plain_tar_are_read_and_counted(tmp_path: Path) -> None:
    images = {f"{label}/{index}.png": png_claiming(8, 8) for label in "ab" for index in range(2)}
    path = tmp_path / "trailing.tar"
    path.write_bytes(image_tar(images) + bytes(50_000))
    # Uncompressed, the file's own size bounds the work: accepted by the expansion bound...
    assert check_archive_listing(path) is not None
    # ...and counted against the absolute one, though no entry declares them.
    with pytest.raises(DatasetError, match="unpacks to more than"):
        check_archive_listing(path, max_bytes=len(image_tar(images)) + 10_000)
