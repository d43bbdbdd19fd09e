"""The target classes of AutoAttack's targeted attacks, and the loop over them.

APGD-T and FAB-T (Croce & Hein 2020) attack each correctly classified sample towards its most
likely wrong classes in turn, most likely first, and stop on a sample once one target fooled it:
a sample counts as fooled if any target's run fooled it (success is any misclassification).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from core.audit.attacks.base import AttackResult, StepHook

# One targeted run: (samples, labels, one target class per sample, step hook) -> result.
TargetedRun = Callable[[Tensor, Tensor, Tensor, StepHook], AttackResult]


def top_targets(logits: Tensor, target_classes: int) -> Tensor:
    """Per sample, the ``target_classes`` most likely classes after the top one, most likely
    first (at most all the other classes)."""
    count = max(min(target_classes, logits.shape[1] - 1), 0)
    return logits.argsort(1, descending=True)[:, 1 : count + 1]


def over_top_targets(
    model: nn.Module,
    x: Tensor,
    labels: Tensor,
    *,
    target_classes: int,
    run: TargetedRun,
    on_step: StepHook,
    batch_size: int = 512,
) -> AttackResult:
    """``run`` towards each of the top ``target_classes`` wrong classes in turn, on the samples
    still correctly classified and not yet fooled; their adversarials merged into one result."""
    with torch.no_grad():
        logits = torch.cat([model(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])
    correct = logits.argmax(1) == labels
    success = torch.zeros_like(correct)
    adversarial = x.clone()
    ranked = top_targets(logits, target_classes)
    rounds = ranked.shape[1]
    for round_index in range(rounds):
        remaining = (correct & ~success).nonzero().squeeze(1)
        if len(remaining) == 0:
            break

        def hook(step: int, total: int, done: int = round_index) -> None:
            on_step(done * total + step, rounds * total)

        result = run(x[remaining], labels[remaining], ranked[remaining, round_index], hook)
        fooled = remaining[result.success]
        adversarial[fooled] = result.adversarial[result.success]
        success[fooled] = True
    on_step(1, 1)
    return AttackResult(adversarial.detach(), success, correct)
