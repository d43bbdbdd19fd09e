"""Loading uploaded models (TorchScript, torch.export, ONNX, safetensors + zoo) as torch modules.

The zoo itself lives in :mod:`core.intake.zoo` and is re-exported here.
"""

from __future__ import annotations

import hashlib
import io
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from core.errors import ModelDatasetMismatchError, UnsafeModelError, UnsupportedModelError
from core.intake.convert import load_export, load_onnx
from core.intake.graph_ops import check_loaded_model
from core.intake.sniff import sniff_format
from core.intake.zoo import ZOO, InputShape, build_zoo_model

__all__ = [
    "LoadedModel",
    "check_model_io",
    "load_model",
    "reinitialise_parameters",
]


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
    if fmt in ("torchscript", "torch_export"):
        # Loaded graphs, every method inlined: what the file's source text could hide.
        check_loaded_model(module, fmt)
    if not any(p.requires_grad and p.numel() for p in module.parameters()):
        raise UnsupportedModelError(
            f"the {fmt} model has no trainable parameters: there is nothing to harden",
            hint="upload the trained model with its weights as parameters (nn.Parameter), "
            "not as buffers or constants; for ONNX, export with "
            "torch.onnx.export(..., do_constant_folding=False) and training mode preserved",
            format=fmt,
        )
    return LoadedModel(module, fmt, sha256, None, num_classes, input_shape, source=source)


def _load_bytes(fmt: str, source: bytes) -> nn.Module:
    try:
        if fmt == "torchscript":
            with warnings.catch_warnings():
                # torch 2.14 warns that TorchScript is deprecated; it is still a format users
                # upload and every torch version loads, so the warning only alarms the user.
                warnings.simplefilter("ignore", FutureWarning)
                module: nn.Module = torch.jit.load(io.BytesIO(source), map_location="cpu")
        elif fmt == "torch_export":
            module = load_export(source)
        elif fmt == "onnx":
            module = load_onnx(source)
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


def _expected_input(module: nn.Module) -> str:
    """What the model's first weight says about its inputs ('3-channel inputs', 'inputs of 784
    values'), or '' when its first parameter is neither a 2-D convolution's nor a linear
    layer's. TorchScript's own error is a truncated graph trace that never says this."""
    first = next(iter(module.parameters()), None)
    if first is None:
        return ""
    if first.dim() == 4:  # Conv2d weight: (out, in_channels / groups, kh, kw)
        return f"{first.shape[1]}-channel inputs (its first convolution takes {first.shape[1]})"
    if first.dim() == 2:  # Linear weight: (out, in_features), after a Flatten
        return f"inputs of {first.shape[1]} values (its first linear layer takes {first.shape[1]})"
    return ""


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
        given = "x".join(str(d) for d in batch.shape[1:])
        expected = _expected_input(module)
        head = f"the model expects {expected}; " if expected else "the model fails on "
        raise ModelDatasetMismatchError(
            f"{head}the dataset's images are {given} (N, {dims}; {num_classes} classes): "
            f"{type(exc).__name__}: {str(exc)[:300]}",
            hint=f"use a dataset of {expected or 'the shape the model was trained on'} "
            f"(e.g. grayscale to RGB: np.repeat(x, 3, axis=1) before saving the .npz), or a "
            f"model trained on {given} inputs with {num_classes} outputs",
        ) from exc
    finally:
        module.train(was_training)
    if not isinstance(out, Tensor) or out.shape != (len(batch), num_classes):
        shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ModelDatasetMismatchError(
            f"the model outputs {shape} for {len(batch)} inputs; expected ({len(batch)}, "
            f"{num_classes}) logits, one per class of the dataset ({num_classes} classes)",
            hint=f"the model's last layer must have {num_classes} outputs, one per dataset class: "
            f"use a model trained on this dataset's {num_classes} classes, or a dataset with as "
            "many classes as the model has outputs",
        )
    if not torch.isfinite(out).all():
        raise ModelDatasetMismatchError(
            "the model outputs NaN or infinite values on the dataset's inputs",
            hint="check the model's weights and the dataset's input_range / normalisation",
        )
