"""FGSM (Goodfellow et al. 2015) and PGD (Madry et al. 2018), L-infinity and L2.

Each works with the cross-entropy loss (as the distillation paper's evaluation did) or with the
CW logit margin ``max_{j!=y} z_j - z_y`` (Carlini & Wagner 2017), which does not saturate when
distillation multiplies the logits by T.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from core.audit.attacks.base import (
    LOSSES,
    AttackResult,
    InputRange,
    StepHook,
    active_gradient,
    check_last_iterate,
    flat_norm,
    loss_gradient,
    no_hook,
    normalise_l2,
    per_sample,
    predict,
    project_l2,
    project_linf,
    seeded_generator,
)

Norm = Literal["linf", "l2"]


def _step(grad: Tensor, norm: Norm) -> Tensor:
    # L-inf: the sign of the gradient; L2: its unit direction. A zero gradient (saturated softmax)
    # gives a zero step: that is exactly the masking the report has to expose.
    return grad.sign() if norm == "linf" else normalise_l2(grad)


def _project(x_adv: Tensor, x: Tensor, epsilon: float, norm: Norm, bounds: InputRange) -> Tensor:
    if norm == "linf":
        return project_linf(x_adv, x, epsilon, bounds)
    return project_l2(x_adv, x, epsilon, bounds)


def fgsm(
    model: nn.Module,
    x: Tensor,
    labels: Tensor,
    *,
    epsilon: float,
    norm: Norm = "linf",
    loss: str = "ce",
    bounds: InputRange = (0.0, 1.0),
    on_step: StepHook = no_hook,
) -> AttackResult:
    """One gradient step of size ``epsilon`` (sign step for L-inf, normalised step for L2)."""
    correct = predict(model, x) == labels
    grad, _, _ = loss_gradient(model, x, labels, LOSSES[loss])
    x_adv = _project(x + epsilon * _step(grad, norm), x, epsilon, norm, bounds)
    x_adv = torch.where(per_sample(correct, x), x_adv, x)
    on_step(1, 1)
    success = correct & (predict(model, x_adv) != labels)
    return AttackResult(x_adv.detach(), success, correct)


def _random_start(x: Tensor, epsilon: float, norm: Norm, gen: torch.Generator) -> Tensor:
    if norm == "linf":
        noise = (torch.rand(x.shape, generator=gen) * 2 - 1) * epsilon
    else:
        direction = normalise_l2(torch.randn(x.shape, generator=gen))
        # Radius u^(1/d) * eps makes the start uniform inside the L2 ball.
        d = x[0].numel()
        radius = torch.rand(len(x), generator=gen) ** (1.0 / d) * epsilon
        noise = direction * per_sample(radius, direction)
    return noise.to(x.device, x.dtype)


def pgd(
    model: nn.Module,
    x: Tensor,
    labels: Tensor,
    *,
    epsilon: float,
    norm: Norm = "linf",
    loss: str = "ce",
    steps: int = 40,
    step_size: float | None = None,
    random_start: bool = True,
    bounds: InputRange = (0.0, 1.0),
    seed: int = 0,
    on_step: StepHook = no_hook,
) -> AttackResult:
    """Projected gradient ascent on ``loss`` from a random start inside the ball.

    The first adversarial found for a sample is kept (a sample is fooled if any iterate fools it),
    and fooled samples leave the batch, which makes strong attacks on weak models cheap.
    """
    alpha = step_size if step_size is not None else 2.5 * epsilon / steps
    gen = seeded_generator(seed)
    correct = predict(model, x) == labels
    x_best = x.clone()
    success = torch.zeros_like(correct)
    start = _random_start(x, epsilon, norm, gen) if random_start else torch.zeros_like(x)
    x_cur = _project(x + start, x, epsilon, norm, bounds)
    loss_fn = LOSSES[loss]
    for step in range(steps):
        # The iterate that produced the gradient may already fool the model: it is kept.
        found = active_gradient(model, x_cur, labels, correct, success, x_best, loss_fn)
        if found is None:
            on_step(steps, steps)
            break
        active, grad, _ = found
        xa = x[active]
        moved = _project(x_cur[active] + alpha * _step(grad, norm), xa, epsilon, norm, bounds)
        x_cur[active] = moved
        on_step(step + 1, steps)
    check_last_iterate(model, x_cur, labels, correct, success, x_best)
    return AttackResult(x_best.detach(), success, correct)


def perturbation_size(x_adv: Tensor, x: Tensor, norm: Norm) -> Tensor:
    """Per-sample L-inf or L2 size of ``x_adv - x``."""
    delta = x_adv - x
    return delta.flatten(1).abs().max(1).values if norm == "linf" else flat_norm(delta)
