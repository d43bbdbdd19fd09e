"""CERTIFY and PREDICT of randomized smoothing (Cohen, Rosenfeld & Kolter, ICML 2019, Algorithm
1 and Theorem 1), for any base classifier ``f``.

The smoothed classifier is ``g(x) = argmax_c P(f(x + δ) = c)``, ``δ ~ N(0, σ² I)``. CERTIFY
draws ``n0`` noisy copies of ``x`` to select the top class ``c_A``, ``n`` more to estimate
``p_A = P(f(x + δ) = c_A)``, and takes the one-sided ``(1 - alpha)`` Clopper-Pearson lower bound
``p_A_lower``; if it is at least 1/2, ``g`` predicts ``c_A`` within L2 radius
``σ Φ^-1(p_A_lower)`` of ``x`` with probability at least ``1 - alpha``; otherwise it abstains.
PREDICT tests ``n_A`` against ``n_B`` (the top two counts) with a two-sided binomial test at
``alpha`` and abstains when they cannot be told apart.

Written here rather than taken from IBM ART (bench/certify.py recomputes these certificates with
ART's estimator): ART's randomized smoothing wraps a model to train it and predicts with
abstain, but its certify returns a radius without the selection/estimation split that makes the
bound valid for the paper's procedure, and it is a benchmark-only dependency.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from scipy.stats import beta, binomtest, norm
from torch import Tensor, nn

from core.contract.certification import (
    DEFAULT_SIGMA,
    Certification,
    CertificationSpec,
    CertifiedAt,
    ModelCertification,
)
from core.contract.spec import HardenSpec
from core.modules import set_training_mode
from core.names import CancelFn, ProgressFn

WHAT = (
    "the smoothed classifier g(x) = argmax_c P(f(x + N(0, sigma^2 I)) = c) of each model f, "
    "with probability at least 1 - alpha over the noise drawn: g's prediction does not change "
    "within the certified L2 radius (Cohen et al. 2019, Theorem 1); nothing is certified of the "
    "base network f itself"
)


def clopper_pearson_lower(successes: int, trials: int, alpha: float) -> float:
    """The one-sided ``(1 - alpha)`` Clopper-Pearson lower bound of a binomial proportion."""
    if successes <= 0:
        return 0.0
    return float(beta.ppf(alpha, successes, trials - successes + 1))


@dataclass(frozen=True)
class Certificate:
    prediction: int | None  # None: abstain
    radius: float  # 0.0 when it abstains
    p_lower: float


def class_counts(
    model: nn.Module,
    x: Tensor,
    *,
    sigma: float,
    draws: int,
    num_classes: int,
    batch_size: int,
    generator: torch.Generator,
) -> Tensor:
    """How often ``model`` predicts each class on ``draws`` copies of one image ``x`` (C, H, W)
    plus Gaussian noise of standard deviation ``sigma``."""
    counts = torch.zeros(num_classes, dtype=torch.long)
    remaining = draws
    with torch.no_grad():
        while remaining > 0:
            size = min(batch_size, remaining)
            batch = x.unsqueeze(0).expand(size, *x.shape)
            noise = torch.randn(batch.shape, generator=generator, device=x.device) * sigma
            predictions = model(batch + noise).argmax(dim=1)
            counts += torch.bincount(predictions.cpu(), minlength=num_classes)[:num_classes]
            remaining -= size
    return counts


def certify(
    model: nn.Module,
    x: Tensor,
    *,
    sigma: float,
    n0: int,
    n: int,
    alpha: float,
    num_classes: int,
    batch_size: int,
    generator: torch.Generator,
) -> Certificate:
    """CERTIFY (Cohen et al. 2019, Algorithm 1) of one image."""

    def counts(draws: int) -> Tensor:
        return class_counts(
            model, x, sigma=sigma, draws=draws, num_classes=num_classes, batch_size=batch_size,
            generator=generator,
        )  # fmt: skip

    top = int(counts(n0).argmax())
    estimation = counts(n)
    p_lower = clopper_pearson_lower(int(estimation[top]), n, alpha)
    if p_lower < 0.5:
        return Certificate(None, 0.0, p_lower)
    return Certificate(top, float(sigma * norm.ppf(p_lower)), p_lower)


def predict(counts: Tensor, alpha: float) -> int | None:
    """PREDICT's decision from the class counts of ``n`` noisy draws: the top class, or None
    (abstain) when a two-sided binomial test cannot tell it from the runner-up at ``alpha``."""
    top2 = counts.topk(2)
    n_a, n_b = int(top2.values[0]), int(top2.values[1])
    if n_a + n_b == 0 or binomtest(n_a, n_a + n_b, 0.5).pvalue > alpha:
        return None
    return int(top2.indices[0])


def certification_sigma(spec: HardenSpec, trained_under: float | None) -> float:
    """The noise level certified: the spec's, else the one the hardened model was trained
    under, else DEFAULT_SIGMA times the input range's width (the smoothing method's default)."""
    if spec.certification.sigma is not None:
        return spec.certification.sigma
    if trained_under is not None:
        return trained_under
    low, high = spec.input_range
    return DEFAULT_SIGMA * (float(high) - float(low))


def certify_models(
    models: dict[str, nn.Module],
    inputs: Tensor,
    labels: Tensor,
    settings: CertificationSpec,
    *,
    sigma: float,
    num_classes: int,
    seed: int,
    device_type: str,
    on_progress: ProgressFn,
    should_cancel: CancelFn,
    stage: str = "evaluate",
) -> Certification:
    """The certification section: every model certified on the same first test images, with
    the same noise (one generator per image and model, seeded from ``seed`` and the index)."""
    draws, images = settings.counts(device_type)
    images = min(images, len(labels))
    results: dict[str, ModelCertification] = {}
    total, done = images * len(models), 0
    for name, model in models.items():
        set_training_mode(model, False)
        radii: list[float] = []  # per image: its certified radius, 0 when wrong or abstained
        right = 0
        abstained = 0
        started = time.perf_counter()
        for index in range(images):
            if should_cancel():
                from core.stages import cancelled

                raise cancelled("cancelled during certification", stage)
            generator = torch.Generator(device=inputs.device).manual_seed(seed * 100_003 + index)
            found = certify(
                model, inputs[index], sigma=sigma, n0=settings.n0, n=draws, alpha=settings.alpha,
                num_classes=num_classes, batch_size=settings.batch_size, generator=generator,
            )  # fmt: skip
            abstained += found.prediction is None
            correct = found.prediction is not None and found.prediction == int(labels[index])
            right += correct
            radii.append(found.radius if correct else -1.0)
            done += 1
            on_progress(stage, done, total)
        seconds = time.perf_counter() - started
        right_radii = [r for r in radii if r >= 0]  # -1: wrong or abstained
        results[name] = ModelCertification(
            certified=[
                CertifiedAt(
                    radius=radius,
                    certified_accuracy=sum(r >= radius for r in right_radii) / max(1, images),
                )
                for radius in settings.radii
            ],
            smoothed_accuracy=right / max(1, images),
            abstain_rate=abstained / max(1, images),
            mean_radius=sum(right_radii) / right if right else 0.0,
            radii=[max(0.0, r) for r in radii],
            seconds_per_image=seconds / max(1, images),
        )
    return Certification(
        sigma=sigma, n0=settings.n0, n=draws, alpha=settings.alpha, samples=images, seed=seed,
        what=WHAT, models=results,
    )  # fmt: skip
