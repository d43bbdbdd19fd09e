"""ONNX export: one interface for every module shape, parity with torch, metadata, atomic write."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch

from core.deploy.onnx_export import check_export, export_onnx, file_sha256, write_onnx
from tests.core.model_files import digits, loaded_module

METADATA = {"temperature": "100.0", "classes": '["0", "1"]', "seed": "0"}


@pytest.mark.parametrize("fmt", ["safetensors", "torchscript", "torch_export", "onnx"])
def test_every_module_shape_exports_with_the_same_interface(fmt: str, tmp_path: Path) -> None:
    # safetensors loads as a plain zoo module; the others keep their loaded shape.
    module = loaded_module(fmt, tmp_path)
    sample = digits().x_test[:64]
    target = tmp_path / "out" / "model.onnx"
    result = export_onnx(module, target, sample=sample, opset=18, metadata=METADATA)

    assert result.max_abs_diff <= 1e-4
    assert result.parity_samples == 64
    with torch.no_grad():
        largest = float(module(sample).abs().max())
    assert result.max_rel_diff == pytest.approx(result.max_abs_diff / largest)
    assert result.prediction_agreement == 1.0
    assert result.sha256 == file_sha256(target)
    proto = onnx.load(str(target))
    assert [i.name for i in proto.graph.input] == ["input"]
    assert [o.name for o in proto.graph.output] == ["logits"]
    batch = proto.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch.dim_param and not batch.HasField("dim_value")
    assert {p.key: p.value for p in proto.metadata_props} == METADATA
    # Self-contained: nothing but the model file in its folder (no external data, no temp files).
    assert sorted(p.name for p in target.parent.iterdir()) == ["model.onnx"]

    # A batch size never seen at export time runs and matches torch.
    session = onnxruntime.InferenceSession(str(target), providers=["CPUExecutionProvider"])
    odd = digits().x_test[64:71]
    (got,) = session.run(["logits"], {"input": odd.numpy()})
    with torch.no_grad():
        expected = module(odd).numpy()
    assert np.max(np.abs(got - expected)) <= 1e-4


def test_an_older_opset_is_honoured(tmp_path: Path) -> None:
    module = loaded_module("safetensors", tmp_path)
    target = tmp_path / "model.onnx"
    result = export_onnx(module, target, sample=digits().x_test[:8], opset=14, metadata={})
    assert result.opset == 14
    assert result.max_abs_diff <= 1e-4


def test_a_failed_export_leaves_no_file(tmp_path: Path) -> None:
    class TwoOutputs(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return x.flatten(1), x.flatten(1)

    target = tmp_path / "model.onnx"
    with pytest.raises(Exception, match="outputs"):
        export_onnx(TwoOutputs(), target, sample=digits().x_test[:4], opset=18, metadata={})
    assert list(tmp_path.iterdir()) == []


def test_parity_is_relative_to_the_logit_scale_and_counts_changed_predictions(
    tmp_path: Path,
) -> None:
    # A distilled student's logits are ~T times larger, and so is their float32 rounding: the
    # relative figure stays small where the absolute one grows with the scale.
    module = loaded_module("safetensors", tmp_path)
    with torch.no_grad():
        last = [m for m in module.modules() if isinstance(m, torch.nn.Linear)][-1]
        last.weight.mul_(1000.0)
        last.bias.mul_(1000.0)
    sample = digits().x_test[:64]
    result = export_onnx(module, tmp_path / "m.onnx", sample=sample, opset=18, metadata={})
    with torch.no_grad():
        largest = float(module(sample).abs().max())
    assert largest > 1000
    assert result.max_rel_diff == pytest.approx(result.max_abs_diff / largest)
    assert result.max_rel_diff < 1e-5
    assert 0.98 <= result.prediction_agreement <= 1.0


def test_the_checked_graph_is_written_once_with_all_its_metadata(tmp_path: Path) -> None:
    # The pipeline checks the export first and writes the file only when the audit's verdict is
    # known: checking leaves nothing behind, writing puts every entry in at once.
    module = loaded_module("torchscript", tmp_path)
    scratch = tmp_path / "out"
    checked = check_export(module, sample=digits().x_test[:16], opset=18, scratch=scratch)
    assert list(scratch.iterdir()) == [] and checked.prediction_agreement == 1.0
    result = write_onnx(checked, scratch / "model.onnx", METADATA | {"verdict": "masked"})
    assert [p.name for p in scratch.iterdir()] == ["model.onnx"]
    props = {p.key: p.value for p in onnx.load(str(result.path)).metadata_props}
    assert props == METADATA | {"verdict": "masked"}
    assert result.sha256 == file_sha256(result.path)
    assert len(checked.proto.metadata_props) == 0  # the checked graph itself is untouched
