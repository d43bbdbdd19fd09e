"""Serving layouts: Triton's config.pbtxt parses as Triton's ModelConfig, says what the ONNX graph
says (names, data types, dims, dynamic batch), and onnxruntime runs the model at the path the
layout names with the names and shapes the config gives; KServe's manifest points its Triton
runtime at the same repository.

Triton's own ``model_config_pb2`` ships in tritonclient, whose grpc part needs protobuf < 7 (this
environment has 7): the config is parsed here by protobuf's text-format parser against the part
of Triton's ``model_config.proto`` the layout writes, with the same field names, numbers and
types (checked against tritonclient 2.73.0's descriptor when written). An unknown field, a wrong
type or a misspelled enum fails the parse.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import yaml
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format
from onnx import TensorProto, helper

from core.deploy.serving_layout import (
    MANIFEST,
    TRITON_TYPES,
    LayoutError,
    LayoutOptions,
    layout_zip,
    triton_config,
    write_layout,
)

_F = descriptor_pb2.FieldDescriptorProto
_DATA_TYPES = [
    "TYPE_INVALID", "TYPE_BOOL", "TYPE_UINT8", "TYPE_UINT16", "TYPE_UINT32", "TYPE_UINT64",
    "TYPE_INT8", "TYPE_INT16", "TYPE_INT32", "TYPE_INT64", "TYPE_FP16", "TYPE_FP32", "TYPE_FP64",
    "TYPE_STRING", "TYPE_BF16",
]  # fmt: skip


def _model_config_class() -> type:
    """inference.ModelConfig, as much of it as the layout writes (Triton's field numbers)."""
    file = descriptor_pb2.FileDescriptorProto(
        name="harden_test_model_config.proto", package="inference", syntax="proto3"
    )
    enum = file.enum_type.add(name="DataType")
    for number, name in enumerate(_DATA_TYPES):
        enum.value.add(name=name, number=number)

    def message(name: str, fields: list[tuple[str, int, int, int, str]]) -> None:
        proto = file.message_type.add(name=name)
        for field, number, kind, label, type_name in fields:
            proto.field.add(
                name=field, number=number, type=kind, label=label, type_name=type_name or None
            )

    one, many = _F.LABEL_OPTIONAL, _F.LABEL_REPEATED
    tensor = [
        ("name", 1, _F.TYPE_STRING, one, ""),
        ("data_type", 2, _F.TYPE_ENUM, one, ".inference.DataType"),
    ]
    message("ModelInput", [*tensor, ("dims", 4, _F.TYPE_INT64, many, "")])
    message("ModelOutput", [*tensor, ("dims", 3, _F.TYPE_INT64, many, "")])
    message(
        "ModelDynamicBatching",
        [
            ("preferred_batch_size", 1, _F.TYPE_INT32, many, ""),
            ("max_queue_delay_microseconds", 2, _F.TYPE_UINT64, one, ""),
        ],
    )
    message(
        "ModelConfig",
        [
            ("name", 1, _F.TYPE_STRING, one, ""),
            ("platform", 2, _F.TYPE_STRING, one, ""),
            ("max_batch_size", 4, _F.TYPE_INT32, one, ""),
            ("input", 5, _F.TYPE_MESSAGE, many, ".inference.ModelInput"),
            ("output", 6, _F.TYPE_MESSAGE, many, ".inference.ModelOutput"),
            ("dynamic_batching", 11, _F.TYPE_MESSAGE, one, ".inference.ModelDynamicBatching"),
            ("backend", 17, _F.TYPE_STRING, one, ""),
        ],
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("inference.ModelConfig"))


ModelConfig = _model_config_class()


def _classifier(path: Path, *, batch: str | int = "batch", dtype: int = TensorProto.FLOAT) -> Path:
    """A small ONNX classifier like the exported students: input [batch, 1, 8, 8] -> logits
    [batch, 10], with the metadata the pipeline stamps."""
    rng = np.random.default_rng(0)
    weight = helper.make_tensor(
        "weight", TensorProto.FLOAT, [64, 10], rng.normal(size=640).astype(np.float32).tolist()
    )
    nodes = [
        helper.make_node("Cast", ["input"], ["input_f"], to=TensorProto.FLOAT),
        helper.make_node("Flatten", ["input_f"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "weight"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "student",
        [helper.make_tensor_value_info("input", dtype, [batch, 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 10])],
        [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    helper.set_model_props(
        model,
        {
            "outputs": "t_scaled_logits",
            "temperature": "100.0",
            "outputs_note": "model.onnx outputs T-scaled logits (T=100)",
            "method": "distillation",
            "verdict": "masked",
        },
    )
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def test_triton_layout_matches_the_graph_and_runs_in_onnxruntime(tmp_path: Path) -> None:
    source = _classifier(tmp_path / "model.onnx")
    repository = tmp_path / "repository"
    options = LayoutOptions("triton", "digits_student", version=3, max_batch_size=16)
    files = write_layout(source, repository, options)
    assert {p.relative_to(repository).as_posix() for p in files} == {
        "digits_student/config.pbtxt",
        "digits_student/3/model.onnx",
    }
    config = text_format.Parse(
        (repository / "digits_student/config.pbtxt").read_text(), ModelConfig()
    )
    assert config.name == "digits_student"
    assert (config.platform, config.backend) == ("onnxruntime_onnx", "onnxruntime")
    # The batch dimension is dynamic in the graph: Triton batches, dims leave it out.
    assert config.max_batch_size == 16 and config.HasField("dynamic_batching")
    assert [(t.name, list(t.dims)) for t in config.input] == [("input", [1, 8, 8])]
    assert [(t.name, list(t.dims)) for t in config.output] == [("logits", [10])]
    data_types = (
        ModelConfig.DESCRIPTOR.fields_by_name["input"]
        .message_type.fields_by_name["data_type"]
        .enum_type.values_by_number
    )
    assert data_types[config.input[0].data_type].name == "TYPE_FP32"

    # onnxruntime on the path Triton would load (<name>/<version>/model.onnx), fed by the config.
    model_file = repository / config.name / "3" / "model.onnx"
    session = onnxruntime.InferenceSession(str(model_file), providers=["CPUExecutionProvider"])
    batch = np.random.default_rng(1).random((5, *config.input[0].dims), dtype=np.float32)
    (logits,) = session.run([config.output[0].name], {config.input[0].name: batch})
    assert logits.shape == (5, *config.output[0].dims)
    # The file is the job's, byte for byte: its metadata still says what it outputs.
    assert model_file.read_bytes() == source.read_bytes()
    metadata = session.get_modelmeta().custom_metadata_map
    assert metadata["outputs"] == "t_scaled_logits" and metadata["temperature"] == "100.0"
    assert "t_scaled_logits (T=100.0)" in (repository / "digits_student/config.pbtxt").read_text()


def test_a_fixed_batch_and_other_data_types_are_read_from_the_graph(tmp_path: Path) -> None:
    source = _classifier(tmp_path / "model.onnx", batch=4, dtype=TensorProto.UINT8)
    config = text_format.Parse(triton_config(onnx.load(str(source)), name="fixed"), ModelConfig())
    assert config.max_batch_size == 0 and not config.HasField("dynamic_batching")
    assert list(config.input[0].dims) == [4, 1, 8, 8] and list(config.output[0].dims) == [4, 10]
    enum = ModelConfig.DESCRIPTOR.fields_by_name["input"].message_type.fields_by_name["data_type"]
    assert enum.enum_type.values_by_number[config.input[0].data_type].name == "TYPE_UINT8"
    # Every ONNX type mapped is one of Triton's.
    assert set(TRITON_TYPES.values()) <= set(_DATA_TYPES)


def test_kserve_layout_is_the_repository_plus_a_v2_inference_service(tmp_path: Path) -> None:
    source = _classifier(tmp_path / "model.onnx")
    options = LayoutOptions("kserve", "Digits_Student", storage_uri="s3://models/digits")
    archive = layout_zip(source, tmp_path / "layout.zip", options)
    with zipfile.ZipFile(archive) as opened:
        assert sorted(opened.namelist()) == [
            "Digits_Student/1/model.onnx",
            "Digits_Student/config.pbtxt",
            MANIFEST,
        ]
        opened.extractall(tmp_path / "unpacked")
        manifest = yaml.safe_load(opened.read(MANIFEST))
    assert not (tmp_path / "layout.zip.files").exists()
    assert manifest["apiVersion"] == "serving.kserve.io/v1beta1"
    assert manifest["kind"] == "InferenceService"
    assert manifest["metadata"]["name"] == "digits-student"  # a DNS label
    assert manifest["metadata"]["annotations"]["harden/outputs"] == "t_scaled_logits"
    model = manifest["spec"]["predictor"]["model"]
    assert model == {
        "modelFormat": {"name": "onnx"},
        "protocolVersion": "v2",
        "runtime": "kserve-tritonserver",
        "storageUri": "s3://models/digits",
    }
    config = text_format.Parse(
        (tmp_path / "unpacked/Digits_Student/config.pbtxt").read_text(), ModelConfig()
    )
    assert config.name == "Digits_Student"


@pytest.mark.parametrize(
    ("name", "version", "max_batch_size"),
    [("../escape", 1, 8), ("", 1, 8), ("ok", 0, 8), ("ok", 1, 0), ("a b", 1, 8), ("x" * 65, 1, 8)],
)
def test_bad_names_versions_and_batch_sizes_are_refused_with_a_hint(
    tmp_path: Path, name: str, version: int, max_batch_size: int
) -> None:
    source = _classifier(tmp_path / "model.onnx")
    with pytest.raises(LayoutError) as refused:
        write_layout(
            source, tmp_path / "out", LayoutOptions("triton", name, version, max_batch_size)
        )
    assert refused.value.hint
    assert not (tmp_path / "out").exists()
