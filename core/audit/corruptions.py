"""Accuracy of the upload and the hardened model under common corruptions at five severities
(Hendrycks & Dietterich, ICLR 2019: CIFAR-10-C/ImageNet-C; Mu & Gilmer 2019: MNIST-C),
generated on the fly from the first test images with fixed seeds.

Why not the ``imagecorruptions`` package: it is on the local index, but version 1.1.2 imports
``pkg_resources`` (gone from this environment's setuptools), scikit-image and OpenCV (neither is
a dependency of this service, and OpenCV would be one only for this), draws its noise from numpy's
global random state (not reproducible per corruption without mutating process-wide state), and
several of its corruptions assume RGB images of at least 32 pixels; MNIST-C's affine and stripe
corruptions are not in it at all. So each corruption is written here in torch, batched, with its
own ``torch.Generator``. The colour family uses CIFAR-10-C's severity constants (from Hendrycks'
make_cifar_c.py); the grayscale family takes MNIST-C's corruption types, whose paper fixes one
severity each, spread here over five levels whose fifth is about MNIST-C's strength.

Every corruption works on inputs rescaled to [0, 1] from the job's input range and back, keeps the
shape and clamps to the range, so the models see inputs of the kind they were trained on.
"""

from __future__ import annotations

import math
import time
import zlib
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core.contract.corruptions import (
    COLOUR_CORRUPTIONS,
    GRAYSCALE_CORRUPTIONS,
    CorruptionAccuracy,
    CorruptionDrop,
    CorruptionRobustness,
    CorruptionsSpec,
)
from core.names import CancelFn, ProgressFn
from core.stages import cancelled

Corruption = Callable[[Tensor, int, torch.Generator], Tensor]
NOISE_Z = 1.96  # 95%, two-sided, as the attack verdict's noise margin


def _level(values: tuple[float, ...], severity: int) -> float:
    return values[severity - 1]


def gaussian_noise(x: Tensor, severity: int, gen: torch.Generator) -> Tensor:
    sigma = _level((0.04, 0.06, 0.08, 0.09, 0.10), severity)
    return x + sigma * torch.randn(x.shape, generator=gen)


def shot_noise(x: Tensor, severity: int, gen: torch.Generator) -> Tensor:
    # Photon counts: Poisson with rate x * c, so fewer photons (smaller c) is noisier.
    photons = _level((500, 250, 100, 75, 50), severity)
    return torch.poisson(x.clamp(0, 1) * photons, generator=gen) / photons


def impulse_noise(x: Tensor, severity: int, gen: torch.Generator) -> Tensor:
    # Salt and pepper on each value with probability `amount`, half each (skimage's s&p).
    amount = _level((0.01, 0.02, 0.03, 0.05, 0.07), severity)
    draw = torch.rand(x.shape, generator=gen)
    out = x.clone()
    out[draw < amount / 2] = 0.0
    out[(draw >= amount / 2) & (draw < amount)] = 1.0
    return out


def _blur(x: Tensor, sigma: float) -> Tensor:
    radius = max(1, min(math.ceil(3 * sigma), x.shape[-1] - 1, x.shape[-2] - 1))
    offsets = torch.arange(-radius, radius + 1, dtype=x.dtype)
    kernel = torch.exp(-(offsets**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    channels = x.shape[1]
    # Separable, per channel, with reflected borders (scipy's and skimage's default mode).
    rows = kernel.view(1, 1, 1, -1).repeat(channels, 1, 1, 1)
    cols = kernel.view(1, 1, -1, 1).repeat(channels, 1, 1, 1)
    out = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="reflect"), rows, groups=channels)
    return F.conv2d(F.pad(out, (0, 0, radius, radius), mode="reflect"), cols, groups=channels)


def gaussian_blur(x: Tensor, severity: int, gen: torch.Generator) -> Tensor:
    return _blur(x, _level((0.4, 0.6, 0.7, 0.8, 1.0), severity))


def contrast(x: Tensor, severity: int, gen: torch.Generator) -> Tensor:
    factor = _level((0.75, 0.5, 0.4, 0.3, 0.15), severity)
    means = x.mean(dim=(-2, -1), keepdim=True)
    return (x - means) * factor + means


def brightness(x: Tensor, severity: int, gen: torch.Generator) -> Tensor:
    # CIFAR-10-C adds c to HSV's value V (the largest channel) and clips it to 1, hue and
    # saturation kept. With H and S fixed every channel is proportional to V, so that is each
    # pixel scaled by V'/V, without a colour-space round trip; a black pixel (V = 0, S = 0)
    # becomes grey V'. For one channel it is x + c. (An earlier version added c to every channel:
    # bench/results/corruptions.md measured it moving pixels twice as far as CIFAR-10-C.)
    value = x.amax(dim=1, keepdim=True)
    brighter = (value + _level((0.05, 0.1, 0.15, 0.2, 0.3), severity)).clamp(max=1.0)
    scale = torch.where(value > 0, brighter / value.clamp_min(1e-12), torch.zeros_like(value))
    return torch.where(value > 0, x * scale, brighter.expand_as(x))


def _plasma(count: int, size: int, decay: float, gen: torch.Generator) -> Tensor:
    """Diamond-square height maps in [0, 1] (ImageNet-C's plasma_fractal), one per image."""
    grid = torch.zeros(count, size, size, dtype=torch.float64)
    step, wibble = size, 100.0

    def wibbled(values: Tensor) -> Tensor:
        # ImageNet-C draws each offset uniformly in (-wibble, wibble) and scales it by wibble
        # again: wibble squared. (Scaled once, the fog's shape differed from ImageNet-C's by 5-7
        # points of accuracy in bench/results/corruptions.md.)
        return values / 4 + wibble * wibble * (2 * torch.rand(values.shape, generator=gen) - 1)

    while step >= 2:
        half = step // 2
        corners = grid[:, 0:size:step, 0:size:step]
        square = corners + corners.roll(-1, dims=1)
        square = square + square.roll(-1, dims=2)
        grid[:, half:size:step, half:size:step] = wibbled(square.to(torch.float64))
        centres = grid[:, half:size:step, half:size:step]
        corners = grid[:, 0:size:step, 0:size:step]
        left = centres + centres.roll(1, dims=1) + corners + corners.roll(-1, dims=2)
        grid[:, 0:size:step, half:size:step] = wibbled(left)
        top = centres + centres.roll(1, dims=2) + corners + corners.roll(-1, dims=1)
        grid[:, half:size:step, 0:size:step] = wibbled(top)
        step //= 2
        wibble /= decay
    low = grid.amin(dim=(1, 2), keepdim=True)
    high = grid.amax(dim=(1, 2), keepdim=True)
    return (grid - low) / (high - low).clamp_min(1e-12)


def _fog(x: Tensor, levels: tuple[tuple[float, float], ...], severity: int, gen: torch.Generator):
    strength, decay = levels[severity - 1]
    size = 1 << max(1, math.ceil(math.log2(max(x.shape[-2:]))))
    fog_map = _plasma(x.shape[0], size, decay, gen)[:, : x.shape[-2], : x.shape[-1]]
    peak = x.amax(dim=(1, 2, 3), keepdim=True)
    fogged = x + strength * fog_map.unsqueeze(1).to(x.dtype)
    return fogged * peak / (peak + strength)


def fog(x: Tensor, severity: int, gen: torch.Generator) -> Tensor:
    # CIFAR-10-C's constants for colour (32px) inputs.
    return _fog(x, ((0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)), severity, gen)


def grayscale_fog(x: Tensor, severity: int, gen: torch.Generator) -> Tensor:
    # MNIST-C takes ImageNet-C's fog; its constants are these.
    return _fog(x, ((1.5, 2), (2.0, 2), (2.5, 1.7), (2.5, 1.5), (3.0, 1.4)), severity, gen)


def _box_matrix(size_in: int, size_out: int) -> Tensor:
    """PIL's BOX resampling along one axis as a (size_out, size_in) matrix: output pixel i is the
    plain mean of the input pixels whose centres lie within half a scale of its centre (a
    downscale), or the one input pixel under its centre (an upscale). torch's ``area`` weighs
    pixels by overlap and its ``nearest`` rounds differently: both differed from CIFAR-10-C's
    pixelate (PIL BOX down, then BOX up) at its non-integer ratios
    (bench/results/corruptions.md)."""
    scale = size_in / size_out
    support = 0.5 * max(scale, 1.0)
    centres = (torch.arange(size_out, dtype=torch.float64) + 0.5) * scale
    offsets = torch.arange(size_in, dtype=torch.float64)[None, :] + 0.5 - centres[:, None]
    weights = ((offsets >= -support) & (offsets < support)).to(torch.float64)
    return weights / weights.sum(dim=1, keepdim=True).clamp_min(1.0)


def _box_resize(x: Tensor, height: int, width: int) -> Tensor:
    rows = _box_matrix(x.shape[-2], height).to(x.dtype)
    columns = _box_matrix(x.shape[-1], width).to(x.dtype)
    return rows @ x @ columns.T


def pixelate(x: Tensor, severity: int, gen: torch.Generator) -> Tensor:
    factor = _level((0.95, 0.9, 0.85, 0.75, 0.65), severity)
    height, width = x.shape[-2:]
    small = _box_resize(x, max(1, int(height * factor)), max(1, int(width * factor)))
    return _box_resize(small, height, width)


def _affine(x: Tensor, theta: Tensor) -> Tensor:
    # Zeros outside: the lower end of the input range, MNIST's background.
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _signs(count: int, gen: torch.Generator) -> Tensor:
    return torch.randint(0, 2, (count,), generator=gen).to(torch.float64) * 2 - 1


def rotate(x: Tensor, severity: int, gen: torch.Generator) -> Tensor:
    angle = math.radians(_level((6, 12, 18, 24, 30), severity)) * _signs(x.shape[0], gen)
    cos, sin = torch.cos(angle), torch.sin(angle)
    zero = torch.zeros_like(cos)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    return _affine(x, theta)


def shear(x: Tensor, severity: int, gen: torch.Generator) -> Tensor:
    amount = _level((0.1, 0.2, 0.3, 0.4, 0.5), severity) * _signs(x.shape[0], gen)
    one, zero = torch.ones_like(amount), torch.zeros_like(amount)
    theta = torch.stack([torch.stack([one, amount, zero], 1), torch.stack([zero, one, zero], 1)], 1)
    return _affine(x, theta)


def scale(x: Tensor, severity: int, gen: torch.Generator) -> Tensor:
    # Shrinks the digit about the centre (MNIST-C's scale): sampling a grid 1/factor as wide.
    factor = _level((0.9, 0.8, 0.7, 0.6, 0.5), severity)
    theta = torch.tensor([[1 / factor, 0, 0], [0, 1 / factor, 0]]).expand(x.shape[0], 2, 3)
    return _affine(x, theta)


def translate(x: Tensor, severity: int, gen: torch.Generator) -> Tensor:
    # A shift of this fraction of the side in a random direction (grid units span 2 per side).
    shift = 2 * _level((0.05, 0.1, 0.15, 0.2, 0.25), severity)
    angle = 2 * math.pi * torch.rand(x.shape[0], generator=gen, dtype=torch.float64)
    one, zero = torch.ones_like(angle), torch.zeros_like(angle)
    theta = torch.stack(
        [
            torch.stack([one, zero, shift * torch.cos(angle)], 1),
            torch.stack([zero, one, shift * torch.sin(angle)], 1),
        ],
        1,
    )
    return _affine(x, theta)


def stripe(x: Tensor, severity: int, gen: torch.Generator) -> Tensor:
    # MNIST-C's stripe inverts a vertical band of the image; here a band this fraction wide
    # (at least a column) at a random place per image.
    width = x.shape[-1]
    band = max(1, round(width * _level((0.05, 0.1, 0.15, 0.2, 0.25), severity)))
    starts = torch.randint(0, width - band + 1, (x.shape[0],), generator=gen)
    columns = torch.arange(width)
    mask = (columns >= starts[:, None]) & (columns < starts[:, None] + band)
    mask = mask[:, None, None, :].expand_as(x)
    return torch.where(mask, 1.0 - x, x)


COLOUR: dict[str, Corruption] = {
    "gaussian_noise": gaussian_noise,
    "shot_noise": shot_noise,
    "impulse_noise": impulse_noise,
    "gaussian_blur": gaussian_blur,
    "contrast": contrast,
    "brightness": brightness,
    "fog": fog,
    "pixelate": pixelate,
}
GRAYSCALE: dict[str, Corruption] = {
    "shot_noise": shot_noise,
    "impulse_noise": impulse_noise,
    "rotate": rotate,
    "shear": shear,
    "scale": scale,
    "translate": translate,
    "stripe": stripe,
    "fog": grayscale_fog,
    "brightness": brightness,
    "contrast": contrast,
}
assert tuple(COLOUR) == COLOUR_CORRUPTIONS and tuple(GRAYSCALE) == GRAYSCALE_CORRUPTIONS


def family_of(shape: tuple[int, ...]) -> str:
    """'colour' for 3-channel images (C, H, W), else 'grayscale'."""
    return "colour" if len(shape) == 3 and shape[0] == 3 else "grayscale"


def corrupt(
    x: Tensor,
    name: str,
    severity: int,
    *,
    seed: int,
    input_range: tuple[float, float] = (0.0, 1.0),
) -> Tensor:
    """``x`` (N, C, H, W) in ``input_range`` under one corruption at one severity: same shape, in
    range, the same for the same seed (its generator is seeded by seed, name and severity)."""
    family = COLOUR if family_of(tuple(x.shape[1:])) == "colour" else GRAYSCALE
    low, high = input_range
    unit = ((x.detach().cpu().to(torch.float32) - low) / (high - low)).clamp(0, 1)
    gen = torch.Generator().manual_seed(
        seed * 1_000_003 + zlib.crc32(f"{name}/{severity}".encode())
    )
    out = family[name](unit, severity, gen).to(torch.float32).clamp(0, 1)
    return (out * (high - low) + low).to(x.dtype)


@torch.no_grad()
def _correct(model: nn.Module, x: Tensor, y: Tensor, batch: int, device: torch.device) -> Tensor:
    hits = []
    for start in range(0, len(x), batch):
        logits = model(x[start : start + batch].to(device))
        hits.append(logits.argmax(dim=1).cpu() == y[start : start + batch])
    return torch.cat(hits)


def _paired(up: Tensor, st: Tensor) -> tuple[float, float]:
    """Drop (upload - student) in points and 1.96 standard errors of it, the images as units:
    each image's difference averaged over the cells, then the error of their mean."""
    per_image = (up.to(torch.float64) - st.to(torch.float64)).mean(dim=0)
    n = per_image.numel()
    spread = float(per_image.std(unbiased=True)) if n > 1 else 1.0
    return 100 * float(per_image.mean()), 100 * NOISE_Z * spread / math.sqrt(n)


def corruption_robustness(
    uploaded: nn.Module,
    student: nn.Module,
    x_test: Tensor,
    y_test: Tensor,
    spec: CorruptionsSpec,
    *,
    input_range: tuple[float, float],
    device: torch.device,
    on_progress: ProgressFn | None = None,
    should_cancel: CancelFn | None = None,
    stage: str = "corruptions",
) -> CorruptionRobustness:
    """Both models (each taking raw inputs) on the same corrupted copies of the first
    ``spec.samples`` test images, per corruption and severity, and what hardening cost."""
    started = time.perf_counter()
    x = x_test[: spec.samples].cpu()
    y = y_test[: spec.samples].cpu()
    family = family_of(tuple(x.shape[1:]))
    available = COLOUR if family == "colour" else GRAYSCALE
    names = list(available) if spec.names is None else list(dict.fromkeys(spec.names))
    skipped = [name for name in names if name not in available]
    names = [name for name in names if name in available]
    models = {"uploaded": uploaded, "student": student}
    for model in models.values():
        model.eval()
    clean = {key: _correct(m, x, y, spec.batch_size, device) for key, m in models.items()}
    cells: dict[tuple[str, int], dict[str, Tensor]] = {}
    total = len(names) * len(spec.severities)
    for name in names:
        for severity in spec.severities:
            if should_cancel is not None and should_cancel():
                raise cancelled("cancelled during the corruption evaluation", stage)
            corrupted = corrupt(x, name, severity, seed=spec.seed, input_range=input_range)
            cells[name, severity] = {
                key: _correct(m, corrupted, y, spec.batch_size, device) for key, m in models.items()
            }
            if on_progress is not None:
                on_progress(stage, len(cells), total)
    accuracies = [
        CorruptionAccuracy(
            corruption=name,
            severity=severity,
            uploaded=float(hits["uploaded"].float().mean()),
            student=float(hits["student"].float().mean()),
        )
        for (name, severity), hits in cells.items()
    ]
    per_corruption = []
    for name in names:
        up = torch.stack([cells[name, s]["uploaded"] for s in spec.severities])
        st = torch.stack([cells[name, s]["student"] for s in spec.severities])
        drop, noise = _paired(up, st)
        per_corruption.append(
            CorruptionDrop(
                corruption=name,
                uploaded=float(up.float().mean()),
                student=float(st.float().mean()),
                drop_points=drop,
                noise_points=noise,
                # Beyond the margin and beyond sampling noise: a drop that 1.96 standard errors
                # could explain is not called a cost, as the attack verdict does for gains.
                weaker=drop > spec.margin and drop > noise,
            )
        )
    if cells:
        up_all = torch.stack([hits["uploaded"] for hits in cells.values()])
        st_all = torch.stack([hits["student"] for hits in cells.values()])
        drop, noise = _paired(up_all, st_all)
        mean = {"uploaded": float(up_all.float().mean()), "student": float(st_all.float().mean())}
    else:
        drop, noise, mean = 0.0, 0.0, {key: float(c.float().mean()) for key, c in clean.items()}
    return CorruptionRobustness(
        family="colour" if family == "colour" else "grayscale",
        samples=len(x),
        seed=spec.seed,
        margin_points=spec.margin,
        clean={key: float(c.float().mean()) for key, c in clean.items()},
        mean_corruption_accuracy=mean,
        relative_change=(mean["student"] - mean["uploaded"]) / mean["uploaded"]
        if mean["uploaded"] > 0
        else None,
        drop_points=drop,
        noise_points=noise,
        per_corruption=per_corruption,
        accuracies=accuracies,
        seconds=time.perf_counter() - started,
        skipped=skipped,
    )
