"""Tiny trained classifiers on builtin:digits, written in every upload format (test helper)."""

from __future__ import annotations

import functools
import warnings
from pathlib import Path

import onnx
import onnx2torch
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from core.datasets.dataset import Dataset
from core.datasets.references import load_dataset
from core.intake.zoo import build_zoo_model

FORMATS = ("torchscript", "torch_export", "onnx", "safetensors")
SUFFIX = {"torchscript": ".pt", "torch_export": ".pt2", "onnx": ".onnx", "safetensors": ".st"}


@functools.cache
def digits() -> Dataset:
    return load_dataset("builtin:digits")


@functools.cache
def _trained_mlp_state() -> dict[str, torch.Tensor]:
    data = digits()
    torch.manual_seed(0)
    model = build_zoo_model("mlp", num_classes=data.num_classes, input_shape=data.input_shape)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(15):
        order = torch.randperm(len(data.x_train), generator=generator)
        for start in range(0, len(order), 64):
            index = order[start : start + 64]
            loss = F.cross_entropy(model(data.x_train[index]), data.y_train[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def trained_mlp() -> nn.Module:
    """The zoo ``mlp`` trained at T=1 on digits (about 95% test accuracy), eval mode."""
    data = digits()
    model = build_zoo_model("mlp", num_classes=data.num_classes, input_shape=data.input_shape)
    model.load_state_dict(_trained_mlp_state())
    return model.eval()


def write_model(fmt: str, directory: Path) -> Path:
    """``trained_mlp()`` saved as ``fmt`` in ``directory``."""
    model = trained_mlp()
    sample = digits().x_test[:4]
    path = directory / f"model{SUFFIX[fmt]}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if fmt == "torchscript":
            torch.jit.save(torch.jit.script(model), str(path))
        elif fmt == "torch_export":
            batch = torch.export.Dim("batch")
            program = torch.export.export(model, (sample,), dynamic_shapes=({0: batch},))
            torch.export.save(program, str(path))
        elif fmt == "onnx":
            torch.onnx.export(
                model,
                (sample,),
                str(path),
                input_names=["x"],
                output_names=["y"],
                dynamo=False,
                dynamic_axes={"x": {0: "n"}, "y": {0: "n"}},
            )
        else:
            save_file(model.state_dict(), str(path))
    return path


def loaded_module(fmt: str, directory: Path) -> nn.Module:
    """The module shape each format loads as (TorchScript, torch.export graph, onnx2torch graph)."""
    path = write_model(fmt, directory)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if fmt == "torchscript":
            return torch.jit.load(str(path))
        if fmt == "torch_export":
            return torch.export.load(str(path)).module()
        if fmt == "onnx":
            return onnx2torch.convert(onnx.load(str(path)))
    return trained_mlp()
