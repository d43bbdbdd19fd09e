"""Loading uploaded models (TorchScript, torch.export, ONNX, safetensors + zoo) as torch modules.

The zoo itself lives in :mod:`core.zoo` and is re-exported here.
"""

from __future__ import annotations

import hashlib
import io
import math
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor, fx, nn

if TYPE_CHECKING:
    import onnx

from core.errors import ModelDatasetMismatchError, UnsafeModelError, UnsupportedModelError
from core.formats import sniff_format
from core.zoo import ZOO, InputShape, build_zoo_model

__all__ = [
    "ZOO",
    "ExportedModule",
    "LoadedModel",
    "build_zoo_model",
    "check_model_io",
    "load_model",
    "reinitialise_parameters",
]

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


@dataclass
class LoadedModel:
    """An uploaded model, loaded as a trainable float32 CPU module (in eval mode)."""

    module: nn.Module
    format: str
    sha256: str
    architecture: str | None
    num_classes: int | None = None
    input_shape: InputShape | None = None
    source: bytes = field(default=b"", repr=False)  # the file's bytes, to rebuild copies

    def fresh_copy(self, *, reinitialise: bool) -> nn.Module:
        """A new module of the same architecture: the upload's weights, or newly drawn ones."""
        if self.format == "safetensors":
            assert self.architecture and self.num_classes and self.input_shape
            module = build_zoo_model(
                self.architecture, num_classes=self.num_classes, input_shape=self.input_shape
            )
            if not reinitialise:
                module.load_state_dict(self.module.state_dict())
            return module.eval()
        module = _load_bytes(self.format, self.source)
        if reinitialise:
            reinitialise_parameters(module)
        return module


def load_model(
    path: Path,
    *,
    architecture: str | None = None,
    num_classes: int | None = None,
    input_shape: InputShape | None = None,
) -> LoadedModel:
    """Load an uploaded model by its content; safetensors needs a zoo ``architecture``."""
    path = Path(path)
    fmt = sniff_format(path)
    source = path.read_bytes()
    sha256 = hashlib.sha256(source).hexdigest()
    if fmt == "safetensors":
        module = _load_safetensors(source, architecture, num_classes, input_shape)
        return LoadedModel(
            module, fmt, sha256, architecture, num_classes, input_shape, source=source
        )
    module = _load_bytes(fmt, source)
    return LoadedModel(module, fmt, sha256, None, num_classes, input_shape, source=source)


def _load_bytes(fmt: str, source: bytes) -> nn.Module:
    try:
        if fmt == "torchscript":
            module: nn.Module = torch.jit.load(io.BytesIO(source), map_location="cpu")
        elif fmt == "torch_export":
            module = _load_export(source)
        elif fmt == "onnx":
            module = _load_onnx(source)
        else:
            raise UnsupportedModelError(f"cannot load format {fmt!r}", hint="internal error")
    except (UnsupportedModelError, UnsafeModelError):
        raise
    except Exception as exc:  # torch raises many types for a damaged archive
        raise UnsupportedModelError(
            f"the {fmt} model could not be loaded: {type(exc).__name__}: {exc}",
            hint="check that the file loads in the torch/onnx version that wrote it",
            format=fmt,
        ) from exc
    return module.float().cpu().eval()


def _load_export(source: bytes) -> nn.Module:
    # core.formats refused pickled weights/constants; the sample inputs are still a torch.save
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


def _load_onnx(source: bytes) -> nn.Module:
    import onnx
    from onnx2torch import convert

    model = onnx.load_model_from_string(source)
    for tensor in model.graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            raise UnsupportedModelError(
                "the ONNX model keeps its weights in external data files, which are not read",
                hint="export into one file: torch.onnx.export(..., external_data=False), or "
                "onnx.save_model(model, path, save_as_external_data=False)",
                format="onnx",
            )
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


def _load_safetensors(
    source: bytes,
    architecture: str | None,
    num_classes: int | None,
    input_shape: InputShape | None,
) -> nn.Module:
    from safetensors.torch import load as load_safetensors

    if architecture is None:
        raise UnsupportedModelError(
            "a safetensors file holds weights only; the architecture must be named",
            hint=f"set the architecture to one of: {', '.join(sorted(ZOO))}",
            format="safetensors",
        )
    if num_classes is None or input_shape is None:
        raise UnsupportedModelError(
            "building a zoo model needs num_classes and input_shape",
            hint="pass the dataset's num_classes and input_shape",
            format="safetensors",
        )
    module = build_zoo_model(architecture, num_classes=num_classes, input_shape=input_shape)
    state = load_safetensors(source)
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or unexpected or wrong_shape:
        parts = []
        if missing:
            parts.append(f"missing keys {_few(missing)}")
        if unexpected:
            parts.append(f"unexpected keys {_few(unexpected)}")
        if wrong_shape:
            parts.append(f"shape mismatches (file vs {architecture}) {_few(wrong_shape)}")
        raise UnsupportedModelError(
            f"the safetensors weights do not fit zoo architecture {architecture!r} for "
            f"{num_classes} classes and input {tuple(input_shape)}: " + "; ".join(parts),
            hint=f"name the architecture the weights were trained with (zoo: "
            f"{', '.join(sorted(ZOO))}) and the dataset they were trained on",
            format="safetensors",
            architecture=architecture,
        )
    module.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    return module.float().eval()


def _few(items: list[str], limit: int = 5) -> str:
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


@torch.no_grad()
def reinitialise_parameters(module: nn.Module) -> None:
    """Re-draw every parameter as PyTorch's default layer init does, judged by shape alone.

    Scripted, exported and converted modules cannot call ``reset_parameters``, so: weights of
    dim >= 2 get kaiming_uniform_(a=sqrt(5)); a bias beside such a weight gets
    U(-1/sqrt(fan_in), 1/sqrt(fan_in)); 1-D weights (norm layers) 1 and their biases 0; running
    statistics are reset. Uses torch's global RNG, so the caller seeds.
    """
    params = dict(module.named_parameters())
    for name, param in params.items():
        prefix, _, leaf = name.rpartition(".")
        sibling = params.get(f"{prefix}.weight" if prefix else "weight")
        if param.dim() >= 2:
            nn.init.kaiming_uniform_(param, a=math.sqrt(5))
        elif sibling is not None and sibling is not param and sibling.dim() >= 2:
            fan_in = nn.init._calculate_fan_in_and_fan_out(sibling)[0]
            bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
            nn.init.uniform_(param, -bound, bound)
        elif leaf == "weight":
            nn.init.ones_(param)
        else:
            nn.init.zeros_(param)
    for name, buffer in module.named_buffers():
        leaf = name.rpartition(".")[2]
        if leaf == "running_mean" or leaf == "num_batches_tracked":
            buffer.zero_()
        elif leaf == "running_var":
            buffer.fill_(1.0)


def check_model_io(module: nn.Module, sample: Tensor, num_classes: int) -> None:
    """Check that ``module`` maps a few ``sample`` inputs to finite (N, num_classes) logits."""
    batch = sample[: min(len(sample), 8)]
    dims = ", ".join(str(d) for d in batch.shape[1:])
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            out = module(batch)
    except Exception as exc:  # any failure here means the model does not fit the data
        raise ModelDatasetMismatchError(
            f"the model fails on the dataset's inputs of shape (N, {dims}): "
            f"{type(exc).__name__}: {str(exc)[:500]}",
            hint="use a dataset with the input shape the model was trained on, or a model for "
            "this dataset",
        ) from exc
    finally:
        module.train(was_training)
    if not isinstance(out, Tensor) or out.shape != (len(batch), num_classes):
        shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ModelDatasetMismatchError(
            f"the model outputs {shape} for {len(batch)} inputs; expected ({len(batch)}, "
            f"{num_classes}) logits, one per class of the dataset",
            hint="the model's last layer must have one output per dataset class",
        )
    if not torch.isfinite(out).all():
        raise ModelDatasetMismatchError(
            "the model outputs NaN or infinite values on the dataset's inputs",
            hint="check the model's weights and the dataset's input_range / normalisation",
        )
