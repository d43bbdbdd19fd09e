"""FGSM and PGD (core/audit/attacks/gradient.py): more steps never fool fewer samples."""

from __future__ import annotations

import pytest

from core.audit.attacks.gradient import fgsm, pgd


@pytest.mark.parametrize("loss", ["ce", "margin"])
def test_pgd_at_least_as_strong_as_fgsm(batch, loss) -> None:
    model, x, y = batch
    for epsilon in (0.05, 0.1, 0.15):
        one_step = fgsm(model, x, y, epsilon=epsilon, loss=loss)
        iterated = pgd(model, x, y, epsilon=epsilon, loss=loss, steps=20)
        assert int(iterated.success.sum()) >= int(one_step.success.sum())
