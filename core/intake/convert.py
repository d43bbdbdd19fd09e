"""Turning torch.export and ONNX uploads into trainable torch modules.

Used by :mod:`core.intake.upload`.
"""

from __future__ import annotations

import io
import zipfile
from typing import TYPE_CHECKING

import torch
from torch import Tensor, fx, nn

from core.errors import UnsafeModelError, UnsupportedModelError

if TYPE_CHECKING:
    import onnx

_aten = torch.ops.aten
# Ops of an exported graph whose train/eval behaviour is a constant argument: (op, arg index).
_MODE_ARGS = {
    _aten.batch_norm.default: 5,
    _aten.dropout.default: 2,
    _aten.feature_dropout.default: 2,
    _aten.alpha_dropout.default: 2,
    _aten.feature_alpha_dropout.default: 2,
}


class ExportedModule(nn.Module):
    """A torch.export program as a trainable module.

    ``ExportedProgram.module()`` refuses ``train()``/``eval()`` and checks the exported input
    shapes. This wrapper re-wraps its graph without those guards (so any batch size runs when
    the graph allows it) and implements ``train(mode)`` by flipping the constant ``training``
    argument of batch-norm and dropout nodes. Ops already decomposed into inference-only forms
    (e.g. ``_native_batch_norm_legit_no_training``) keep their inference behaviour.
    """

    def __init__(self, graph_module: fx.GraphModule) -> None:
        super().__init__()
        self.graph_module = graph_module
        self.train(False)

    def forward(self, x: Tensor) -> Tensor:
        return self.graph_module(x)

    def train(self, mode: bool = True) -> ExportedModule:
        """Switch batch-norm and dropout nodes of the graph between training and inference."""
        self.training = mode
        changed = False
        for node in self.graph_module.graph.nodes:
            index = _MODE_ARGS.get(node.target) if node.op == "call_function" else None
            if index is not None and len(node.args) > index and node.args[index] != mode:
                args = list(node.args)
                args[index] = mode
                node.args = tuple(args)
                changed = True
        if changed:
            self.graph_module.recompile()
        return self


def load_export(source: bytes) -> nn.Module:
    # core.intake.sniff refused pickled weights/constants; the sample inputs are still a torch.save
    # payload that torch.export.load would unpickle fully if the restricted loader fails on it.
    with zipfile.ZipFile(io.BytesIO(source)) as archive:
        for name in archive.namelist():
            if "/data/sample_inputs/" in name:
                try:
                    torch.load(io.BytesIO(archive.read(name)), weights_only=True)
                except Exception as exc:
                    raise UnsafeModelError(
                        "the torch.export archive's sample inputs hold objects beyond plain "
                        "tensors; loading them would run code, so the file was not opened",
                        hint="export with plain tensor sample inputs",
                        format="torch_export",
                    ) from exc
    program = torch.export.load(io.BytesIO(source))
    unlifted = program.module(check_guards=False)
    # A plain GraphModule over the same graph drops the shape-checking pre-hooks.
    return ExportedModule(fx.GraphModule(unlifted, unlifted.graph))


def load_onnx(source: bytes) -> nn.Module:
    import onnx
    from onnx2torch import convert

    # core.intake.operators refused external data on every tensor and any operator outside
    # the default domain before this point (sniff_format).
    model = onnx.load_model_from_string(source)
    opsets = ", ".join(f"{o.domain or 'ai.onnx'} {o.version}" for o in model.opset_import)
    try:
        return convert(_downgrade_opset(model))
    except NotImplementedError as exc:
        raise UnsupportedModelError(
            f"the ONNX model uses an operator that cannot be converted to torch: {exc} "
            f"(model opsets: {opsets})",
            hint="re-export with a different opset (torch.onnx.export(..., opset_version=17)) "
            "or upload TorchScript / torch.export / safetensors instead",
            format="onnx",
        ) from exc


_ONNX2TORCH_MAX_OPSET = 17  # onnx2torch 1.5 lacks converters for e.g. Reshape-19/21


def _downgrade_opset(model: onnx.ModelProto) -> onnx.ModelProto:
    # torch.onnx.export writes opset 18-20 by default, beyond what onnx2torch converts; ONNX's
    # own version converter rewrites such graphs to opset 17 when their ops allow it.
    import onnx.version_converter

    version = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if version <= _ONNX2TORCH_MAX_OPSET:
        return model
    try:
        model = onnx.version_converter.convert_version(model, _ONNX2TORCH_MAX_OPSET)
    except Exception:  # not convertible: let onnx2torch name the op it cannot handle
        return model
    _drop_needless_allowzero(model)
    return model


def _drop_needless_allowzero(model: onnx.ModelProto) -> None:
    # The dynamo exporter marks Reshape nodes allowzero=1, which onnx2torch refuses; the flag
    # only changes the meaning of a 0 in the target shape, so it can go when the shape is a
    # constant without zeros.
    from onnx import numpy_helper

    constants = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            constants[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    for node in model.graph.node:
        if node.op_type != "Reshape" or len(node.input) < 2:
            continue
        shape = constants.get(node.input[1])
        if shape is None or (shape == 0).any():
            continue
        kept = [a for a in node.attribute if not (a.name == "allowzero" and a.i == 1)]
        del node.attribute[:]
        node.attribute.extend(kept)
