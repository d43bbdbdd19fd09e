"""Adversarial attacks, one module per family, all batched on the model's device.

Every attack takes a model returning raw logits, a clean batch and its labels, keeps inputs inside
the valid range, takes an ``on_step(step, total)`` hook and returns an :class:`AttackResult` whose
``success`` only counts samples the model classified correctly before the attack.
"""

from core.audit.attacks.apgd import apgd
from core.audit.attacks.base import AttackResult, StepHook, dlr, margin
from core.audit.attacks.cw import carlini_wagner_l2
from core.audit.attacks.gradient import fgsm, perturbation_size, pgd
from core.audit.attacks.jsma import changed_fraction, jsma
from core.audit.attacks.square import square_linf
from core.audit.attacks.transfer import transfer

__all__ = [
    "AttackResult",
    "StepHook",
    "apgd",
    "carlini_wagner_l2",
    "changed_fraction",
    "dlr",
    "fgsm",
    "jsma",
    "margin",
    "perturbation_size",
    "pgd",
    "square_linf",
    "transfer",
]
