"""ONNX export of the hardened student: one self-contained file, checked and compared with torch.

The file has one input ``input`` (batch dimension dynamic) and one output ``logits``. Two torch
exporters are tried: the dynamo exporter (``torch.export``-based; the only one that handles
``torch.export`` graphs) and the TorchScript-based one (the only one that handles TorchScript
modules, and the one that honours opsets below 18). Whichever writes the file, the result must
pass ``onnx.checker`` (full check) and match torch on held-out samples under onnxruntime.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime
import torch
from torch import Tensor, nn

from core.errors import HardenError, UnsupportedModelError
from core.modules import set_training_mode

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
BATCH_DIM = "batch"


class ExportError(HardenError):
    """The student could not be written as ONNX, or the file does not behave like the model."""

    code = "export_failed"
    status = 500


@dataclass(frozen=True, kw_only=True)
class ExportCheck:
    """How an export was made, and how closely onnxruntime matches torch."""

    opset: int
    exporter: str
    max_abs_diff: float
    parity_samples: int
    max_rel_diff: float
    prediction_agreement: float


@dataclass(frozen=True, kw_only=True)
class ExportResult(ExportCheck):
    """The written file and its check."""

    path: Path
    sha256: str


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    # Both exporters print progress and deprecation notes; a CLI progress bar or a worker log
    # should not be interleaved with them. Failures still surface as exceptions.
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "onnxscript", "torch.export")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stdout(io.StringIO()),
            contextlib.redirect_stderr(io.StringIO()),
        ):
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _export(model: nn.Module, sample: Tensor, path: Path, opset: int, exporter: str) -> None:
    # The two exporters name a dynamic batch dimension differently: the dynamo one with a
    # torch.export Dim (and must be told to keep the weights inside the file), the TorchScript one
    # with axis names per input and output.
    options: dict[str, Any]
    if exporter == "dynamo":
        options = {
            "dynamic_shapes": ({0: torch.export.Dim(BATCH_DIM)},),
            "external_data": False,
            "verbose": False,
        }
    else:
        options = {"dynamic_axes": {INPUT_NAME: {0: BATCH_DIM}, OUTPUT_NAME: {0: BATCH_DIM}}}
    torch.onnx.export(
        model,
        (sample,),
        str(path),
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        opset_version=opset,
        dynamo=exporter == "dynamo",
        **options,
    )


def _exporters(model: nn.Module, opset: int) -> list[str]:
    scripted = any(isinstance(m, torch.jit.ScriptModule) for m in model.modules())
    if scripted or opset < 18:
        # torch.export cannot trace TorchScript; the dynamo exporter starts at opset 18 and its
        # down-conversion often fails, keeping 18.
        return ["torchscript", "dynamo"]
    return ["dynamo", "torchscript"]


def _write(model: nn.Module, sample: Tensor, path: Path, opset: int) -> str:
    errors: list[str] = []
    for name in _exporters(model, opset):
        try:
            with _quiet():
                _export(model, sample, path, opset, name)
            return name
        except Exception as error:  # each exporter fails in its own way; try the other one
            errors.append(f"{name}: {type(error).__name__}: {str(error).splitlines()[0][:300]}")
            path.unlink(missing_ok=True)
    raise UnsupportedModelError(
        "the student could not be exported to ONNX: " + "; ".join(errors),
        hint="use a model built from standard layers (a zoo architecture exports everywhere)",
    )


def _dynamic_batch(proto: onnx.ModelProto) -> bool:
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    return len(dims) > 0 and bool(dims[0].dim_param) and not dims[0].HasField("dim_value")


def _check_interface(proto: onnx.ModelProto) -> None:
    inputs = [i.name for i in proto.graph.input]
    outputs = [o.name for o in proto.graph.output]
    if inputs != [INPUT_NAME] or outputs != [OUTPUT_NAME] or not _dynamic_batch(proto):
        raise ExportError(
            f"the exported graph has inputs {inputs} and outputs {outputs}"
            f"{'' if _dynamic_batch(proto) else ' and a fixed batch size'}",
            hint="the model must take one image batch and return one logits tensor",
        )


def _parity(graph: bytes, model: nn.Module, sample: Tensor) -> tuple[float, float, float]:
    """(largest absolute difference, the same relative to the largest |logit|, fraction of
    samples whose predicted class is the same). A distilled student's logits are T times larger
    than usual, so its float32 rounding is too: the relative figure and the agreement of the
    predictions are what say whether the file is faithful."""
    session = onnxruntime.InferenceSession(graph, providers=["CPUExecutionProvider"])
    with torch.no_grad():
        expected = model(sample).float().numpy()
    worst = 0.0
    agree = 1.0
    # The full batch and a batch of one: proves the batch dimension really is dynamic.
    for rows in (slice(None), slice(0, 1)):
        (got,) = session.run([OUTPUT_NAME], {INPUT_NAME: sample[rows].numpy()})
        if got.shape != expected[rows].shape:
            raise ExportError(
                f"onnxruntime returned shape {got.shape}, torch {expected[rows].shape}",
                hint="the model's output must be (batch, classes)",
            )
        worst = max(worst, float(np.max(np.abs(got - expected[rows]))))
        agree = min(agree, float(np.mean(got.argmax(1) == expected[rows].argmax(1))))
    scale = float(np.max(np.abs(expected))) or 1.0
    return worst, worst / scale, agree


@dataclass(frozen=True, kw_only=True)
class CheckedOnnx(ExportCheck):
    """An exported graph that passed every check, not written yet (the pipeline writes it once
    the audit's verdict is known, with all of its metadata)."""

    proto: onnx.ModelProto


def check_export(model: nn.Module, *, sample: Tensor, opset: int, scratch: Path) -> CheckedOnnx:
    """Export ``model`` to ONNX (in a temporary file under ``scratch``), check its interface and
    graph, and compare onnxruntime with torch on ``sample``, a batch of held-out inputs as the
    model expects them. The model is moved to the CPU and put in eval mode."""
    model = model.to("cpu")
    set_training_mode(model, False)
    sample = sample.detach().to("cpu", torch.float32)
    scratch.mkdir(parents=True, exist_ok=True)
    tmp = scratch / f".export.{uuid.uuid4().hex}.tmp"
    try:
        exporter = _write(model, sample, tmp, opset)
        proto = onnx.load(str(tmp))
    finally:
        tmp.unlink(missing_ok=True)
    _check_interface(proto)
    onnx.checker.check_model(proto, full_check=True)
    max_abs_diff, max_rel_diff, agreement = _parity(proto.SerializeToString(), model, sample)
    actual_opset = max(
        (o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), default=opset
    )
    return CheckedOnnx(
        proto=proto,
        opset=int(actual_opset),
        exporter=exporter,
        max_abs_diff=max_abs_diff,
        parity_samples=int(sample.shape[0]),
        max_rel_diff=max_rel_diff,
        prediction_agreement=agreement,
    )


def write_onnx(checked: CheckedOnnx, path: Path, metadata: dict[str, str]) -> ExportResult:
    """Write the checked graph to ``path`` once, with ``metadata`` as its metadata_props, under a
    temporary name beside it renamed into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    proto = onnx.ModelProto()
    proto.CopyFrom(checked.proto)
    del proto.metadata_props[:]
    for key, value in sorted(metadata.items()):
        proto.metadata_props.add(key=str(key), value=str(value))
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        onnx.save(proto, str(tmp), save_as_external_data=False)
        sha256 = file_sha256(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    check = {f.name: getattr(checked, f.name) for f in fields(ExportCheck)}
    return ExportResult(path=path, sha256=sha256, **check)


def export_onnx(
    model: nn.Module,
    path: Path,
    *,
    sample: Tensor,
    opset: int,
    metadata: dict[str, str],
) -> ExportResult:
    """Write ``model`` to ``path`` as ONNX with ``metadata`` in ``metadata_props``: checked
    (:func:`check_export`), then written (:func:`write_onnx`)."""
    checked = check_export(model, sample=sample, opset=opset, scratch=Path(path).parent)
    return write_onnx(checked, path, metadata)
