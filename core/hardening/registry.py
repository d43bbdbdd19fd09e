"""The hardening methods a job can run, by name."""

from __future__ import annotations

from typing import Final

from core.hardening.distillation import DefensiveDistillation
from core.hardening.method import HardeningMethod
from core.hardening.robust import AdversarialTraining, RobustDistillation, Trades

# Defensive distillation is the paper's method and the default (DESIGN.md).
DEFAULT_METHOD: Final = "distillation"

METHODS: Final[dict[str, HardeningMethod]] = {
    method.name: method
    for method in (DefensiveDistillation(), AdversarialTraining(), Trades(), RobustDistillation())
}
