"""Randomized smoothing on builtin:mnist, certified by this service and recomputed by IBM ART.

For sigma 0.25 and 0.5: Papernot's MNIST CNN trained plainly (the upload) and fine-tuned under
noise by the service's ``randomized_smoothing`` method (core.hardening.smoothing), both certified
with the service's CERTIFY (core.audit.certify) and with ART's ``PyTorchRandomizedSmoothing
.certify`` on the same test images, same n and alpha. Reports certified accuracy at L2 radius
0.25/0.5/0.75/1.0 from both implementations, the abstain rate, and the seconds per image.

Cohen et al. (2019) publish CIFAR-10 and ImageNet figures only; no MNIST figure of theirs exists
to compare with, so the check here is the independent recomputation.

    .venv/bin/python -m bench.certify --images 50 --out bench/results/certify.md
"""

from __future__ import annotations

import argparse
import copy
import platform
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from bench.common import Timer, accuracy, baseline, mnist
from core.audit.certify import certify_models
from core.contract.certification import CertificationSpec
from core.contract.spec import HardenSpec
from core.hardening.smoothing import RandomizedSmoothing
from core.plan import RunPlan

RADII = [0.25, 0.5, 0.75, 1.0]


@dataclass
class _Upload:
    module: nn.Module

    def fresh_copy(self, *, reinitialise: bool) -> nn.Module:
        return copy.deepcopy(self.module)


def smoothed(upload: nn.Module, sigma: float, epochs: int, data: object) -> nn.Module:
    spec = HardenSpec.model_validate(
        {
            "dataset": "builtin:mnist",
            "method": "randomized_smoothing",
            "smoothing": {"sigma": sigma, "epochs": epochs},
            "learning_rate": 1e-3,
            "batch_size": 128,
        }
    )
    plan = RunPlan.resolve(spec, dataset="builtin:mnist", train_samples=len(data.y_train))  # type: ignore[attr-defined]
    result = RandomizedSmoothing().harden(
        _Upload(upload),
        data,
        plan,
        on_progress=lambda *a: None,
        should_cancel=lambda: False,  # type: ignore[arg-type]
    )
    return result.student.eval()


def _art_version() -> str:
    import art

    return str(art.__version__)


def art_certified(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, sigma: float, n: int, alpha: float
) -> tuple[list[float], float, float]:
    """ART's certificates: per-image radius (-1 wrong/abstain), abstain rate, seconds/image."""
    from art.estimators.certification.randomized_smoothing import PyTorchRandomizedSmoothing

    classifier = PyTorchRandomizedSmoothing(
        model=model, loss=nn.CrossEntropyLoss(), input_shape=(1, 28, 28), nb_classes=10,
        device_type="cpu", sample_size=n, scale=sigma, alpha=alpha, clip_values=None,
    )  # fmt: skip
    with Timer() as timer:
        prediction, radius = classifier.certify(x.numpy(), n=n, batch_size=1000)
    labels = y.numpy()
    abstained = float(np.mean(prediction < 0))
    per_image = [
        float(r) if p == t else -1.0 for p, r, t in zip(prediction, radius, labels, strict=True)
    ]
    return per_image, abstained, timer.seconds / len(x)


def certified_at(radii: list[float], images: int) -> list[float]:
    return [sum(r >= radius for r in radii) / images for radius in RADII]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=50)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(2)
    art_version = _art_version()
    data = mnist()
    upload = baseline(data, epochs=5)
    x, y = data.x_test[: args.images], data.y_test[: args.images]
    rows = [
        f"builtin:mnist, Papernot's CNN (upload: 5 plain epochs), {args.images} test images, "
        f"n = {args.n}, n0 = 100, alpha = 0.001; {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}.",
        "",
        "| sigma | model | clean acc | implementation | abstain | certified at L2 "
        + " / ".join(f"{r:g}" for r in RADII)
        + " | s/image |",
        "|---|---|---|---|---|---|---|",
    ]
    for sigma in (0.25, 0.5):
        with Timer() as trained:
            hardened = smoothed(upload, sigma, args.epochs, data)
        models = {"uploaded": upload, "student": hardened}
        ours = certify_models(
            models, x, y, CertificationSpec(n=args.n, n0=100, samples=args.images, radii=RADII),
            sigma=sigma, num_classes=10, seed=0, device_type="cpu",
            on_progress=lambda *a: None, should_cancel=lambda: False,
        )  # fmt: skip
        for name, model in models.items():
            mine = ours.models[name]
            clean = accuracy(model, data.x_test, data.y_test)
            art_radii, art_abstain, art_seconds = art_certified(model, x, y, sigma, args.n, 0.001)
            label = (
                "upload"
                if name == "uploaded"
                else f"smoothed ({args.epochs} epochs, {trained.seconds:.0f} s)"
            )
            rows.append(
                f"| {sigma:g} | {label} | {100 * clean:.1f}% | harden "
                f"| {100 * mine.abstain_rate:.0f}% | "
                + " / ".join(f"{100 * c.certified_accuracy:.0f}%" for c in mine.certified)
                + f" | {mine.seconds_per_image:.2f} |"
            )
            rows.append(
                f"| {sigma:g} | {label} | | ART {art_version} | {100 * art_abstain:.0f}% | "
                + " / ".join(f"{100 * c:.0f}%" for c in certified_at(art_radii, args.images))
                + f" | {art_seconds:.2f} |"
            )
            print(rows[-2], rows[-1], sep="\n", flush=True)
    text = "\n".join(rows) + "\n"
    if args.out:
        args.out.write_text("# Randomized smoothing certificates, harden vs IBM ART\n\n" + text)
    print(text)


if __name__ == "__main__":
    main()
