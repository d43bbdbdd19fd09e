"""An ONNX upload's declared interface against the dataset, at submit (core.intake.onnx_interface):
static dimensions that cannot fit are refused, symbolic ones and unreadable interfaces are left
to the worker's check."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from core.errors import ModelDatasetMismatchError
from core.intake.onnx_interface import check_onnx_fits


def _identity(tmp_path: Path, inputs: list[object] | None, outputs: list[object] | None) -> Path:
    """A graph declaring those input and output dims (None: no shape at all)."""

    def info(name: str, dims: list[object] | None) -> onnx.ValueInfoProto:
        if dims is None:
            return helper.make_empty_tensor_value_info(name)
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, dims)

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])], "g", [info("x", inputs)],
        [info("y", outputs)],
    )  # fmt: skip
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph), str(path))
    return path


@pytest.mark.parametrize(
    ("inputs", "outputs"),
    [
        (["N", 1, 8, 8], ["N", 10]),
        (["N", "C", "H", "W"], ["N", "K"]),  # symbolic: fits anything
        (["N", 64], ["N", 10]),  # a flattening model: 64 values per 1x8x8 image
        (None, None),  # no declared shapes: the worker checks by running it
        (["N", 1, 8, 8, 1], ["N", 10, 1]),  # ranks this check does not read
    ],
)
def test_interfaces_that_may_fit_pass(tmp_path: Path, inputs, outputs) -> None:
    check_onnx_fits(_identity(tmp_path, inputs, outputs), (1, 8, 8), 10)


@pytest.mark.parametrize(
    ("inputs", "outputs", "says"),
    [
        (["N", 3, 8, 8], ["N", 10], "takes 3x8x8 per image"),
        (["N", 1, "H", 28], ["N", 10], "takes 1x?x28 per image"),
        (["N", 784], ["N", 10], "takes 784 values per image"),
        (["N", 1, 8, 8], ["N", 1000], "has 1000 values per image; the dataset has 10 classes"),
    ],
)
def test_interfaces_that_cannot_fit_are_refused_naming_both(
    tmp_path: Path, inputs, outputs, says
) -> None:
    with pytest.raises(ModelDatasetMismatchError) as refused:
        check_onnx_fits(_identity(tmp_path, inputs, outputs), (1, 8, 8), 10)
    assert says in refused.value.message and refused.value.hint
