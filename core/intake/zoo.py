"""The architecture zoo: models a safetensors upload names, and students a job may ask for.

Every model here is plain ``nn.Sequential``/``nn.Module`` code with sizes fixed at construction
(no lazy layers), so it scripts with TorchScript and exports to ONNX unchanged.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torchvision
from torch import nn

from core.contract.distillation import ZOO_ARCHITECTURES
from core.errors import UnsupportedModelError

InputShape = tuple[int, int, int]


def _flat_size(features: nn.Module, input_shape: InputShape) -> int:
    # A dry run on one zero image gives the flatten size for any H x W; LazyLinear would do the
    # same lazily but cannot be scripted or exported before its first call.
    with torch.no_grad():
        out = features(torch.zeros(1, *input_shape))
    return int(out[0].numel())


def _conv_padding(input_shape: InputShape) -> int:
    # Papernot et al. use unpadded ("valid") 3x3 convs; two conv-conv-pool blocks shrink H to
    # ((H - 4) // 2 - 4) // 2, which leaves nothing of an 8x8 digits image. Keep the paper's
    # layout whenever at least a 2x2 map survives (H, W >= 20, so MNIST's 28x28 gives the
    # paper's 64*4*4 features) and pad by 1 below that, where every conv keeps the size.
    smallest = min(input_shape[1], input_shape[2])
    return 0 if ((smallest - 4) // 2 - 4) // 2 >= 2 else 1


def _conv_block(in_ch: int, out_ch: int, padding: int) -> list[nn.Module]:
    return [
        nn.Conv2d(in_ch, out_ch, 3, padding=padding),
        nn.ReLU(),
        nn.Conv2d(out_ch, out_ch, 3, padding=padding),
        nn.ReLU(),
        nn.MaxPool2d(2),
    ]


class PapernotNet(nn.Module):
    """Papernot et al. (2016)'s CNN family: two conv-conv-maxpool blocks, three FC layers."""

    def __init__(
        self,
        *,
        num_classes: int,
        input_shape: InputShape,
        channels: tuple[int, int],
        hidden: int,
    ) -> None:
        super().__init__()
        padding = _conv_padding(input_shape)
        self.features = nn.Sequential(
            *_conv_block(input_shape[0], channels[0], padding),
            *_conv_block(channels[0], channels[1], padding),
            nn.Flatten(),
        )
        flat = _flat_size(self.features, input_shape)
        self.classifier = nn.Sequential(
            nn.Linear(flat, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def papernot_mnist(*, num_classes: int, input_shape: InputShape) -> nn.Module:
    """Papernot et al.'s MNIST net: conv 32, 32, pool, 64, 64, pool, FC 200, 200, classes."""
    return PapernotNet(
        num_classes=num_classes, input_shape=input_shape, channels=(32, 64), hidden=200
    )


def papernot_cifar(*, num_classes: int, input_shape: InputShape) -> nn.Module:
    """Papernot et al.'s CIFAR10 net: conv 64, 64, pool, 128, 128, pool, FC 256, 256, classes."""
    return PapernotNet(
        num_classes=num_classes, input_shape=input_shape, channels=(64, 128), hidden=256
    )


def resnet18(*, num_classes: int, input_shape: InputShape) -> nn.Module:
    """torchvision's ResNet-18 (random init) with its stem adapted to the input channels/size."""
    model = torchvision.models.resnet18(weights=None, num_classes=num_classes)
    channels, height, width = input_shape
    if min(height, width) < 64:
        # The ImageNet stem (7x7 stride 2 + maxpool) divides small images by 4 before the first
        # block; the usual CIFAR variant keeps the resolution with a 3x3 stride-1 stem.
        model.conv1 = nn.Conv2d(channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()  # type: ignore[assignment]
    elif channels != 3:
        model.conv1 = nn.Conv2d(channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    return model


def mlp(*, num_classes: int, input_shape: InputShape) -> nn.Module:
    """A tiny multilayer perceptron (flatten -> 64 -> classes); fast enough for tests."""
    features = int(input_shape[0] * input_shape[1] * input_shape[2])
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(features, 64),
        nn.ReLU(),
        nn.Linear(64, num_classes),
    )


# Derived from the contract's names (the API refuses an unknown one without torch): each
# architecture is built by the function of its name above.
ZOO: dict[str, Callable[..., nn.Module]] = {name: globals()[name] for name in ZOO_ARCHITECTURES}


def build_zoo_model(name: str, *, num_classes: int, input_shape: InputShape) -> nn.Module:
    """A freshly initialised zoo model ``name`` mapping ``input_shape`` images to class logits."""
    if name not in ZOO:
        raise UnsupportedModelError(
            f"unknown architecture {name!r}",
            hint=f"use one of the zoo architectures: {', '.join(sorted(ZOO))}",
            architecture=name,
        )
    if num_classes < 2:
        raise UnsupportedModelError(
            f"a classifier needs at least 2 classes, got num_classes={num_classes}",
            hint="check the dataset's labels",
        )
    if len(input_shape) != 3 or min(input_shape) < 1:
        raise UnsupportedModelError(
            f"input_shape must be (channels, height, width) with positive sizes, got {input_shape}",
            hint="pass the dataset's input_shape",
        )
    return ZOO[name](num_classes=num_classes, input_shape=tuple(int(s) for s in input_shape))
