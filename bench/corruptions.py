"""Common-corruption accuracy of the upload, its defensively distilled student (T=100) and its
PGD-trained version (issue 28), on builtin:mnist (MNIST-C's grayscale family) and on a generated
3x32x32 set (CIFAR-10-C's colour family), measured by the service's own
``core.audit.corruptions.corruption_robustness`` (the numbers a job's report shows), then
cross-checked on a subset against implementations that share no code with it:

- colour: ``imagecorruptions`` 1.1.2 (Hendrycks' ImageNet-C code, numpy/scikit-image/PIL). Its
  constants are ImageNet-C's, not CIFAR-10-C's, so each row compares like with like: our severity
  whose constant equals one of the package's (gaussian/impulse noise, contrast, brightness), or,
  where no constant is shared (shot noise, pixelate, fog), the service's code run with the
  package's constant. Same upload on both versions of the same images: accuracies, their paired
  difference with 1.96 standard errors, and for deterministic corruptions the per-pixel gap.
  Its ``gaussian_blur`` and ``glass_blur`` pass ``multichannel=`` to scikit-image's
  ``gaussian``, which scikit-image 0.26 no longer takes (TypeError), so blur is not checked; its
  ``fog`` uses ``np.float_``, gone in NumPy 2, so the bench aliases it to ``np.float64`` (nothing
  else changes) before calling it.
- grayscale: MNIST-C's fog against the package's fog (the same ImageNet-C constants; called below
  the package's 32-pixel check, which is its wrapper's and not the function's), and the affine
  corruptions (rotate, shear, scale, translate) against scipy.ndimage with the same per-image
  parameters, drawn from the same seeded generator as the service's.

    .venv/bin/python -m bench.corruptions --out bench/results/corruptions.md
"""

from __future__ import annotations

import argparse
import copy
import math
import platform
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import torch
from torch import Tensor, nn

import core.audit.corruptions as ours
from bench.common import Timer, baseline, distilled, mnist, train
from core.contract.corruptions import CorruptionRobustness, CorruptionsSpec
from core.contract.spec import HardenSpec
from core.datasets.dataset import Dataset
from core.hardening.registry import METHODS
from core.intake.zoo import PapernotNet
from core.plan import RunPlan

TEMPERATURE = 100.0
CPU = torch.device("cpu")
Z = 1.96


# --- the generated 3x32x32 set ---------------------------------------------------------------


def colour_shapes(count: int, seed: int) -> tuple[Tensor, Tensor]:
    """Ten classes of coloured shapes and textures (disc, ring, square, diamond, plus, X,
    horizontal and vertical stripes, triangle, checkerboard) at random places, sizes and
    colours, with pixel noise; quantised to 1/255 so a uint8 round trip is exact."""
    gen = torch.Generator().manual_seed(seed)

    def uniform(low: float, high: float, *shape: int) -> Tensor:
        return low + (high - low) * torch.rand(shape, generator=gen)

    labels = torch.randint(0, 10, (count,), generator=gen)
    ys, xs = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    cx, cy, r = (
        uniform(12, 20, count, 1, 1),
        uniform(12, 20, count, 1, 1),
        uniform(8, 12, count, 1, 1),
    )
    dx, dy = xs - cx, ys - cy
    period = uniform(5, 8, count, 1, 1)
    phase = uniform(0, 2 * math.pi, count, 1, 1)
    masks = torch.stack(
        [
            dx**2 + dy**2 <= r**2,
            (dx**2 + dy**2 <= r**2) & (dx**2 + dy**2 >= (0.55 * r) ** 2),
            torch.maximum(dx.abs(), dy.abs()) <= 0.8 * r,
            dx.abs() + dy.abs() <= r,
            ((dx.abs() <= 0.3 * r) & (dy.abs() <= r)) | ((dy.abs() <= 0.3 * r) & (dx.abs() <= r)),
            (((dx - dy).abs() <= 0.4 * r) | ((dx + dy).abs() <= 0.4 * r))
            & (torch.maximum(dx.abs(), dy.abs()) <= 0.8 * r),
            torch.sin(2 * math.pi * ys / period + phase) > 0,
            torch.sin(2 * math.pi * xs / period + phase) > 0,
            (dy.abs() <= 0.8 * r) & (dx.abs() <= (dy + 0.8 * r) / 2),
            (torch.floor((xs + cx) / (period - 1)) + torch.floor((ys + cy) / (period - 1))) % 2
            == 1,
        ],
        dim=1,
    )  # (count, class, 32, 32)
    mask = masks[torch.arange(count), labels].unsqueeze(1).float()
    # Background at least 0.35 from the foreground in every channel, so no shape vanishes.
    foreground = uniform(0, 1, count, 3, 1, 1)
    background = (foreground + 0.5 + uniform(-0.15, 0.15, count, 3, 1, 1)) % 1
    images = mask * foreground + (1 - mask) * background
    images = images + 0.05 * torch.randn(images.shape, generator=gen)
    return (images.clamp(0, 1) * 255).round() / 255, labels


def colour_dataset(train_count: int, test_count: int) -> Dataset:
    x_train, y_train = colour_shapes(train_count, seed=1)
    x_test, y_test = colour_shapes(test_count, seed=2)
    names = ["disc", "ring", "square", "diamond", "plus", "x", "hstripes", "vstripes",
             "triangle", "checker"]  # fmt: skip
    return Dataset(x_train, y_train, x_test, y_test, 10, names, "generated:shapes", (3, 32, 32))


def small_cnn(seed: int) -> nn.Module:
    """The zoo's Papernot CNN family, narrowed (conv 16, 16, pool, 32, 32, pool, FC 128)."""
    torch.manual_seed(seed)
    return PapernotNet(num_classes=10, input_shape=(3, 32, 32), channels=(16, 32), hidden=128)


def colour_models(data: Dataset, epochs: int) -> tuple[nn.Module, nn.Module]:
    """The upload (T=1) and the defensively distilled student at T, bench.common's recipe."""
    upload = train(small_cnn(0), data.x_train, data.y_train, temperature=1.0, epochs=epochs, seed=0)
    teacher = train(
        small_cnn(1), data.x_train, data.y_train, temperature=TEMPERATURE, epochs=epochs, seed=1
    )
    with torch.no_grad():
        soft = torch.cat([(teacher(b) / TEMPERATURE).softmax(1) for b in data.x_train.split(500)])
    student = train(
        small_cnn(2), data.x_train, soft, temperature=TEMPERATURE, epochs=epochs, seed=2
    )
    return upload, student


# --- PGD training by the service's own method ------------------------------------------------


@dataclass
class _Upload:
    """What the method reads of a LoadedModel: a copy of the upload to fine-tune (the colour
    CNN is no zoo architecture, so a real LoadedModel could not rebuild it from weights)."""

    module: nn.Module

    def fresh_copy(self, *, reinitialise: bool) -> nn.Module:
        return copy.deepcopy(self.module)


def pgd_trained(
    upload: nn.Module, data: Dataset, *, epsilon: float, epochs: int, warmup: int, steps: int
) -> nn.Module:
    """The ``adversarial`` method (Madry et al.'s PGD training) fine-tuning the upload."""
    spec = HardenSpec.model_validate(
        {
            "dataset": "builtin:mnist" if data.reference == "builtin:mnist" else "upload",
            "method": "adversarial",
            "robust": {
                "epsilon": epsilon,
                "epochs": epochs,
                "warmup_epochs": warmup,
                "steps": steps,
            },
            "learning_rate": 1e-3,
            "batch_size": 128,
        }
    )
    plan = RunPlan.resolve(spec, dataset=data.reference, train_samples=len(data.y_train))
    result = METHODS["adversarial"].harden(
        _Upload(upload),  # type: ignore[arg-type]
        data,
        plan,
        on_progress=lambda *a: None,
        should_cancel=lambda: False,
    )
    return result.student.eval()


# --- mean corruption accuracy, the service's function ----------------------------------------


def measured(
    upload: nn.Module, others: dict[str, nn.Module], data: Dataset, samples: int
) -> dict[str, tuple[float, float, list[tuple[str, float]]]]:
    """Per model: clean accuracy, mean corruption accuracy and its per-corruption means (worst
    first), from corruption_robustness with the upload as 'uploaded' and each model as
    'student' (the upload's figures are the same in every call: same images, same seed)."""
    spec = CorruptionsSpec(samples=samples)
    out: dict[str, tuple[float, float, list[tuple[str, float]]]] = {}
    for name, model in others.items():
        section: CorruptionRobustness = ours.corruption_robustness(
            upload, model, data.x_test, data.y_test, spec, input_range=(0.0, 1.0), device=CPU
        )
        for key, label in (("uploaded", "upload"), ("student", name)):
            per = sorted(
                (row.corruption, row.uploaded if key == "uploaded" else row.student)
                for row in section.per_corruption
            )
            per.sort(key=lambda item: item[1])
            out[label] = (section.clean[key], section.mean_corruption_accuracy[key], per)
    return out


# --- the independent cross-check -------------------------------------------------------------


def _generator(name: str, severity: int, seed: int = 0) -> torch.Generator:
    # The service's per-cell seed (core.audit.corruptions.corrupt), so the affine parameters drawn
    # here are the ones its corruption drew.
    return torch.Generator().manual_seed(
        seed * 1_000_003 + zlib.crc32(f"{name}/{severity}".encode())
    )


def _predict(model: nn.Module, x: Tensor) -> Tensor:
    with torch.no_grad():
        return torch.cat([model(b).argmax(1) for b in x.split(500)])


@dataclass
class Row:
    """One cross-check: the upload on the service's corrupted images and on the independent
    implementation's, from the same clean images."""

    family: str
    corruption: str
    ours: str  # which severity (or constant) of the service's
    independent: str
    accuracy_ours: float
    accuracy_independent: float
    difference: float  # ours - independent, points
    noise: float  # 1.96 standard errors of that paired difference, points
    pixel_mean: float | None  # mean |ours - independent| in 0..255 units (deterministic ones)
    pixel_max: float | None
    change_ours: float  # mean |corrupted - clean| in 0..255 units
    change_independent: float


def _row(
    model: nn.Module, x: Tensor, y: Tensor, mine: Tensor, theirs: Tensor, labels: tuple[str, ...]
) -> Row:
    family, corruption, ours_label, independent = labels
    hits_mine = (_predict(model, mine) == y).double()
    hits_theirs = (_predict(model, theirs) == y).double()
    paired = hits_mine - hits_theirs
    gap = (mine - theirs).abs() * 255
    deterministic = corruption in DETERMINISTIC
    return Row(
        family=family,
        corruption=corruption,
        ours=ours_label,
        independent=independent,
        accuracy_ours=float(hits_mine.mean()),
        accuracy_independent=float(hits_theirs.mean()),
        difference=100 * float(paired.mean()),
        noise=100 * Z * float(paired.std()) / math.sqrt(len(paired)),
        pixel_mean=float(gap.mean()) if deterministic else None,
        pixel_max=float(gap.max()) if deterministic else None,
        change_ours=float((mine - x).abs().mean() * 255),
        change_independent=float((theirs - x).abs().mean() * 255),
    )


def _package() -> Any:
    import imagecorruptions
    import imagecorruptions.corruptions

    if not hasattr(np, "float_"):  # its plasma_fractal (fog) still says np.float_ (NumPy < 2)
        setattr(np, "float_", np.float64)  # noqa: B010
    return imagecorruptions


def _package_images(x: Tensor, name: str, severity: int, seed: int = 0) -> Tensor:
    """imagecorruptions on each image (HxWxC uint8 0..255), back to NCHW in [0, 1]. Its noise
    comes from numpy's global generator, seeded here once per cell."""
    package = _package()
    np.random.seed(seed)
    images = (x * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    if images.shape[-1] == 1:  # grayscale below 32 px: the function, without the wrapper's check
        out = [np.uint8(package.corruptions.fog(image[..., 0], severity)) for image in images]
        return torch.from_numpy(np.stack(out)).float().unsqueeze(1) / 255
    out = [package.corrupt(image, corruption_name=name, severity=severity) for image in images]
    return torch.from_numpy(np.stack(out)).float().permute(0, 3, 1, 2) / 255


@contextmanager
def _constant(value: float) -> Iterator[None]:
    """The service's corruptions with their severity table's entry replaced by ``value`` (for a
    corruption none of whose constants the package shares: its code, the package's constant)."""
    with mock.patch.object(ours, "_level", lambda values, severity: value):
        yield


# MNIST-C's parameters as the service spreads them over five severities: degrees, shear factor,
# scale factor, shift as a fraction of the side.
AFFINE_LEVELS = {
    "rotate": (6, 12, 18, 24, 30),
    "shear": (0.1, 0.2, 0.3, 0.4, 0.5),
    "scale": (0.9, 0.8, 0.7, 0.6, 0.5),
    "translate": (0.05, 0.1, 0.15, 0.2, 0.25),
}


# (corruption, our severity, the package's severity): the constants agree in each pair, e.g.
# contrast 0.4 is CIFAR-10-C's severity 3 and ImageNet-C's severity 1.
SHARED = [
    ("gaussian_noise", 3, 1), ("impulse_noise", 3, 1), ("contrast", 3, 1), ("contrast", 4, 2),
    ("brightness", 2, 1), ("brightness", 4, 2), ("brightness", 5, 3),
]  # fmt: skip
# No shared constant: our code with the package's (ImageNet-C) constant at its severity.
PACKAGE_CONSTANTS = {"shot_noise": (60, 25, 12, 5, 3), "pixelate": (0.6, 0.5, 0.4, 0.3, 0.25)}
DETERMINISTIC = {"contrast", "brightness", "pixelate", *AFFINE_LEVELS}


def colour_check(model: nn.Module, x: Tensor, y: Tensor) -> list[Row]:
    rows = []
    for name, mine, theirs in SHARED:
        labels = ("colour", name, f"severity {mine}", f"severity {theirs}")
        corrupted = ours.corrupt(x, name, mine, seed=0)
        rows.append(_row(model, x, y, corrupted, _package_images(x, name, theirs), labels))
    for name, table in PACKAGE_CONSTANTS.items():
        for severity in (1, 3, 5):
            with _constant(table[severity - 1]):
                corrupted = ours.corrupt(x, name, severity, seed=0)
            labels = ("colour", name, f"code, c = {table[severity - 1]:g}", f"severity {severity}")
            rows.append(_row(model, x, y, corrupted, _package_images(x, name, severity), labels))
    # The service's grayscale fog has ImageNet-C's constants (the package's): run on colour.
    for severity in (1, 3, 5):
        with mock.patch.dict(ours.COLOUR, {"fog": ours.grayscale_fog}):
            corrupted = ours.corrupt(x, "fog", severity, seed=0)
        labels = ("colour", "fog", f"code, ImageNet-C sev. {severity}", f"severity {severity}")
        rows.append(_row(model, x, y, corrupted, _package_images(x, "fog", severity), labels))
    return rows


def _scipy_affine(x: Tensor, name: str, severity: int) -> Tensor:
    """MNIST-C's affine corruption by scipy.ndimage (bilinear, zeros beyond the border as
    grid_sample's zero padding), each image's parameter drawn as the service draws it."""
    from scipy import ndimage

    gen = _generator(name, severity)
    count, side = len(x), x.shape[-1]
    centre = (side - 1) / 2
    images = x[:, 0].double().numpy()
    out = np.empty_like(images)
    level = AFFINE_LEVELS[name][severity - 1]
    if name in ("rotate", "shear"):
        signs = (torch.randint(0, 2, (count,), generator=gen) * 2 - 1).tolist()
    if name == "translate":
        angles = (2 * math.pi * torch.rand(count, generator=gen, dtype=torch.float64)).tolist()
    for i, image in enumerate(images):
        if name == "rotate":  # counter-clockwise on screen for a positive angle, about the centre
            out[i] = ndimage.rotate(
                image, level * signs[i], reshape=False, order=1, mode="grid-constant"
            )
        elif name == "shear":  # the input column is the output's plus a * (row - centre)
            a = level * signs[i]
            out[i] = ndimage.affine_transform(
                image, [[1, 0], [a, 1]], offset=[0, -a * centre], order=1, mode="grid-constant"
            )
        elif name == "scale":  # shrunk by the factor about the centre
            out[i] = ndimage.affine_transform(
                image,
                [1 / level] * 2,
                offset=centre - centre / level,
                order=1,
                mode="grid-constant",
            )
        else:  # moved by the fraction of the side, in the drawn direction
            shift = [-level * side * math.sin(angles[i]), -level * side * math.cos(angles[i])]
            out[i] = ndimage.shift(image, shift, order=1, mode="grid-constant")
    return torch.from_numpy(out).float().clamp(0, 1).unsqueeze(1)


def grayscale_check(model: nn.Module, x: Tensor, y: Tensor) -> list[Row]:
    rows = []
    for name in AFFINE_LEVELS:
        for severity in (1, 2, 3, 4, 5):
            labels = ("mnist", name, f"severity {severity}", f"scipy.ndimage, sev. {severity}")
            corrupted = ours.corrupt(x, name, severity, seed=0)
            rows.append(_row(model, x, y, corrupted, _scipy_affine(x, name, severity), labels))
    for severity in (1, 3, 5):
        labels = ("mnist", "fog", f"severity {severity}", f"severity {severity}")
        corrupted = ours.corrupt(x, "fog", severity, seed=0)
        rows.append(_row(model, x, y, corrupted, _package_images(x, "fog", severity), labels))
    return rows


# --- the report ------------------------------------------------------------------------------


def _model_table(
    title: str, results: dict[str, tuple[float, float, list[tuple[str, float]]]]
) -> list[str]:
    lines = [f"### {title}", ""]
    lines += ["| model | clean | mean corruption acc | worst 3 (mean over severities) |"]
    lines += ["|---|---|---|---|"]
    for label, (clean, mean, per) in results.items():
        worst = ", ".join(f"{name} {100 * acc:.1f}%" for name, acc in per[:3])
        lines.append(f"| {label} | {100 * clean:.1f}% | {100 * mean:.1f}% | {worst} |")
    return lines + [""]


def _check_table(rows: list[Row]) -> list[str]:
    lines = [
        "| set | corruption | ours | independent | upload acc, ours | upload acc, independent "
        "| ours - independent (1.96 SE) | pixel gap mean / max | mean change ours / independent |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        pixel = "-" if r.pixel_mean is None else f"{r.pixel_mean:.3g} / {r.pixel_max:.3g}"
        lines.append(
            f"| {r.family} | {r.corruption} | {r.ours} | {r.independent} | "
            f"{100 * r.accuracy_ours:.1f}% | {100 * r.accuracy_independent:.1f}% | "
            f"{r.difference:+.1f} ± {r.noise:.1f} | {pixel} | "
            f"{r.change_ours:.1f} / {r.change_independent:.1f} |"
        )
    return lines + [""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=500, help="test images corrupted")
    parser.add_argument("--check-samples", type=int, default=500, help="images cross-checked")
    parser.add_argument("--epochs", type=int, default=5, help="upload and distillation epochs")
    parser.add_argument("--pgd-epochs", type=int, default=4)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(2)
    timings: dict[str, float] = {}
    lines: list[str] = []

    def timed(label: str, work: Callable[[], Any]) -> Any:
        with Timer() as timer:
            result = work()
        timings[label] = timer.seconds
        print(f"{label}: {timer.seconds:.0f} s", flush=True)
        return result

    data = mnist()
    upload = timed("mnist: upload", lambda: baseline(data, epochs=args.epochs))
    student = timed("mnist: distilled", lambda: distilled(data, TEMPERATURE, args.epochs))
    robust = timed(
        "mnist: PGD training",
        lambda: pgd_trained(upload, data, epsilon=0.3, epochs=args.pgd_epochs, warmup=2, steps=5),
    )
    others = {f"distilled T={TEMPERATURE:g}": student, "PGD-trained": robust}
    mnist_results = timed(
        "mnist: corruptions", lambda: measured(upload, others, data, args.samples)
    )

    colour = colour_dataset(5000, 1000)
    upload_c, student_c = timed(
        "colour: upload + distilled", lambda: colour_models(colour, args.epochs)
    )
    robust_c = timed(
        "colour: PGD training",
        lambda: pgd_trained(
            upload_c, colour, epsilon=8 / 255, epochs=args.pgd_epochs, warmup=2, steps=5
        ),
    )
    others_c = {f"distilled T={TEMPERATURE:g}": student_c, "PGD-trained": robust_c}
    colour_results = timed(
        "colour: corruptions", lambda: measured(upload_c, others_c, colour, args.samples)
    )

    n = args.check_samples
    check = timed(
        "cross-check colour", lambda: colour_check(upload_c, colour.x_test[:n], colour.y_test[:n])
    )
    check += timed(
        "cross-check mnist", lambda: grayscale_check(upload, data.x_test[:n], data.y_test[:n])
    )
    lines += _model_table("builtin:mnist (MNIST-C family)", mnist_results)
    lines += _model_table("generated 3x32x32 shapes (CIFAR-10-C family)", colour_results)
    lines += _check_table(check)
    lines += ["| part | seconds |", "|---|---|"] + [
        f"| {k} | {v:.0f} |" for k, v in timings.items()
    ]
    header = (
        f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}, CPU; "
        f"samples {args.samples}, check samples {n}, epochs {args.epochs}, "
        f"PGD epochs {args.pgd_epochs}"
    )
    text = header + "\n\n" + "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(
            "# Corruption robustness: upload vs distilled vs PGD-trained\n\n" + text
        )


if __name__ == "__main__":
    main()
