"""How a run uses its device (core/compute.py): bfloat16 autocast, channels-last and cuDNN
autotuning only on CUDA unless asked for; on the CPU a run is exactly float32 by default."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core.compute import Compute
from core.contract.spec import HardenSpec
from core.hardening.training import train_epochs
from core.intake.upload import load_model
from core.intake.zoo import build_zoo_model
from core.plan import RunPlan
from tests.core.model_files import digits, trained_mlp


def test_the_cpu_gets_float32_and_no_gpu_layout_unless_bfloat16_is_asked_for() -> None:
    assert Compute.resolve("cpu") == Compute("float32", False, False)
    # Even where the CPU could run bfloat16, 'auto' keeps it off: emulated, it is slow.
    assert Compute.resolve("cpu", bfloat16_supported=True).training_precision == "float32"
    assert Compute.resolve("cpu", precision="bfloat16") == Compute("bfloat16", False, False)


def test_a_gpu_gets_bfloat16_only_where_supported_and_each_option_can_be_switched_off() -> None:
    assert Compute.resolve("cuda:1", bfloat16_supported=True) == Compute("bfloat16", True, True)
    assert Compute.resolve("cuda:0").training_precision == "float32"  # e.g. a V100
    off = Compute.resolve(
        "cuda:0", precision="float32", channels_last=False, cudnn_benchmark=False,
        bfloat16_supported=True,
    )  # fmt: skip
    assert off == Compute("float32", False, False)
    with pytest.raises(ValueError, match="precision must be one of auto, float32, bfloat16"):
        Compute.resolve("cuda:0", precision="float16")  # type: ignore[arg-type]


def _train(compute: Compute) -> tuple[list[float], list[tuple[bool, torch.dtype]]]:
    """Two epochs of the MLP on digits; what autocast said inside every training step."""
    data = digits()
    spec = HardenSpec(dataset="builtin:digits", batch_size=64, learning_rate=1e-3)
    plan = dataclasses.replace(
        RunPlan.resolve(spec, dataset=spec.dataset, train_samples=len(data.y_train)),
        compute=compute,
    )
    seen: list[tuple[bool, torch.dtype]] = []

    def loss(logits: Tensor, labels: Tensor) -> Tensor:
        seen.append((torch.is_autocast_enabled("cpu"), logits.dtype))
        return F.cross_entropy(logits, labels)

    torch.manual_seed(0)
    model: nn.Module = trained_mlp()
    losses = train_epochs(
        model, data.x_train, data.y_train, loss, epochs=2, plan=plan, stage="student",
        generator=torch.Generator().manual_seed(0), on_progress=lambda *_: None,
        should_cancel=lambda: False,
    )  # fmt: skip
    return losses, seen


def test_training_autocasts_on_the_cpu_only_when_bfloat16_is_asked_for() -> None:
    losses, seen = _train(Compute.resolve("cpu"))
    assert seen and all(state == (False, torch.float32) for state in seen)
    bf16_losses, bf16_seen = _train(Compute.resolve("cpu", precision="bfloat16"))
    assert bf16_seen and all(state == (True, torch.bfloat16) for state in bf16_seen)
    # The same training, at 8 bits of mantissa: close, finite, not identical.
    assert all(abs(a - b) < 0.05 for a, b in zip(losses, bf16_losses, strict=True))
    assert losses != bf16_losses


def test_the_channels_last_path_trains_a_torchscript_conv_net_and_hands_it_back_contiguous(
    tmp_path: Path,
) -> None:
    # core.compute only chooses channels-last on CUDA; forced here, the same code runs on the CPU
    # (which supports the layout), through a TorchScript upload as jobs load it.
    data = digits()
    torch.manual_seed(0)
    conv = build_zoo_model("papernot_mnist", num_classes=10, input_shape=data.input_shape).eval()
    path = tmp_path / "conv.pt"
    torch.jit.save(torch.jit.script(conv), str(path))
    spec = HardenSpec(dataset="builtin:digits", batch_size=64)
    base = RunPlan.resolve(spec, dataset=spec.dataset, train_samples=len(data.y_train))
    losses = {}
    for layout in (False, True):
        model = load_model(path, num_classes=10, input_shape=data.input_shape).fresh_copy(
            reinitialise=False
        )
        plan = dataclasses.replace(base, compute=Compute(channels_last=layout))
        torch.manual_seed(0)
        losses[layout] = train_epochs(
            model, data.x_train, data.y_train, F.cross_entropy, epochs=1, plan=plan,
            stage="student", generator=torch.Generator().manual_seed(0),
            on_progress=lambda *_: None, should_cancel=lambda: False,
        )  # fmt: skip
        weights = [p for p in model.parameters() if p.dim() == 4]
        assert weights and all(p.is_contiguous() for p in weights)
    # The same arithmetic in another memory order: equal up to float rounding.
    assert losses[True] == pytest.approx(losses[False], rel=1e-4)
