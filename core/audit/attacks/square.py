"""Square attack, L-infinity (Andriushchenko, Croce, Flammarion, Hein, ECCV 2020).

Gradient-free: random square patches of +-eps, kept when they lower the logit margin
``z_y - max_{j!=y} z_j``. It only reads logits, so vanishing gradients cannot stop it; when it
beats white-box gradient attacks, the gradients were masking.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from core.audit.attacks.base import (
    AttackResult,
    InputRange,
    StepHook,
    margin,
    no_hook,
    predict,
    seeded_generator,
)

# (iteration on a 10,000-query scale, divisor of p_init after it): the paper's schedule.
_SCHEDULE = (
    (10, 1),
    (50, 2),
    (200, 4),
    (500, 8),
    (1000, 16),
    (2000, 32),
    (4000, 64),
    (6000, 128),
    (8000, 256),
)


def square_fraction(p_init: float, iteration: int, queries: int) -> float:
    """Fraction of pixels a square covers at ``iteration``, halving on the paper's schedule."""
    scaled = int(iteration / max(queries, 1) * 10_000)
    for bound, divisor in _SCHEDULE:
        if scaled <= bound:
            return p_init / divisor
    return p_init / 512


def _margin_of(model: nn.Module, x: Tensor, labels: Tensor) -> Tensor:
    with torch.no_grad():
        # Sign flipped: the attack lowers z_y - max_{j!=y} z_j until it is negative.
        return -margin(model(x), labels)


def square_linf(
    model: nn.Module,
    x: Tensor,
    labels: Tensor,
    *,
    epsilon: float,
    queries: int = 1000,
    p_init: float = 0.1,
    bounds: InputRange = (0.0, 1.0),
    seed: int = 0,
    on_step: StepHook = no_hook,
) -> AttackResult:
    """Untargeted Square attack with at most ``queries`` model queries per sample."""
    gen = seeded_generator(seed)
    correct = predict(model, x) == labels
    _, channels, height, width = x.shape
    # Vertical stripes of +-eps: the paper's initialisation.
    signs = torch.randint(0, 2, (len(x), channels, 1, width), generator=gen).to(x) * 2 - 1
    x_cur = (x + epsilon * signs).clamp(*bounds)
    x_cur = torch.where(correct.view(-1, 1, 1, 1), x_cur, x)
    best_margin = _margin_of(model, x_cur, labels)
    rows = torch.arange(height, device=x.device).view(1, 1, height, 1)
    cols = torch.arange(width, device=x.device).view(1, 1, 1, width)
    total = max(queries - 1, 1)
    for i in range(queries - 1):
        active = (correct & (best_margin >= 0)).nonzero().squeeze(1)
        if len(active) == 0:
            on_step(total, total)
            break
        side = round(math.sqrt(square_fraction(p_init, i, queries) * height * width))
        side = min(max(side, 1), height, width)
        n = len(active)
        top = (
            torch.randint(0, height - side + 1, (n,), generator=gen).to(x.device).view(-1, 1, 1, 1)
        )
        left = (
            torch.randint(0, width - side + 1, (n,), generator=gen).to(x.device).view(-1, 1, 1, 1)
        )
        window = (rows >= top) & (rows < top + side) & (cols >= left) & (cols < left + side)
        values = (torch.randint(0, 2, (n, channels, 1, 1), generator=gen).to(x) * 2 - 1) * epsilon
        xa = x[active]
        delta = torch.where(window, values, x_cur[active] - xa)
        candidate = (xa + delta).clamp(*bounds)
        cand_margin = _margin_of(model, candidate, labels[active])
        improved = cand_margin < best_margin[active]
        # torch.where, not a boolean index: no device sync per query.
        x_cur[active] = torch.where(improved.view(-1, 1, 1, 1), candidate, x_cur[active])
        best_margin[active] = torch.where(improved, cand_margin, best_margin[active])
        on_step(i + 1, total)
    success = correct & (predict(model, x_cur) != labels)
    x_adv = torch.where(success.view(-1, 1, 1, 1) | correct.view(-1, 1, 1, 1), x_cur, x)
    return AttackResult(x_adv.detach(), success, correct)
