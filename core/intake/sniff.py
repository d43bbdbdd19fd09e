"""Recognise an uploaded model file by its content, never by its name, and never unpickle it.

No torch import: the web API calls :func:`sniff_format` to refuse a bad upload before queueing.
"""

from __future__ import annotations

import json
import struct
import zipfile
import zlib
from pathlib import Path

from core.errors import HardenError, UnsafeModelError, UnsupportedModelError
from core.intake.operators import check_operators

ACCEPTED = "TorchScript (torch.jit.save), torch.export (.pt2), ONNX, safetensors + a zoo name"
DEFAULT_MAX_MODEL_BYTES = 2 * 1024**3
_RESAVE_HINT = (
    "re-save the model with torch.jit.save(torch.jit.script(model), path), "
    "torch.export.save(torch.export.export(model, (sample,)), path), torch.onnx.export, or "
    "safetensors.torch.save_file(model.state_dict(), path) plus a zoo architecture name"
)
_MAX_CONFIG_BYTES = 16 * 1024**2  # JSON configs inside a .pt2 are small; bound what we read
# ModelProto's first field as written by the exporters: ir_version (1, varint) is first in
# practice; the others (producer_name 2, graph 7, opset_import 8...) are accepted as well.
_ONNX_FIRST_TAGS = {0x08, 0x12, 0x1A, 0x22, 0x28, 0x32, 0x3A, 0x42, 0x72}


def sniff_format(path: Path, *, max_bytes: int = DEFAULT_MAX_MODEL_BYTES) -> str:
    """One of 'torchscript', 'torch_export', 'onnx', 'safetensors' for a loadable file.

    Raises UnsafeModelError for pickles (including ``torch.save`` files), for .pt2 archives
    whose loading would unpickle and for models holding an operator outside the allowlist
    (:mod:`core.intake.operators`), and UnsupportedModelError for anything else.
    """
    try:
        fmt = _sniff(path, max_bytes=max_bytes)
        check_operators(path, fmt)
    except HardenError:
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, ValueError, NotImplementedError) as exc:
        # A damaged archive or protobuf (UnicodeDecodeError is a ValueError): the parsers raise
        # many types, none of them the user's fix.
        raise UnsupportedModelError(
            f"the model file is damaged: {type(exc).__name__}: {str(exc)[:200]}",
            hint=f"save the model again and upload the whole file; accepted: {ACCEPTED}",
            format=None,
        ) from exc
    return fmt


def _sniff(path: Path, *, max_bytes: int) -> str:
    path = Path(path)
    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            head = handle.read(64)
    except OSError as exc:
        raise UnsupportedModelError(
            f"cannot read the model file: {exc}", hint="upload the model file again"
        ) from exc
    if size == 0:
        raise UnsupportedModelError(
            "the model file is empty", hint=f"upload a model saved as {ACCEPTED}", format=None
        )
    if size > max_bytes:
        raise UnsupportedModelError(
            f"the model file has {size} bytes, over the limit of {max_bytes}",
            hint="upload a smaller model",
        )
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return _sniff_zip(path)
    # Safetensors first: its 8-byte length prefix may begin with 0x80 0x02..0x05 like a pickle,
    # and its check (a JSON header that describes the rest of the file) is strict.
    if _is_safetensors(path, head, size):
        return "safetensors"
    if _looks_like_pickle(path, head, size):
        raise UnsafeModelError(
            "the model file is a Python pickle, which runs arbitrary code when loaded; it was "
            "not opened",
            hint=_RESAVE_HINT,
            format="pickle",
        )
    if head[0] in _ONNX_FIRST_TAGS and _is_onnx(path):
        return "onnx"
    raise UnsupportedModelError(
        "the model file's format is not recognised",
        hint=f"accepted formats: {ACCEPTED}",
        format=None,
    )


def _looks_like_pickle(path: Path, head: bytes, size: int) -> bool:
    # Protocol 2+ starts with PROTO (0x80) and the protocol number; torch.save's legacy
    # (non-zip) format is a sequence of such pickles.
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return True
    # Protocols 0/1 have no header; they start with an opcode such as MARK '(' or GLOBAL 'c'
    # and end with STOP '.'.
    if head[:1] in (b"(", b"c", b"]", b"}", b"I", b"S", b"V") and size > 1:
        with path.open("rb") as handle:
            handle.seek(size - 1)
            return handle.read(1) == b"."
    return False


def _is_safetensors(path: Path, head: bytes, size: int) -> bool:
    # Layout: 8-byte little-endian header length, a JSON object header, then the raw buffer.
    if len(head) < 10:
        return False
    (header_len,) = struct.unpack("<Q", head[:8])
    if header_len < 2 or header_len > min(size - 8, 100 * 1024**2) or head[8:9] != b"{":
        return False
    with path.open("rb") as handle:
        handle.seek(8)
        raw = handle.read(header_len)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return False
    if not isinstance(header, dict):
        return False
    data_len = size - 8 - header_len
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(entry, dict) or not {"dtype", "shape", "data_offsets"} <= entry.keys():
            return False
        offsets = entry["data_offsets"]
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(isinstance(o, int) for o in offsets)
            or not 0 <= offsets[0] <= offsets[1] <= data_len
        ):
            return False
    return True


def _is_onnx(path: Path) -> bool:
    import onnx

    try:
        # External data would be read from paths the file names: never follow them here.
        model = onnx.load_model(str(path), load_external_data=False)
    except Exception:  # any parse failure means "not ONNX"; protobuf raises several types
        return False
    return model.ir_version > 0 and len(model.graph.node) > 0


def _sniff_zip(path: Path) -> str:
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            # Every torch archive keeps its entries under one top-level folder.
            tops = {name.split("/", 1)[0] for name in names}
            inner = {name.split("/", 1)[1] for name in names if "/" in name}
            if len(tops) == 1:
                if "archive_format" in inner and _read_small(archive, names, "archive_format") == (
                    b"pt2"
                ):
                    _check_pt2_is_pickle_free(archive, names, inner)
                    return "torch_export"
                has_code = any(n.startswith("code/") for n in inner)
                if has_code and ("data.pkl" in inner or "constants.pkl" in inner):
                    return "torchscript"
                if "data.pkl" in inner:
                    raise UnsafeModelError(
                        "the model file was written by torch.save: a pickle of a whole module or "
                        "a state dict, which runs arbitrary code when loaded; it was not opened",
                        hint=_RESAVE_HINT,
                        format="pickle",
                    )
    except zipfile.BadZipFile as exc:
        raise UnsupportedModelError(
            f"the model file is a damaged zip archive: {exc}", hint=f"accepted: {ACCEPTED}"
        ) from exc
    raise UnsupportedModelError(
        "the model file is a zip archive but not a TorchScript or torch.export archive",
        hint=f"accepted formats: {ACCEPTED}",
        format=None,
    )


def _read_small(archive: zipfile.ZipFile, names: list[str], inner: str) -> bytes:
    name = next(n for n in names if n.split("/", 1)[-1] == inner)
    with archive.open(name) as member:
        return member.read(_MAX_CONFIG_BYTES + 1)


def _check_pt2_is_pickle_free(archive: zipfile.ZipFile, names: list[str], inner: set[str]) -> None:
    # torch.export.load falls back to full unpickling (weights_only=False) for weights or
    # constants flagged use_pickle, for legacy weight files, for "opaque" constants, and it loads
    # AOTInductor shared libraries: refuse every such archive before torch sees it. (The
    # sample inputs are checked with torch's restricted loader in core.intake.upload.)
    unsafe = UnsafeModelError(
        "the torch.export archive holds pickled or compiled payloads that would run code when "
        "loaded; it was not opened",
        hint="export plain tensors only: torch.export.save(torch.export.export(model, "
        "(sample,)), path) without AOTInductor packages or custom objects",
        format="torch_export",
    )
    for item in inner:
        if item.startswith("data/aotinductor/") or (
            item.startswith(("data/weights/", "data/constants/")) and item.endswith(".pt")
        ):
            raise unsafe
    for item in inner:
        if not (
            item.startswith(("data/weights/", "data/constants/")) and item.endswith("config.json")
        ):
            continue
        raw = _read_small(archive, names, item)
        try:
            config = json.loads(raw).get("config", {})
        except (UnicodeDecodeError, json.JSONDecodeError, AttributeError) as exc:
            raise unsafe from exc
        if not isinstance(config, dict):
            raise unsafe
        for entry in config.values():
            path_name = str(entry.get("path_name", "")) if isinstance(entry, dict) else ""
            if not isinstance(entry, dict) or entry.get("use_pickle", True):
                raise unsafe
            if item.startswith("data/constants/") and not path_name.startswith("tensor_"):
                raise unsafe
