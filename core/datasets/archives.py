"""Image-folder dataset archives (.zip, .tar, .tar.gz): safe unpacking and listing checks.

Layout: :mod:`core.datasets.layout`; the unpacked images are read by
:mod:`core.datasets.image_folder`.
Unpacking refuses absolute paths, ``..``, links and devices, and bounds the total size and the
number of files, so a hostile archive cannot write outside the temporary folder or fill the disk.
"""

from __future__ import annotations

import lzma
import shutil
import tarfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from core.datasets.layout import DATASET_FORMS, ImageFolderLayout, image_folder_layout
from core.errors import DatasetError

# What reading a damaged or cut-off archive raises, from tarfile and the decompressors under it.
UNREADABLE = (tarfile.TarError, EOFError, OSError, zlib.error, lzma.LZMAError)
DEFAULT_MAX_BYTES = 2 * 1024**3
# 200,000 images and their class folders fit; an inode budget, the byte budget applies too.
DEFAULT_MAX_FILES = 1_000_000


def _safe_member_path(name: str) -> PurePosixPath:
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or (path.parts and ":" in path.parts[0]):
        raise DatasetError(
            f"the archive entry {name!r} points outside the archive",
            hint="build the archive with relative paths (<class>/<image>)",
        )
    return path


def _budget(count: int, total: int, max_files: int, max_bytes: int) -> None:
    if count > max_files:
        raise DatasetError(
            f"the archive holds more than {max_files} files", hint="upload fewer images"
        )
    if total > max_bytes:
        raise DatasetError(
            f"the archive unpacks to more than {max_bytes} bytes", hint="upload fewer images"
        )


def check_archive_listing(
    path: Path,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_files: int = DEFAULT_MAX_FILES,
    image_folder: bool = True,
) -> ImageFolderLayout | None:
    """Refuse, from its listing, an archive that unpacking or reading would refuse: entries
    pointing outside it (``..``, absolute paths), links, devices, a listing past the budget, a
    truncated archive, and a layout :mod:`core.datasets.layout` refuses (not for an .npz,
    ``image_folder=False``). No entry's data is
    inflated into memory or onto disk.

    For the API process, which must not spend minutes inflating a zip bomb only to refuse it:
    a zip's central directory gives every entry's size and kind; a tar's headers are read in
    order (a compressed tar is decompressed as a stream to do so, which also finds where it was
    cut off) and the walk stops at the first entry refused. Sizes can lie, so
    :func:`unpack_archive` and :mod:`core.datasets.zip_images` check everything again as they
    read. Returns the image-folder layout (None with ``image_folder=False``).
    """
    dirs: list[PurePosixPath] = []
    files: list[PurePosixPath] = []
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                infos = archive.infolist()
                _budget(len(infos), sum(i.file_size for i in infos), max_files, max_bytes)
                for info in infos:
                    member = check_zip_entry(info)
                    (dirs if info.is_dir() else files).append(member)
            return image_folder_layout(dirs, files) if image_folder else None
        total = data_end = 0
        with tarfile.open(path, mode="r:*") as archive:
            for count, entry in enumerate(archive, start=1):
                member = _check_tar_entry(entry)
                (dirs if entry.isdir() else files).append(member)
                total += entry.size
                _budget(count, total, max_files, max_bytes)
                data_end = max(data_end, entry.offset_data + entry.size)
            # tarfile stops quietly at the end of the data it has; the last entry's bytes must
            # all be there, and a compressed stream must end properly (EOFError if cut off).
            stream = archive.fileobj
            assert stream is not None
            while stream.read(1 << 20):
                pass
            if data_end > stream.tell():
                raise EOFError(f"the archive ends {data_end - stream.tell()} bytes too early")
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
    """Unpack a zip or tar(.gz) archive (detected by content) into ``dest`` and return ``dest``."""
    dest = Path(dest).resolve()
    if zipfile.is_zipfile(path):
        _unpack_zip(path, dest, max_bytes, max_files)
    elif is_tar(path):
        _unpack_tar(path, dest, max_bytes, max_files)
    else:
        raise DatasetError(
            "the dataset file is neither an .npz, a zip nor a tar archive",
            hint=f"use {DATASET_FORMS}",
        )
    return dest


# gzip, bzip2 and xz: a file starting so is a compressed tar or nothing the service reads.
COMPRESSED_MAGIC = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00")


def is_tar(path: Path) -> bool:
    """Whether ``path`` is a tar archive (plain or compressed), by content: a compressed file
    counts even when damaged or cut off, so that it is refused as such."""
    try:
        with path.open("rb") as handle:
            if handle.read(6).startswith(COMPRESSED_MAGIC):
                return True
        return tarfile.is_tarfile(path)
    except (OSError, EOFError, tarfile.TarError):
        return False


def _unpack_zip(path: Path, dest: Path, max_bytes: int, max_files: int) -> None:
    total = 0
    with zipfile.ZipFile(path) as archive:
        infos = archive.infolist()
        _budget(len(infos), 0, max_files, max_bytes)
        for info in infos:
            member = check_zip_entry(info)
            target = dest.joinpath(*member.parts)
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            # Count the bytes actually inflated: the sizes in the header may lie.
            with archive.open(info) as source, target.open("wb") as sink:
                while chunk := source.read(1 << 20):
                    total += len(chunk)
                    _budget(0, total, max_files, max_bytes)
                    sink.write(chunk)


def _unpack_tar(path: Path, dest: Path, max_bytes: int, max_files: int) -> None:
    total = 0
    try:
        with tarfile.open(path, mode="r:*") as archive:
            for count, info in enumerate(archive, start=1):
                _budget(count, total, max_files, max_bytes)
                member = _check_tar_entry(info)
                if info.isdir():
                    dest.joinpath(*member.parts).mkdir(parents=True, exist_ok=True)
                    continue
                total += info.size
                _budget(count, total, max_files, max_bytes)
                target = dest.joinpath(*member.parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                source = archive.extractfile(info)
                if source is None:
                    raise DatasetError(f"cannot read archive entry {info.name!r}")
                with source, target.open("wb") as sink:
                    shutil.copyfileobj(source, sink)
    except UNREADABLE as exc:
        raise DatasetError(
            f"the tar archive cannot be read: {exc}", hint="re-create the archive"
        ) from exc
