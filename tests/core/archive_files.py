"""Archive files for the tests of upload checks (core and API)."""

from __future__ import annotations

import io
import tarfile
import zipfile


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
