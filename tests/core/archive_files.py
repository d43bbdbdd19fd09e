"""Archive files for the tests of upload checks (core and API)."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import struct
import tarfile
import zipfile
import zlib

import numpy as np


def zip_claiming(size: int) -> bytes:
    """A one-entry zip whose central directory claims ``size`` uncompressed bytes (< 4 GiB)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("train/a/zeros.png", b"\0" * 1000)
    data = bytearray(buffer.getvalue())
    central = data.rfind(b"PK\x01\x02")  # the central directory entry
    data[central + 24 : central + 28] = size.to_bytes(4, "little")  # its uncompressed size
    return bytes(data)


def _tar(entries: list[tuple[tarfile.TarInfo, bytes | None]], mode: str = "w") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as archive:  # type: ignore[call-overload]
        for info, data in entries:
            archive.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def _entry(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", link: str = ""):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    return info, data if kind == tarfile.REGTYPE else None


def _zip(name: str, data: bytes = b"x", file_type: int = 0o100644) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        info = zipfile.ZipInfo(name)
        info.external_attr = file_type << 16
        archive.writestr(info, data)
    return buffer.getvalue()


def image_folder_tar_gz(images: int = 40) -> bytes:
    """A well-formed image-folder .tar.gz (train/ and test/, two classes)."""
    entries = [
        _entry(f"{split}/{label}/{index}.png", data=bytes(range(256)) * 8)
        for split in ("train", "test")
        for label in ("a", "b")
        for index in range(images // 4)
    ]
    return _tar(entries, "w:gz")


def hostile_archives() -> dict[str, bytes]:
    """Dataset archives the service must refuse at upload (422), by what is wrong with them."""
    good_gz = image_folder_tar_gz()
    plain = _tar([_entry(f"train/a/{i}.png", data=b"\1" * 5000) for i in range(4)])
    return {
        "tar: ../ entry": _tar([_entry("../escaped.png", data=b"x")]),
        "tar: absolute path": _tar([_entry("/etc/cron.d/escaped", data=b"x")]),
        "tar: symlink": _tar([_entry("train/a/x.png", tarfile.SYMTYPE, link="/etc/passwd")]),
        "tar: hardlink": _tar([_entry("train/a/x.png", tarfile.LNKTYPE, link="/etc/passwd")]),
        "tar: character device": _tar([_entry("train/a/tty", tarfile.CHRTYPE)]),
        "tar: fifo": _tar([_entry("train/a/pipe", tarfile.FIFOTYPE)]),
        "zip: ../ entry": _zip("../escaped.png"),
        "zip: absolute path": _zip("/tmp/escaped.png"),
        "zip: symlink": _zip("train/a/x.png", b"/etc/passwd", 0o120777),
        "zip: device": _zip("train/a/tty", b"", 0o020644),
        "tar.gz: truncated in half": good_gz[: len(good_gz) // 2],
        "tar.gz: cut before its end": good_gz[:-5],
        "tar.gz: header only": good_gz[:12],
        "tar: cut inside an entry": plain[: 512 * 3 + 100],
        "tar: one class folder, nothing to split": _tar([_entry("images/a/1.png", data=b"x")]),
        "tar: train/ alone, one class": plain,
        "tar: test/ without train/": _tar([_entry("test/a/1.png", data=b"x")]),
        "zip: a class with one image, too few to split": _zip_tree(
            ["cat/1.png", "cat/2.png", "dog/3.png"]
        ),
        "zip: train/ and test/ classes differ": _zip_tree(
            ["train/cat/1.png", "train/dog/2.png", "test/cat/3.png", "test/bird/4.png"]
        ),
        "zip: test/ holds no images": _zip_tree(["train/a/1.png", "test/a/notes.txt"]),
    }


def _zip_tree(names: list[str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name in names:
            archive.writestr(name, b"x")
    return buffer.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A grayscale PNG whose header says ``width`` x ``height``, with a few bytes of pixel data:
    a few hundred bytes that would decode to ``width * height`` pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return len(data).to_bytes(4, "big") + body + zlib.crc32(body).to_bytes(4, "big")

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    pixels = zlib.compress(b"\0" * (width + 1))  # the first row: filter byte and zeros
    chunks = chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + chunks


def image_zip(images: dict[str, bytes]) -> bytes:
    """An image-folder zip of ``images`` by path (stored: image files are compressed already)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in images.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def image_tar(images: dict[str, bytes], mode: str = "w") -> bytes:
    """An image-folder tar of ``images`` by path (``mode`` "w:gz" etc. compresses it)."""
    return _tar([_entry(name, data=data) for name, data in images.items()], mode)


# Each compressor's stream of 16 MiB of zeros, repeated: gzip, bzip2 and xz files may hold many
# streams one after the other, read as one. bzip2 packs the most zeros per byte.
_ZEROS = 16 * 1024**2
_COMPRESS = {"gz": gzip.compress, "bz2": bz2.compress, "xz": lzma.compress}


def tar_bomb(compression: str, zero_bytes: int, *, inside: bool = False) -> bytes:
    """A compressed image-folder tar with ``zero_bytes`` of zeros after its end (the bytes
    tarfile never reads), or, ``inside``, as one entry's declared data."""
    images = {f"{label}/{index}.png": png_claiming(8, 8) for label in "ab" for index in range(2)}
    compress = _COMPRESS[compression]
    if inside:
        entries = [_entry(n, data=d) for n, d in images.items()]
        entries.append(_entry("a/zeros.png"))
        entries[-1][0].size = zero_bytes
        # The entries' headers and data, no end-of-archive blocks: the zeros follow the header.
        head = b"".join(info.tobuf() + data + bytes(-len(data) % 512) for info, data in entries)
    else:
        head = image_tar(images)
    return compress(head) + compress(bytes(_ZEROS)) * (zero_bytes // _ZEROS)


def tar_with_pax_header(size: int) -> bytes:
    """A .tar.bz2 whose first header is a pax header declaring ``size`` bytes (of zeros)."""
    info = tarfile.TarInfo("pax")
    info.type, info.size = tarfile.XHDTYPE, size
    return bz2.compress(info.tobuf()) + bz2.compress(bytes(_ZEROS)) * (size // _ZEROS + 1)


def malformed_npz() -> dict[str, bytes]:
    """.npz files whose x.npy header is cut off or malformed (y is well formed): each must be
    a 422 at upload and a DatasetError in the worker, never a 500."""
    good = _npy(np.zeros((4, 1, 8, 8), np.float32))

    def header(text: bytes, version: bytes = b"\x01\x00") -> bytes:
        padded = text.ljust(117) + b"\n"
        return b"\x93NUMPY" + version + len(padded).to_bytes(2, "little") + padded

    cases = {
        "cut in the magic": good[:3],
        "magic only": good[:8],
        "cut in the header": good[:30],
        "unbalanced header": header(b"{'descr': '<f4', 'shape': (4, 1, 8, 8"),
        "a call in the header": header(b"{'descr': f(), 'fortran_order': False, 'shape': (4,)}"),
        "unknown version": b"\x93NUMPY\x09\x00" + good[8:],
        "negative shape": header(b"{'descr': '<f4', 'fortran_order': False, 'shape': (-4, 8)}"),
        "shape past any size": header(
            b"{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999, 8)}"
        ),
        "not an .npy at all": b"PNG or anything",
    }
    labels = _npy(np.array([0, 1, 0, 1]))
    return {f"npz: {name}": _npz({"x": data, "y": labels}) for name, data in cases.items()}


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _npz(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name + ".npy", data)
    return buffer.getvalue()
