"""Randomized smoothing's CERTIFY and PREDICT (core/audit/certify.py): the bound's arithmetic
against hand-computed Clopper-Pearson values, a linear classifier whose certified radius is known
in closed form, and abstention where the top two classes tie."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from core.audit.certify import certify, certify_models, clopper_pearson_lower, predict
from core.contract.certification import CertificationSpec


@pytest.mark.parametrize(
    ("successes", "trials", "alpha", "expected"),
    [
        # k = n: the bound solves p^n = alpha, so p = alpha^(1/n).
        (1000, 1000, 0.001, 0.001 ** (1 / 1000)),
        (100, 100, 0.05, 0.05 ** (1 / 100)),
        # k = 1 of n = 1: p = alpha.
        (1, 1, 0.001, 0.001),
        # k = n - 1: P(X >= n - 1 | p) = n p^(n-1) (1 - p) + p^n = alpha, solved by bisection
        # below (the hand computation, independent of scipy's beta quantile).
        (9, 10, 0.05, None),
        (0, 10, 0.05, 0.0),
    ],
)
def test_clopper_pearson_lower_bound_matches_hand_computation(
    successes: int, trials: int, alpha: float, expected: float | None
) -> None:
    if expected is None:
        n = trials

        def tail(p: float) -> float:  # P(X >= n - 1) for X ~ Bin(n, p), increasing in p
            return n * p ** (n - 1) * (1 - p) + p**n

        low, high = 0.0, 1.0
        for _ in range(100):
            mid = (low + high) / 2
            low, high = (mid, high) if tail(mid) < alpha else (low, mid)
        expected = low
    assert clopper_pearson_lower(successes, trials, alpha) == pytest.approx(expected, abs=1e-9)


class _Linear(nn.Module):
    """f(x) = 1 if w.x + b > 0 else 0, as two logits."""

    def __init__(self, w: torch.Tensor, b: float) -> None:
        super().__init__()
        self.w, self.b = w, b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        score = x.flatten(1) @ self.w + self.b
        return torch.stack([torch.zeros_like(score), score], dim=1)


def test_a_linear_classifier_is_certified_at_its_closed_form_radius() -> None:
    # For a linear f, P(f(x + δ) = 1) = Φ(m / σ) with m = (w.x + b) / ||w|| the distance to the
    # boundary; Theorem 1's radius σ Φ^-1(p_A) is then exactly m (Cohen et al., section 3.1),
    # and CERTIFY's, from a lower bound of p_A, at most m and close to it for a large n.
    torch.manual_seed(0)
    w = torch.randn(16)
    x = torch.randn(1, 4, 4)
    sigma = 0.5
    target_margin = 0.4
    b = target_margin * float(w.norm()) - float(x.flatten() @ w)
    model = _Linear(w, b)
    found = certify(
        model, x, sigma=sigma, n0=100, n=100_000, alpha=0.001, num_classes=2, batch_size=10_000,
        generator=torch.Generator().manual_seed(1),
    )  # fmt: skip
    assert found.prediction == 1
    # The bound's slack at n = 100,000 and p_A = Φ(0.8) ≈ 0.79: about 3 standard errors of p_A,
    # 3 * sqrt(0.79 * 0.21 / 1e5) ≈ 0.004, i.e. about 0.007 in radius; sampling adds as much.
    assert target_margin - 0.03 < found.radius <= target_margin + 0.01


def test_predict_abstains_where_the_top_two_classes_tie_and_answers_otherwise() -> None:
    assert predict(torch.tensor([500, 500, 0]), alpha=0.001) is None
    assert predict(torch.tensor([510, 490, 0]), alpha=0.001) is None  # not distinguishable
    assert predict(torch.tensor([900, 100, 0]), alpha=0.001) == 0
    assert predict(torch.tensor([3, 40, 957]), alpha=0.001) == 2


def test_certify_abstains_on_a_classifier_split_evenly_by_the_noise() -> None:
    # x on the boundary of a linear classifier: p_A = 1/2, so its lower bound is below 1/2.
    w = torch.ones(4)
    model = _Linear(w, 0.0)
    found = certify(
        model, torch.zeros(1, 2, 2), sigma=1.0, n0=100, n=2000, alpha=0.001, num_classes=2,
        batch_size=500, generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    assert found.prediction is None and found.radius == 0.0


def test_the_section_certifies_every_model_on_the_same_images_reproducibly() -> None:
    w = torch.ones(4)
    far, near = _Linear(w, 4.0), _Linear(w, 0.3)
    inputs = torch.zeros(5, 1, 2, 2)
    labels = torch.ones(5, dtype=torch.long)
    settings = CertificationSpec(n=500, n0=50, samples=3, radii=[0.1, 1.0, 5.0], batch_size=250)

    def run() -> object:
        return certify_models(
            {"uploaded": near, "student": far}, inputs, labels, settings, sigma=0.5,
            num_classes=2, seed=3, device_type="cpu", on_progress=lambda *a: None,
            should_cancel=lambda: False,
        )  # fmt: skip

    section, again = run(), run()
    for name in ("uploaded", "student"):  # seeded noise: the same radii (the seconds differ)
        assert section.models[name].radii == again.models[name].radii
    assert section.samples == 3 and section.n == 500 and "smoothed classifier" in section.what
    far_cert, near_cert = section.models["student"], section.models["uploaded"]
    # Margins 2 (w.x + b = 4, ||w|| = 2) and 0.15: the far one is certified further out.
    assert far_cert.mean_radius > near_cert.mean_radius
    assert far_cert.certified[0].certified_accuracy == 1.0  # radius 0.1 < its margin
    assert all(c.certified_accuracy == 0.0 for c in far_cert.certified if c.radius == 5.0)
    # Radii never exceed sigma Φ^-1 of the best bound n draws allow: (alpha)^(1/n).
    best = float(torch.distributions.Normal(0.0, 1.0).icdf(torch.tensor(0.001 ** (1 / 500))))
    most = 0.5 * best
    assert max(far_cert.radii) <= most + 1e-6
    assert math.isclose(far_cert.smoothed_accuracy, 1.0)
