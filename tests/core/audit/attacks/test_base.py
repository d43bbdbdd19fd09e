"""The attacks' shared losses (core/audit/attacks/base.py)."""

from __future__ import annotations

import torch

from core.audit.attacks.base import dlr, margin


def test_dlr_is_scale_invariant_and_margin_is_not() -> None:
    logits = torch.randn(32, 10, generator=torch.Generator().manual_seed(0))
    labels = torch.randint(0, 10, (32,), generator=torch.Generator().manual_seed(1))
    assert torch.allclose(dlr(100 * logits, labels), dlr(logits, labels), atol=1e-5)
    assert torch.allclose(margin(100 * logits, labels), 100 * margin(logits, labels), rtol=1e-4)
    assert bool(((margin(logits, labels) > 0) == (logits.argmax(1) != labels)).all())
