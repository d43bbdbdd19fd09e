"""Transfer attack: adversarial examples crafted on another model (here the undistilled upload),
applied to the model under test. Masked gradients on the target cannot stop it, because no
gradient of the target is used (Papernot et al. 2017; Carlini & Wagner 2016 on distillation)."""

from __future__ import annotations

from torch import Tensor, nn

from core.audit.attacks.base import AttackResult, predict


def transfer(target: nn.Module, x: Tensor, x_adv_source: Tensor, labels: Tensor) -> AttackResult:
    """Apply ``x_adv_source`` (crafted on a source model from the clean ``x``) to ``target``."""
    correct = predict(target, x) == labels
    success = correct & (predict(target, x_adv_source) != labels)
    return AttackResult(x_adv_source.detach(), success, correct)
