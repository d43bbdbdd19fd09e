"""JSMA (core/audit/attacks/jsma.py): its L0 budget, increasing pixels only, seeded targets."""

from __future__ import annotations

import pytest
import torch

from core.audit.attacks.jsma import changed_fraction, jsma


@pytest.mark.parametrize(
    ("outputs", "saliency"), [("softmax", "pairs"), ("logits", "pairs"), ("logits", "target")]
)
@pytest.mark.parametrize("fraction", [0.05, 0.145])
def test_jsma_respects_its_budget_and_only_increases(batch, outputs, saliency, fraction) -> None:
    model, x, y = batch
    result = jsma(
        model, x, y, num_classes=10, outputs=outputs, max_fraction=fraction, saliency=saliency
    )
    changed = changed_fraction(result.adversarial, x)
    assert float(changed.max()) <= fraction + 1e-9
    assert bool((result.adversarial >= x).all())
    assert float(result.adversarial.max()) <= 1.0


def test_random_targets_are_seeded(batch) -> None:
    model, x, y = batch
    a = jsma(model, x[:10], y[:10], num_classes=10, seed=3, max_fraction=0.05)
    b = jsma(model, x[:10], y[:10], num_classes=10, seed=3, max_fraction=0.05)
    assert a.target is not None and b.target is not None
    assert torch.equal(a.target, b.target) and torch.equal(a.adversarial, b.adversarial)
