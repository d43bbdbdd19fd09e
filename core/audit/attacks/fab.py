"""FAB-T, L-infinity: the targeted Fast Adaptive Boundary attack (Croce & Hein, "Minimally
distorted adversarial examples with a fast adaptive boundary attack", ICML 2020), used within an
epsilon budget as AutoAttack uses it.

Each step linearises the decision boundary between the true class and the target class at the
current iterate and projects onto it twice, from the iterate and from the clean sample, each
projection the smallest L-inf step that reaches the linearised boundary inside the input range.
The next iterate mixes the two, leaning towards the clean sample (weight ``alpha``) so the
perturbation stays small, and overshoots by ``eta``; once an iterate fools the model it is
pulled back towards the clean sample by ``beta``. It reads logit differences and their gradients
only through ratios, so scaling the logits (defensive distillation) changes nothing.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from core.audit.attacks.base import (
    AttackResult,
    InputRange,
    StepHook,
    no_hook,
    per_sample,
    predict,
)
from core.audit.attacks.targets import over_top_targets

ALPHA_MAX = 0.1  # the paper's and AutoAttack's settings
ETA = 1.05
BETA = 0.9


def linf_step_to_hyperplane(x: Tensor, w: Tensor, offset: Tensor, bounds: InputRange) -> Tensor:
    """Per sample, the smallest-L-inf ``d`` with ``<w, d> = offset`` and ``x + d`` in ``bounds``.

    Each feature moves by ``min(t, room_i)`` in the direction that helps (``room_i``: how far the
    range lets it go), and ``t`` is the smallest size reaching ``offset``: the features that hit
    the range's edge early leave the rest to cover more. Where no ``t`` reaches it, every feature
    goes to its edge: the closest the range allows.
    """
    low, high = bounds
    flat_x, flat_w = x.flatten(1), w.flatten(1)
    direction = flat_w.sign() * offset.sign()[:, None]
    room = torch.where(direction > 0, high - flat_x, flat_x - low).clamp_min(0)
    weight = flat_w.abs() * (direction != 0)
    need = offset.abs()
    rooms, order = room.sort(1)
    weights = weight.gather(1, order)
    # For t between the (k-1)-th and k-th smallest room: reached(t) = capped_k + t * free_k.
    capped = (weights * rooms).cumsum(1) - weights * rooms
    free = weights.flip(1).cumsum(1).flip(1)
    reached = capped + rooms * free
    feasible = reached >= need[:, None]
    first = feasible.float().argmax(1, keepdim=True)
    size = (need - capped.gather(1, first).squeeze(1)) / free.gather(1, first).squeeze(1).clamp_min(
        1e-12
    )
    size = torch.where(feasible.any(1), size.clamp_min(0), rooms[:, -1])
    return (direction * torch.minimum(size[:, None], room)).view_as(x)


def _target_gap(
    model: nn.Module, x: Tensor, labels: Tensor, targets: Tensor
) -> tuple[Tensor, Tensor]:
    """``z_target - z_label`` per sample (negative while the label wins) and its input gradient."""
    x = x.detach().requires_grad_(True)
    logits = model(x)
    gap = (logits.gather(1, targets[:, None]) - logits.gather(1, labels[:, None])).squeeze(1)
    (grad,) = torch.autograd.grad(gap.sum(), x)
    return gap.detach(), grad.detach()


def _linf(delta: Tensor) -> Tensor:
    return delta.flatten(1).abs().max(1).values


def fab_towards(
    model: nn.Module,
    x: Tensor,
    labels: Tensor,
    targets: Tensor,
    *,
    epsilon: float,
    steps: int,
    bounds: InputRange,
    on_step: StepHook = no_hook,
) -> AttackResult:
    """FAB towards one target class per sample; success: fooled within ``epsilon``.

    A sample stops being attacked once an adversarial within the budget is found: the budgeted
    use only asks whether one exists, not for the smallest.
    """
    correct = predict(model, x) == labels
    x_cur = x.clone()  # AutoAttack's standard run starts at the clean sample
    x_best = x.clone()
    best = torch.full((len(x),), float("inf"), device=x.device)
    for step in range(steps):
        active = (correct & (best > epsilon)).nonzero().squeeze(1)
        if len(active) == 0:
            on_step(steps, steps)
            break
        clean, cur = x[active], x_cur[active]
        gap, grad = _target_gap(model, cur, labels[active], targets[active])
        # The linearised boundary {z : gap + <grad, z - cur> = 0}, reached from both points.
        from_cur = linf_step_to_hyperplane(cur, grad, -gap, bounds)
        shift = (grad * (cur - clean)).flatten(1).sum(1)
        from_clean = linf_step_to_hyperplane(clean, grad, shift - gap, bounds)
        size_cur = _linf(from_cur).clamp_min(1e-8)
        size_clean = _linf(from_clean).clamp_min(1e-8)
        alpha = per_sample((size_cur / (size_cur + size_clean)).clamp(0, ALPHA_MAX), cur)
        new = ((cur + ETA * from_cur) * (1 - alpha) + (clean + ETA * from_clean) * alpha).clamp(
            *bounds
        )
        fooled = predict(model, new) != labels[active]
        sizes = _linf(new - clean)
        better = fooled & (sizes < best[active])
        # torch.where, not a boolean index: no device sync per step.
        x_best[active] = torch.where(per_sample(better, new), new, x_best[active])
        best[active] = torch.where(better, sizes, best[active])
        # Back towards the clean sample from an adversarial: the search continues nearer to it.
        new = torch.where(per_sample(fooled, new), clean + BETA * (new - clean), new)
        x_cur[active] = new
        on_step(step + 1, steps)
    success = correct & (best <= epsilon)
    adversarial = torch.where(per_sample(success, x), x_best, x)
    return AttackResult(adversarial.detach(), success, correct)


def fab_targeted(
    model: nn.Module,
    x: Tensor,
    labels: Tensor,
    *,
    epsilon: float,
    steps: int = 100,
    target_classes: int = 9,
    bounds: InputRange = (0.0, 1.0),
    on_step: StepHook = no_hook,
) -> AttackResult:
    """FAB-T within ``epsilon``: :func:`fab_towards` each of the ``target_classes`` most likely
    wrong classes in turn (AutoAttack's standard version: 9 targets, 100 steps, one restart)."""

    def towards(xs: Tensor, ys: Tensor, targets: Tensor, hook: StepHook) -> AttackResult:
        return fab_towards(
            model, xs, ys, targets, epsilon=epsilon, steps=steps, bounds=bounds, on_step=hook
        )

    return over_top_targets(
        model, x, labels, target_classes=target_classes, run=towards, on_step=on_step
    )
