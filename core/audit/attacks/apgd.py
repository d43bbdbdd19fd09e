"""Auto-PGD, L-infinity (Croce & Hein, "Reliable evaluation of adversarial robustness with an
ensemble of diverse parameter-free attacks", ICML 2020).

Step size starts at 2*eps and is halved at checkpoints when progress stalls, with momentum 0.75,
restarting from the best point found. With the scale-invariant DLR loss it cannot be fooled by the
logit scaling of defensive distillation; with cross-entropy it shows the masking.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from core.audit.attacks.base import (
    LOSSES,
    TARGETED_LOSSES,
    AttackResult,
    InputRange,
    StepHook,
    active_gradient,
    check_last_iterate,
    no_hook,
    per_sample,
    predict,
    project_linf,
    seeded_generator,
)
from core.audit.attacks.targets import over_top_targets

MOMENTUM = 0.75
RHO = 0.75  # a step-size halving happens when under 75% of the steps since the last checkpoint
# increased the loss


def checkpoints(steps: int) -> list[int]:
    """Iterations at which APGD may halve its step size (p_0=0, p_1=0.22, growing gaps)."""
    fractions = [0.0, 0.22]
    while fractions[-1] < 1:
        fractions.append(fractions[-1] + max(fractions[-1] - fractions[-2] - 0.03, 0.06))
    points = sorted({math.ceil(p * steps) for p in fractions if p <= 1})
    return [p for p in points if 0 < p < steps]


def apgd(
    model: nn.Module,
    x: Tensor,
    labels: Tensor,
    *,
    epsilon: float,
    loss: str = "dlr",
    steps: int = 40,
    bounds: InputRange = (0.0, 1.0),
    seed: int = 0,
    on_step: StepHook = no_hook,
    targets: Tensor | None = None,
) -> AttackResult:
    """APGD-CE (``loss="ce"``) or APGD-DLR (``loss="dlr"``), L-infinity.

    With ``targets`` it follows the targeted version of ``loss`` towards each sample's target
    class (APGD-T); success is still any misclassification, as AutoAttack counts it.
    """
    loss_fn = LOSSES[loss] if targets is None else TARGETED_LOSSES[loss]
    gen = seeded_generator(seed)
    correct = predict(model, x) == labels
    success = torch.zeros_like(correct)
    x_best = x.clone()
    start = ((torch.rand(x.shape, generator=gen) * 2 - 1) * epsilon).to(x.device, x.dtype)
    x_cur = project_linf(x + start, x, epsilon, bounds)
    x_prev = x_cur.clone()
    x_max = x_cur.clone()
    n = len(x)
    f_max = torch.full((n,), float("-inf"), device=x.device)
    f_last = torch.full((n,), float("-inf"), device=x.device)
    eta = torch.full((n,), 2 * epsilon, device=x.device)
    increases = torch.zeros(n, device=x.device)
    eta_at_checkpoint = eta.clone()
    f_max_at_checkpoint = f_max.clone()
    marks = set(checkpoints(steps))
    last_mark = 0
    for k in range(steps):
        found = active_gradient(model, x_cur, labels, correct, success, x_best, loss_fn, targets)
        if found is None:
            on_step(steps, steps)
            break
        active, grad, f = found
        xa = x[active]
        increases[active] += (f > f_last[active]).float()
        f_last[active] = f
        better = f > f_max[active]
        # torch.where, not a boolean index: no wait for the device to count the rows each step.
        x_max[active] = torch.where(per_sample(better, xa), x_cur[active], x_max[active])
        f_max[active] = torch.maximum(f_max[active], f)
        reset = torch.zeros(len(active), dtype=torch.bool, device=x.device)
        if k in marks:
            stalled = increases[active] < RHO * (k - last_mark)
            unchanged = (eta_at_checkpoint[active] == eta[active]) & (
                f_max_at_checkpoint[active] == f_max[active]
            )
            reset = stalled | unchanged
            eta[active] = torch.where(reset, eta[active] / 2, eta[active])
            increases[active] = 0
            eta_at_checkpoint[active] = eta[active]
            f_max_at_checkpoint[active] = f_max[active]
            last_mark = k
        step = per_sample(eta[active], xa)
        cur = x_cur[active]
        z = project_linf(cur + step * grad.sign(), xa, epsilon, bounds)
        if k == 0:
            new = z
        else:
            previous = x_prev[active]
            new = project_linf(
                cur + MOMENTUM * (z - cur) + (1 - MOMENTUM) * (cur - previous), xa, epsilon, bounds
            )
        # After a halving the search restarts from the best point, without momentum.
        restart = x_max[active]
        new = torch.where(per_sample(reset, new), restart, new)
        x_prev[active] = torch.where(per_sample(reset, cur), restart, cur)
        x_cur[active] = new
        on_step(k + 1, steps)
    check_last_iterate(model, x_cur, labels, correct, success, x_best)
    return AttackResult(x_best.detach(), success, correct)


def apgd_targeted(
    model: nn.Module,
    x: Tensor,
    labels: Tensor,
    *,
    epsilon: float,
    steps: int = 100,
    target_classes: int = 9,
    bounds: InputRange = (0.0, 1.0),
    seed: int = 0,
    on_step: StepHook = no_hook,
) -> AttackResult:
    """APGD-T (Croce & Hein 2020): APGD on the targeted DLR loss, once per target class among
    the ``target_classes`` most likely wrong ones, on the samples no earlier target fooled.

    Aiming at one class at a time finds adversarials that the untargeted loss, which follows only
    the runner-up class, misses (AutoAttack's standard version uses the 9 top classes).
    """

    def towards(xs: Tensor, ys: Tensor, targets: Tensor, hook: StepHook) -> AttackResult:
        return apgd(
            model, xs, ys, epsilon=epsilon, loss="dlr", steps=steps, bounds=bounds, seed=seed,
            on_step=hook, targets=targets,
        )  # fmt: skip

    return over_top_targets(
        model, x, labels, target_classes=target_classes, run=towards, on_step=on_step
    )
