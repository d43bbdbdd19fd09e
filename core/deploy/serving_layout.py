"""The hardened model as a serving system's model repository: Triton's, or KServe's v2 layout.

Triton reads ``<repository>/<name>/config.pbtxt`` and ``<repository>/<name>/<version>/model.onnx``
(Triton model repository docs). The config's inputs and outputs, their data types and dims are
read from the ONNX graph, never assumed: a dynamic first dimension becomes Triton's batch
dimension (``max_batch_size`` > 0, dims without it, dynamic batching on), any other dynamic
dimension ``-1``. KServe's v2 protocol serves ONNX through its Triton runtime
(``kserve-tritonserver``), whose storage URI is such a repository: the KServe layout is the same
repository plus an ``InferenceService`` manifest beside it. ``model.onnx`` is copied byte for
byte, so its metadata keeps saying what it outputs (T-scaled logits or logits); the config's
comments say it too. Torch-free: the web process builds these (``GET /jobs/{id}/layout.zip``).
"""

from __future__ import annotations

import json
import re
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

import onnx

from core.errors import HardenError, UnsupportedModelError

Layout = Literal["triton", "kserve"]
LAYOUTS: Final = ("triton", "kserve")
DEFAULT_MAX_BATCH_SIZE: Final = 32
MANIFEST: Final = "inference-service.yaml"
# Triton model names are directory names; kept to what every file system and URL takes.
NAME_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"

# ONNX element types -> Triton's DataType (model_config.proto); those Triton lacks are refused.
TRITON_TYPES: Final[dict[int, str]] = {
    onnx.TensorProto.BOOL: "TYPE_BOOL",
    onnx.TensorProto.UINT8: "TYPE_UINT8",
    onnx.TensorProto.UINT16: "TYPE_UINT16",
    onnx.TensorProto.UINT32: "TYPE_UINT32",
    onnx.TensorProto.UINT64: "TYPE_UINT64",
    onnx.TensorProto.INT8: "TYPE_INT8",
    onnx.TensorProto.INT16: "TYPE_INT16",
    onnx.TensorProto.INT32: "TYPE_INT32",
    onnx.TensorProto.INT64: "TYPE_INT64",
    onnx.TensorProto.FLOAT16: "TYPE_FP16",
    onnx.TensorProto.FLOAT: "TYPE_FP32",
    onnx.TensorProto.DOUBLE: "TYPE_FP64",
    onnx.TensorProto.STRING: "TYPE_STRING",
    onnx.TensorProto.BFLOAT16: "TYPE_BF16",
}


class LayoutError(HardenError):
    """A serving layout that cannot be written as asked (its name, version or batch size)."""

    code = "invalid_layout"


@dataclass(frozen=True)
class GraphTensor:
    """One graph input or output: name, Triton data type, dims (-1: dynamic)."""

    name: str
    data_type: str
    dims: tuple[int, ...]


def _tensors(values: list[onnx.ValueInfoProto]) -> list[GraphTensor]:
    tensors = []
    for value in values:
        tensor_type = value.type.tensor_type
        data_type = TRITON_TYPES.get(tensor_type.elem_type)
        if data_type is None:
            raise UnsupportedModelError(
                f"the ONNX graph's {value.name!r} has element type "
                f"{onnx.TensorProto.DataType.Name(tensor_type.elem_type)}, which Triton cannot "
                "serve",
                hint="export the model with float32 (or another Triton data type) inputs and "
                "outputs",
            )
        dims = tuple(
            dim.dim_value if dim.HasField("dim_value") and dim.dim_value > 0 else -1
            for dim in tensor_type.shape.dim
        )
        tensors.append(GraphTensor(value.name, data_type, dims))
    return tensors


def graph_tensors(model: onnx.ModelProto) -> tuple[list[GraphTensor], list[GraphTensor]]:
    """The graph's inputs (initializers excluded) and outputs."""
    weights = {initializer.name for initializer in model.graph.initializer}
    inputs = [value for value in model.graph.input if value.name not in weights]
    return _tensors(inputs), _tensors(list(model.graph.output))


def check_name(name: str, version: int, max_batch_size: int) -> None:
    """Refuse a model name Triton cannot take as a directory, a version below 1, or a batch size
    below 1."""
    if not re.fullmatch(NAME_PATTERN, name):
        raise LayoutError(
            f"{name!r} is no model name for a serving layout",
            hint="use letters, digits, '_', '.' and '-', starting with a letter or digit, at most "
            "64 characters",
        )
    if version < 1:
        raise LayoutError(f"version {version} is below 1", hint="Triton versions start at 1")
    if max_batch_size < 1:
        raise LayoutError(
            f"max_batch_size {max_batch_size} is below 1", hint="use 1 or more (default 32)"
        )


def _metadata(model: onnx.ModelProto) -> dict[str, str]:
    return {prop.key: prop.value for prop in model.metadata_props}


def triton_config(
    model: onnx.ModelProto, *, name: str, max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
) -> str:
    """Triton's ``config.pbtxt`` (protobuf text format) for ``model``, read from its graph."""
    inputs, outputs = graph_tensors(model)
    # Triton's batch dimension is the first one of every input and output, dynamic in all.
    batched = all(tensor.dims and tensor.dims[0] == -1 for tensor in inputs + outputs)
    metadata = _metadata(model)
    lines = ["# Written by harden from model.onnx's graph (inputs, outputs, dims, data types)."]
    if "outputs" in metadata:
        temperature = metadata.get("temperature")
        lines.append(
            f"# outputs: {metadata['outputs']}"
            + (f" (T={temperature})" if temperature else "")
            + f"; method: {metadata.get('method', 'unknown')}; verdict: "
            f"{metadata.get('verdict', 'unknown')}"
        )
    if metadata.get("outputs_note"):
        lines.append(f"# {' '.join(metadata['outputs_note'].split())}")
    lines += [
        f"name: {json.dumps(name)}",
        'platform: "onnxruntime_onnx"',
        'backend: "onnxruntime"',
        f"max_batch_size: {max_batch_size if batched else 0}",
    ]
    for field, tensors in (("input", inputs), ("output", outputs)):
        lines.append(f"{field} [")
        for index, tensor in enumerate(tensors):
            dims = tensor.dims[1:] if batched else tensor.dims
            lines += [
                "  {",
                f"    name: {json.dumps(tensor.name)}",
                f"    data_type: {tensor.data_type}",
                f"    dims: [ {', '.join(str(d) for d in dims)} ]",
                "  }" + ("," if index < len(tensors) - 1 else ""),
            ]
        lines.append("]")
    if batched:
        lines.append("dynamic_batching { }")
    return "\n".join(lines) + "\n"


def _kserve_name(name: str) -> str:
    """An InferenceService name (a DNS-1035 label) from a model name."""
    label = re.sub(r"[^a-z0-9-]", "-", name.lower()).strip("-")
    return (label if label[:1].isalpha() else f"m-{label}")[:63].rstrip("-")


def kserve_manifest(model: onnx.ModelProto, *, name: str, storage_uri: str) -> str:
    """An ``InferenceService`` (serving.kserve.io/v1beta1) serving the repository at
    ``storage_uri`` with KServe's Triton runtime over the v2 (Open Inference) protocol."""
    metadata = _metadata(model)
    annotations = {
        key: metadata[key]
        for key in ("outputs", "temperature", "method", "verdict")
        if key in metadata
    }
    lines = [
        "# Copy this folder to storageUri, then: kubectl apply -f inference-service.yaml",
        "apiVersion: serving.kserve.io/v1beta1",
        "kind: InferenceService",
        "metadata:",
        f"  name: {json.dumps(_kserve_name(name))}",
    ]
    if annotations:
        lines.append("  annotations:")
        lines += [f"    harden/{k}: {json.dumps(v)}" for k, v in annotations.items()]
    lines += [
        "spec:",
        "  predictor:",
        "    model:",
        "      modelFormat:",
        '        name: "onnx"',
        '      protocolVersion: "v2"',
        '      runtime: "kserve-tritonserver"',
        f"      storageUri: {json.dumps(storage_uri)}",
    ]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class LayoutOptions:
    """What to write: the layout, the model's name and version folder, Triton's max_batch_size
    (used when the graph's batch dimension is dynamic) and, for KServe, the storage URI the
    repository will be copied to. Checked when made."""

    layout: Layout
    name: str
    version: int = 1
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
    storage_uri: str | None = None

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise LayoutError(f"{self.layout!r} is no serving layout", hint="use triton or kserve")
        check_name(self.name, self.version, self.max_batch_size)


def write_layout(model_path: Path, out_dir: Path, options: LayoutOptions) -> list[Path]:
    """Write ``model_path`` into ``out_dir`` as a repository of ``options.layout``; return the
    files written (``<name>/config.pbtxt``, ``<name>/<version>/model.onnx``, and for KServe the
    manifest)."""
    name, version = options.name, options.version
    # The graph only: weights are copied as bytes, never parsed twice.
    model = onnx.load(str(model_path), load_external_data=False)
    config = triton_config(model, name=name, max_batch_size=options.max_batch_size)
    folder = Path(out_dir) / name
    (folder / str(version)).mkdir(parents=True, exist_ok=True)
    written = [folder / "config.pbtxt", folder / str(version) / "model.onnx"]
    written[0].write_text(config, encoding="utf-8")
    shutil.copyfile(model_path, written[1])
    if options.layout == "kserve":
        manifest = Path(out_dir) / MANIFEST
        uri = options.storage_uri or f"s3://CHANGE-ME/{name}-repository"
        manifest.write_text(kserve_manifest(model, name=name, storage_uri=uri), encoding="utf-8")
        written.append(manifest)
    return written


def layout_zip(model_path: Path, zip_path: Path, options: LayoutOptions) -> Path:
    """The layout of :func:`write_layout` as one zip file (the API's download), paths relative
    to the repository root."""
    staging = zip_path.with_name(f"{zip_path.name}.files")
    try:
        files = write_layout(model_path, staging, options)
        with zipfile.ZipFile(zip_path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for path in files:
                archive.write(path, path.relative_to(staging).as_posix())
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return zip_path
