"""Image-folder dataset archives (.zip, .tar, .tar.gz, .tar.bz2, .tar.xz): safe unpacking and
listing checks.

Layout: :mod:`core.datasets.layout`; the unpacked images are read by
:mod:`core.datasets.image_folder`.
Unpacking refuses absolute paths, ``..``, links and devices, and bounds the number of files and
the bytes decompressed, so a hostile archive cannot write outside the temporary folder, fill the
disk or hold a CPU. Every byte that comes out of a decompressor counts, headers, padding and
anything after the last entry included, counted as it comes out: no size an archive declares is
trusted. The bound is :data:`DEFAULT_MAX_BYTES`, and :data:`MAX_EXPANSION_RATIO` times the
archive's own size (plus :data:`EXPANSION_ALLOWANCE`): image files are compressed already, so a
real dataset expands little, while a bomb (a few KB of bzip2 holding gigabytes of zeros) is
refused after decompressing at most the allowance, a fraction of a second.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import shutil
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from core.datasets.layout import (
    DATASET_FORMS,
    IMAGE_SUFFIXES,
    ImageFolderLayout,
    image_folder_layout,
)
from core.datasets.pixels import HEADER_BYTES, PixelBudget, header_size
from core.errors import DatasetError

# What reading a damaged or cut-off archive raises, from tarfile and the decompressors under it.
UNREADABLE = (tarfile.TarError, EOFError, OSError, zlib.error, lzma.LZMAError)
DEFAULT_MAX_BYTES = 2 * 1024**3
# 200,000 images and their class folders fit; an inode budget, the byte budget applies too.
DEFAULT_MAX_FILES = 1_000_000
# PNG and JPEG files do not compress further (about 1x) and raw pixel formats (BMP, PPM) some
# 2-20x; a bomb expands a thousand times or more. Apache POI refuses zip entries past 100x.
MAX_EXPANSION_RATIO = 100
# What any archive may expand to whatever its size: small datasets of raw images are not refused
# for their ratio, and a bomb costs at most this much decompression (0.2 s of bzip2).
EXPANSION_ALLOWANCE = 64 * 1024**2
# No tar header (pax records, GNU long names) is legitimately anywhere near this; tarfile reads
# one whole into memory, so a larger one is refused before it is read.
MAX_TAR_HEADER_BYTES = 16 * 1024**2
_READ_CHUNK = 1 << 20


@dataclass(frozen=True)
class WorkBudget:
    """How many files and decompressed bytes reading one archive may cost."""

    archive_bytes: int  # the archive file's own size
    max_bytes: int = DEFAULT_MAX_BYTES
    max_files: int = DEFAULT_MAX_FILES

    @property
    def bytes(self) -> int:
        """The decompressed bytes allowed: ``max_bytes``, and at most
        :data:`MAX_EXPANSION_RATIO` times the archive plus :data:`EXPANSION_ALLOWANCE`."""
        expansion = MAX_EXPANSION_RATIO * self.archive_bytes + EXPANSION_ALLOWANCE
        return min(self.max_bytes, expansion)

    def check(self, count: int, total: int) -> None:
        """Refuse ``count`` files or ``total`` decompressed bytes past the budget."""
        if count > self.max_files:
            raise DatasetError(
                f"the archive holds more than {self.max_files} files",
                hint="upload fewer images",
                limit_files=self.max_files,
            )
        if total <= self.bytes:
            return
        if self.bytes == self.max_bytes:
            raise DatasetError(
                f"the archive unpacks to more than {self.max_bytes:,} bytes, the limit of a "
                "dataset archive",
                hint="upload fewer images",
                limit_bytes=self.max_bytes,
            )
        raise DatasetError(
            f"the archive unpacks to more than {self.bytes:,} bytes, the limit for an archive "
            f"of {self.archive_bytes:,} bytes ({MAX_EXPANSION_RATIO} times its size plus "
            f"{EXPANSION_ALLOWANCE // 1024**2} MiB): it expands like a decompression bomb",
            hint="store the images as PNG or JPEG files in a .zip or .tar (.gz): such an "
            "archive expands little and stays far inside the limit",
            limit_bytes=self.bytes,
        )


def work_budget(path: Path, max_bytes: int, max_files: int) -> WorkBudget:
    """The :class:`WorkBudget` of the archive at ``path``."""
    return WorkBudget(path.stat().st_size, max_bytes, max_files)


class BoundedStream:
    """A tar archive's decompressed bytes, counted as they come out of the decompressor and
    refused the moment they pass the budget: headers, padding and the bytes after the last
    entry included, whatever sizes the headers declare. Reads forward only (tarfile's seeks
    skip forward, through this count)."""

    def __init__(self, source: io.BufferedIOBase, budget: WorkBudget) -> None:
        self._source = source
        self._budget = budget
        self.position = 0

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            return b"".join(iter(lambda: self.read(_READ_CHUNK), b""))
        if size > MAX_TAR_HEADER_BYTES:
            # Entries are read in small chunks; only tarfile's pax / GNU long-name headers ask
            # for their whole declared size at once.
            raise DatasetError(
                f"the archive holds a tar header of {size} bytes (at most "
                f"{MAX_TAR_HEADER_BYTES} are read)",
                hint="re-create the archive with a standard tar tool",
            )
        # Never ask the decompressor for more than the budget leaves (plus one byte to see it
        # passed): memory and work stay bounded whatever ``size`` is.
        data = self._source.read(min(size, self._budget.bytes - self.position + 1))
        self.position += len(data)
        self._budget.check(0, self.position)
        return data

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        target = offset if whence == io.SEEK_SET else self.position + offset
        if whence not in (io.SEEK_SET, io.SEEK_CUR) or target < self.position:
            raise tarfile.ReadError("the archive is read forward only")
        while self.position < target and self.read(min(_READ_CHUNK, target - self.position)):
            pass
        return self.position

    def drain(self) -> None:
        """Read (and count) everything left: the bytes after the tar's end count too."""
        while self.read(_READ_CHUNK):
            pass


# The decompressor of a compressed tar, by its magic.
_DECOMPRESSORS: dict[bytes, Callable[[IO[bytes]], io.BufferedIOBase]] = {
    b"\x1f\x8b": lambda raw: gzip.GzipFile(fileobj=raw),
    b"BZh": bz2.BZ2File,
    b"\xfd7zXZ\x00": lzma.LZMAFile,
}


@contextmanager
def _decompressed(path: Path) -> Iterator[io.BufferedIOBase]:
    """The archive file's bytes, decompressed (gzip, bzip2, xz) by its magic, else as is."""
    with path.open("rb") as raw:
        magic = raw.read(6)
        raw.seek(0)
        decompressor = next((d for m, d in _DECOMPRESSORS.items() if magic.startswith(m)), None)
        if decompressor is None:
            yield raw
            return
        with decompressor(raw) as source:
            yield source


def _safe_member_path(name: str) -> PurePosixPath:
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or (path.parts and ":" in path.parts[0]):
        raise DatasetError(
            f"the archive entry {name!r} points outside the archive",
            hint="build the archive with relative paths (<class>/<image>)",
        )
    return path


def _check_image_header(data: bytes, name: str, pixels: PixelBudget) -> None:
    if PurePosixPath(name).suffix.lower() not in IMAGE_SUFFIXES:
        return
    size = header_size(data, f"image {name}")
    if size is not None:
        pixels.add(f"image {name}", *size)


def check_archive_listing(
    path: Path,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_files: int = DEFAULT_MAX_FILES,
    image_folder: bool = True,
) -> ImageFolderLayout | None:
    """Refuse, from its listing, an archive that unpacking or reading would refuse: entries
    pointing outside it (``..``, absolute paths), links, devices, a listing past the work budget
    (:class:`WorkBudget`), a truncated archive, images past the pixel bounds
    (:mod:`core.datasets.pixels`, from their headers) and a layout :mod:`core.datasets.layout`
    refuses (not for an .npz, ``image_folder=False``). No image is decoded, and no entry's data
    is inflated onto disk.

    For the API process, which must not spend minutes inflating a bomb only to refuse it: a
    zip's central directory gives every entry's size and kind, and the first bytes of each
    image give its size; a tar is decompressed as a stream (:class:`BoundedStream`: every byte
    counted, the bytes after its last entry too, stopped the moment the budget is passed),
    which also finds where it was cut off. Zip sizes can lie, so :func:`unpack_archive` and
    :mod:`core.datasets.zip_images` count again as they read. Returns the image-folder layout
    (None with ``image_folder=False``).
    """
    budget = work_budget(path, max_bytes, max_files)
    pixels = PixelBudget()
    dirs: list[PurePosixPath] = []
    files: list[PurePosixPath] = []
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                infos = archive.infolist()
                budget.check(len(infos), sum(i.file_size for i in infos))
                for info in infos:
                    member = check_zip_entry(info)
                    (dirs if info.is_dir() else files).append(member)
                if not image_folder:
                    return None
                layout = image_folder_layout(dirs, files)
                for info in infos:
                    if not info.is_dir():
                        with archive.open(info) as source:
                            head = source.read(min(HEADER_BYTES, info.file_size))
                        _check_image_header(head, info.filename, pixels)
            return layout
        data_end = 0
        with _decompressed(path) as source:
            stream = BoundedStream(source, budget)
            with tarfile.open(fileobj=stream, mode="r:") as archive:  # type: ignore[call-overload]
                for count, entry in enumerate(archive, start=1):
                    member = _check_tar_entry(entry)
                    (dirs if entry.isdir() else files).append(member)
                    data_end = max(data_end, entry.offset_data + entry.size)
                    # A declared size past the budget is refused before tarfile skips it.
                    budget.check(count, data_end)
                    if image_folder and entry.isfile():
                        content = archive.extractfile(entry)
                        assert content is not None
                        _check_image_header(
                            content.read(min(HEADER_BYTES, entry.size)), entry.name, pixels
                        )
            # tarfile stops quietly at the end of the data it has; the last entry's bytes must
            # all be there, and a compressed stream must end properly (EOFError if cut off).
            stream.drain()
            if data_end > stream.position:
                raise EOFError(f"the archive ends {data_end - stream.position} bytes too early")
        return image_folder_layout(dirs, files) if image_folder else None
    except (*UNREADABLE, zipfile.BadZipFile) as exc:
        raise DatasetError(
            f"the dataset archive cannot be read (truncated or damaged?): {exc}",
            hint="re-create the archive and upload it again in full",
        ) from exc


def check_zip_entry(info: zipfile.ZipInfo) -> PurePosixPath:
    member = _safe_member_path(info.filename)
    # Zip entries made from symlinks carry S_IFLNK in the upper 16 bits of external_attr;
    # other file types (devices, fifos) carry their own S_IFMT bits.
    kind = (info.external_attr >> 16) & 0o170000
    if kind == 0o120000:
        raise DatasetError(
            f"the archive entry {info.filename!r} is a symbolic link",
            hint="store the image files themselves, not links",
        )
    if kind not in (0, 0o100000, 0o040000):
        raise DatasetError(
            f"the archive entry {info.filename!r} is a special file (device, fifo or socket)",
            hint="store only folders and image files",
        )
    return member


def _check_tar_entry(info: tarfile.TarInfo) -> PurePosixPath:
    member = _safe_member_path(info.name)
    if not (info.isfile() or info.isdir()):
        kind = "link" if info.issym() or info.islnk() else "special file (device or fifo)"
        raise DatasetError(
            f"the archive entry {info.name!r} is a {kind}",
            hint="store the image files themselves, not links or devices",
        )
    return member


def unpack_archive(
    path: Path,
    dest: Path,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_files: int = DEFAULT_MAX_FILES,
) -> Path:
    """Unpack a zip or tar archive, plain or compressed (detected by content), into ``dest``
    and return ``dest``; every decompressed byte counts against the :class:`WorkBudget`."""
    dest = Path(dest).resolve()
    budget = work_budget(path, max_bytes, max_files)
    if zipfile.is_zipfile(path):
        _unpack_zip(path, dest, budget)
    elif is_tar(path):
        _unpack_tar(path, dest, budget)
    else:
        raise DatasetError(
            "the dataset file is neither an .npz, a zip nor a tar archive",
            hint=f"use {DATASET_FORMS}",
        )
    return dest


def is_tar(path: Path) -> bool:
    """Whether ``path`` is a tar archive (plain or compressed), by content: a compressed file
    counts even when damaged or cut off, so that it is refused as such."""
    try:
        with path.open("rb") as handle:
            # gzip, bzip2, xz: a file starting so is a compressed tar or nothing we read.
            if handle.read(6).startswith(tuple(_DECOMPRESSORS)):
                return True
        return tarfile.is_tarfile(path)
    except (OSError, EOFError, tarfile.TarError):
        return False


def _unpack_zip(path: Path, dest: Path, budget: WorkBudget) -> None:
    total = 0
    with zipfile.ZipFile(path) as archive:
        infos = archive.infolist()
        budget.check(len(infos), 0)
        for info in infos:
            member = check_zip_entry(info)
            target = dest.joinpath(*member.parts)
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            # Count the bytes actually inflated: the sizes in the header may lie.
            with archive.open(info) as source, target.open("wb") as sink:
                while chunk := source.read(_READ_CHUNK):
                    total += len(chunk)
                    budget.check(0, total)
                    sink.write(chunk)


def _unpack_tar(path: Path, dest: Path, budget: WorkBudget) -> None:
    try:
        with _decompressed(path) as source:
            stream = BoundedStream(source, budget)
            with tarfile.open(fileobj=stream, mode="r:") as archive:  # type: ignore[call-overload]
                for count, info in enumerate(archive, start=1):
                    member = _check_tar_entry(info)
                    budget.check(count, info.offset_data + info.size)
                    if info.isdir():
                        dest.joinpath(*member.parts).mkdir(parents=True, exist_ok=True)
                        continue
                    target = dest.joinpath(*member.parts)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    content = archive.extractfile(info)
                    if content is None:
                        raise DatasetError(f"cannot read archive entry {info.name!r}")
                    with content, target.open("wb") as sink:
                        shutil.copyfileobj(content, sink)
            stream.drain()
    except UNREADABLE as exc:
        raise DatasetError(
            f"the tar archive cannot be read: {exc}", hint="re-create the archive"
        ) from exc
