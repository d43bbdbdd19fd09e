"""Carlini-Wagner L2 (core/audit/attacks/cw.py) on an undefended model."""

from __future__ import annotations

from core.audit.attacks.cw import carlini_wagner_l2


def test_cw_l2_fools_an_undefended_model(batch) -> None:
    model, x, y = batch
    result = carlini_wagner_l2(model, x, y, binary_steps=5, iterations=100)
    rate = float(result.success.sum() / result.correct_before.sum())
    assert rate >= 0.9
    # Inputs stay in range thanks to the tanh change of variables.
    assert float(result.adversarial.min()) >= 0.0 and float(result.adversarial.max()) <= 1.0
