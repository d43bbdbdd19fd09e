"""The transfer attack (core/audit/attacks/transfer.py)."""

from __future__ import annotations

import torch

from core.audit.attacks.gradient import pgd
from core.audit.attacks.transfer import transfer


def test_transfer_uses_source_adversarials(batch) -> None:
    model, x, y = batch
    source = pgd(model, x, y, epsilon=0.2, loss="margin", steps=10)
    applied = transfer(model, x, source.adversarial, y)
    # Transferring to the source itself reproduces the white-box result.
    assert torch.equal(applied.success, source.success)
