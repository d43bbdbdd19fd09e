"""An ONNX upload's interface against its dataset, at submit: torch-free, for the API.

An ONNX file declares its input and output shapes, so a model that cannot fit the dataset (3
channels for grayscale images, 784 values for 8x8 digits, 1,000 outputs for 10 classes) is
refused with a 422 when the job is submitted, before it is queued, instead of failing in the
worker. Only static dimensions are compared: a symbolic one (``N``, ``height``) fits anything,
and a graph whose interface cannot be read this way is left to the worker's check, which runs
the model on two images (core.intake.upload.check_model_io). TorchScript and torch.export files
carry no such declaration the API could read without torch, so they are checked by the worker.
"""

from __future__ import annotations

import math
from pathlib import Path

from core.errors import ModelDatasetMismatchError

# The builtin datasets' (C, H, W) and classes: known at submit without loading them.
BUILTIN_SHAPES: dict[str, tuple[tuple[int, int, int], int]] = {
    "builtin:mnist": ((1, 28, 28), 10),
    "builtin:digits": ((1, 8, 8), 10),
}


def _dims(value_info: object) -> list[int | None] | None:
    """The static dimensions of a graph input or output (None for a symbolic one), or None
    when it is no tensor of known rank."""
    tensor = value_info.type.tensor_type  # type: ignore[attr-defined]
    if not tensor.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]


def _shape_text(dims: list[int | None]) -> str:
    return "x".join("?" if d is None else str(d) for d in dims)


def check_onnx_fits(path: Path, image_shape: tuple[int, int, int], num_classes: int) -> None:
    """Refuse (ModelDatasetMismatchError) an ONNX model whose declared input or output cannot
    take the dataset's (C, H, W) images or give one logit per class."""
    import onnx

    graph = onnx.load_model(str(path), load_external_data=False).graph
    initializers = {tensor.name for tensor in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    given = "x".join(str(d) for d in image_shape)
    if len(inputs) == 1 and (dims := _dims(inputs[0])) is not None:
        per_image = dims[1:]
        if len(per_image) == 3:
            fits = all(d is None or d == e for d, e in zip(per_image, image_shape, strict=True))
            expected = _shape_text(per_image)
        elif len(per_image) == 1:
            fits = per_image[0] is None or per_image[0] == math.prod(image_shape)
            expected = f"{_shape_text(per_image)} values"
        else:
            fits, expected = True, ""
        if not fits:
            raise ModelDatasetMismatchError(
                f"the ONNX model's input {inputs[0].name!r} takes {expected} per image "
                f"({_shape_text(dims)}); the dataset's images are {given} ({num_classes} "
                "classes)",
                hint=f"use a dataset of {expected} images (e.g. grayscale to RGB: "
                f"np.repeat(x, 3, axis=1) before saving the .npz), or a model exported for "
                f"{given} inputs",
            )
    out = _dims(graph.output[0]) if len(graph.output) else None
    if out is not None and len(out) == 2 and out[1] is not None and out[1] != num_classes:
        raise ModelDatasetMismatchError(
            f"the ONNX model's output {graph.output[0].name!r} has {out[1]} values per image; "
            f"the dataset has {num_classes} classes",
            hint=f"the model's last layer must have {num_classes} outputs, one per dataset "
            "class: use a model trained on this dataset's classes, or a dataset with as many "
            "classes as the model has outputs",
        )
