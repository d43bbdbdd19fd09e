"""core.intake.sniff: formats recognised by content; pickles and unknown files refused unopened."""

from __future__ import annotations

import io
import json
import os
import pickle
import struct
import zipfile
from pathlib import Path

import pytest
import torch
from torch import nn

from core.errors import UnsafeModelError, UnsupportedModelError
from core.intake.sniff import sniff_format


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3)).eval()


SAMPLE = torch.rand(2, 1, 4, 4)


def _save(kind: str, path: Path) -> Path:
    model = _model()
    if kind == "torchscript":
        torch.jit.save(torch.jit.script(model), str(path))
    elif kind == "torch_export":
        torch.export.save(torch.export.export(model, (SAMPLE,)), str(path))
    elif kind == "onnx":
        torch.onnx.export(model, (SAMPLE,), str(path), dynamo=False)
    elif kind == "safetensors":
        from safetensors.torch import save_file

        save_file(model.state_dict(), str(path))
    return path


@pytest.mark.parametrize("kind", ["torchscript", "torch_export", "onnx", "safetensors"])
@pytest.mark.parametrize("name", ["model.bin", "model.pkl"])
def test_formats_recognised_by_content_not_name(tmp_path: Path, kind: str, name: str) -> None:
    path = _save(kind, tmp_path / name)
    assert sniff_format(path) == kind


class _Pwn:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # what an attacker's pickle does on load
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("how", ["pickle", "torch.save", "torch.save-legacy", "protocol0"])
def test_hostile_pickles_refused_without_running(tmp_path: Path, how: str) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "model.pt2"  # a hopeful name does not matter
    payload = _Pwn(marker)
    if how == "pickle":
        path.write_bytes(pickle.dumps(payload))
    elif how == "protocol0":
        path.write_bytes(pickle.dumps(payload, protocol=0))
    elif how == "torch.save":
        torch.save(payload, path)
    else:
        torch.save(payload, path, _use_new_zipfile_serialization=False)
    with pytest.raises(UnsafeModelError) as info:
        sniff_format(path)
    assert "torch.jit.save" in info.value.hint and "safetensors" in info.value.hint
    assert not marker.exists()
    # the sanity check: loading it the unsafe way would indeed run the payload
    if how == "pickle":
        pickle.loads(path.read_bytes())
        assert marker.exists()


def test_torch_save_state_dict_is_a_pickle(tmp_path: Path) -> None:
    path = tmp_path / "weights.pt"
    torch.save(_model().state_dict(), path)
    with pytest.raises(UnsafeModelError, match="torch.save"):
        sniff_format(path)


@pytest.mark.parametrize(
    "content", [b"", b"\x00\x01garbage bytes that are nothing", b"PK\x03\x04broken zip"]
)
def test_garbage_and_empty_files_unsupported(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(content)
    with pytest.raises(UnsupportedModelError) as info:
        sniff_format(path)
    assert not isinstance(info.value, UnsafeModelError)
    assert info.value.hint


def test_unknown_zip_and_fake_safetensors(tmp_path: Path) -> None:
    path = tmp_path / "m.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("notes/readme.txt", "hello")
    with pytest.raises(UnsupportedModelError, match="zip archive"):
        sniff_format(path)
    # a header that claims more data than the file holds is not safetensors
    header = json.dumps({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}).encode()
    fake = tmp_path / "fake.safetensors"
    fake.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 4)
    with pytest.raises(UnsupportedModelError, match="not recognised"):
        sniff_format(fake)


def test_size_limit(tmp_path: Path) -> None:
    path = _save("safetensors", tmp_path / "m.safetensors")
    with pytest.raises(UnsupportedModelError, match="over the limit"):
        sniff_format(path, max_bytes=10)


def _rewrite_zip(path: Path, out: Path, change) -> None:
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(out, "w") as target:
        for name in source.namelist():
            data = change(name, source.read(name))
            if data is not None:
                target.writestr(name, data)


def test_pt2_with_pickled_weights_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    good = _save("torch_export", tmp_path / "good.pt2")
    evil = tmp_path / "evil.pt2"
    buffer = io.BytesIO()
    torch.save(_Pwn(marker), buffer)

    def change(name: str, data: bytes) -> bytes:
        if name.endswith("model_weights_config.json"):
            config = json.loads(data)
            for entry in config["config"].values():
                entry["use_pickle"] = True
            return json.dumps(config).encode()
        if name.endswith("weights/weight_0"):
            return buffer.getvalue()
        return data

    _rewrite_zip(good, evil, change)
    with pytest.raises(UnsafeModelError, match="torch.export"):
        sniff_format(evil)
    assert not marker.exists()
