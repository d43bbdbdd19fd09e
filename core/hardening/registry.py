"""The hardening methods a job can run, by name: each torch implementation under the name of its
description in :mod:`core.contract.methods` (torch-free, where the names come from)."""

from __future__ import annotations

from typing import Final

from core.contract.methods import CATALOGUE, DEFAULT_METHOD
from core.hardening.distillation import DefensiveDistillation
from core.hardening.method import HardeningMethod
from core.hardening.robust import AdversarialTraining, RobustDistillation, Trades

__all__ = ["DEFAULT_METHOD", "METHODS"]

METHODS: Final[dict[str, HardeningMethod]] = {
    method.name: method
    for method in (DefensiveDistillation(), AdversarialTraining(), Trades(), RobustDistillation())
}
_missing = set(CATALOGUE) - set(METHODS)
if _missing:  # a description without its implementation: every job naming it would fail
    raise ImportError(f"hardening methods described but not implemented: {sorted(_missing)}")
