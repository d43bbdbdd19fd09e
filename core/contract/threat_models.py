"""Threat-model presets: the audit's default attack budgets, chosen by the kind of data.

A budget is only meaningful against the data it perturbs: 0.3 in L-inf is MNIST's standard
threat (Madry et al. 2018) but repaints a natural colour image. The presets are the budgets the
robustness literature reports for each kind of data (RobustBench's L-inf 8/255 and L2 0.5 for
CIFAR-10, 4/255 for ImageNet; Madry et al.'s 0.1-0.3 for MNIST). Torch-free, like the spec.

Chosen from one image's shape ``(C, H, W)`` unless the spec names one
(``evaluation.threat_model``):

- one channel (grayscale, e.g. 1x28x28 MNIST, 1x8x8 digits): ``mnist``;
- three or four channels, smaller side under 64 pixels (e.g. 3x32x32 CIFAR): ``cifar``;
- three or four channels, smaller side of 64 pixels or more (e.g. 3x224x224): ``imagenet``.

Budgets the spec gives (``epsilons_linf``, ``epsilons_l2``) override the preset's.
"""

from __future__ import annotations

from typing import Literal, get_args

ThreatModelName = Literal["mnist", "cifar", "imagenet"]
THREAT_MODELS: tuple[ThreatModelName, ...] = get_args(ThreatModelName)

# L-inf and L2 budgets per preset, in units of inputs in [0, 1]. ImageNet's robustness results
# are L-inf only (RobustBench), so its preset audits no L2 budget.
PRESET_BUDGETS: dict[ThreatModelName, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "mnist": ((0.1, 0.2, 0.3), (1.0, 2.0, 3.0)),
    "cifar": ((2 / 255, 4 / 255, 8 / 255), (0.25, 0.5)),
    "imagenet": ((1 / 255, 2 / 255, 4 / 255), ()),
}
# Images at least this many pixels on their smaller side are treated as ImageNet-like.
IMAGENET_MIN_SIDE = 64
THREAT_MODEL_RULE = (
    "1 channel: mnist; 3 or 4 channels with the smaller side under 64 pixels: cifar; "
    "3 or 4 channels, 64 pixels or more: imagenet"
)


def threat_model_for_shape(input_shape: tuple[int, int, int]) -> ThreatModelName:
    """The preset for images of ``input_shape`` (C, H, W), by the rule in the module docstring."""
    channels, height, width = input_shape
    if channels == 1:
        return "mnist"
    return "imagenet" if min(height, width) >= IMAGENET_MIN_SIDE else "cifar"
