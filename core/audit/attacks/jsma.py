"""Jacobian-based Saliency Map Attack (Papernot, McDaniel, Jha, Fredrikson, Celik, Swami 2016).

The attack the distillation paper evaluated with: targeted, it repeatedly picks the pair of
features whose joint saliency most increases the target output while decreasing the others, and
sets both to the maximum of the input range, until the target class is predicted or the budget
(a fraction of the features) is spent. ``outputs="softmax"`` is the paper's form; on a distilled
model the softmax saturates and its Jacobian vanishes, so that form stalls. ``outputs="logits"``
looks at the logits instead, which distillation only rescales.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn

from core.audit.attacks.base import (
    AttackResult,
    InputRange,
    StepHook,
    next_targets,
    no_hook,
    predict,
    random_targets,
    seeded_generator,
)

# Features among which pairs are searched (see _best_pairs).
_CANDIDATES = 128


def _jacobian_rows(
    model: nn.Module, x: Tensor, targets: Tensor, outputs: str
) -> tuple[Tensor, Tensor]:
    """(d F_target / dx, d sum_{j != target} F_j / dx), flattened per sample."""
    x = x.detach().requires_grad_(True)
    logits = model(x)
    out = logits.softmax(1) if outputs == "softmax" else logits
    target_out = out.gather(1, targets[:, None]).sum()
    (alpha,) = torch.autograd.grad(target_out, x, retain_graph=True)
    (total,) = torch.autograd.grad(out.sum(), x)
    return alpha.flatten(1), (total - alpha).flatten(1)


def _best_pairs(alpha: Tensor, beta: Tensor, domain: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per sample, the admissible feature pair (p, q) with the largest saliency
    ``alpha_pq * |beta_pq|`` (admissible: alpha_pq > 0, beta_pq < 0, both features still
    increasable), and whether any pair is admissible.

    The pairs are searched among the ``_CANDIDATES`` features with the largest ``alpha - beta``
    (all features when there are fewer): a full search on 28x28 inputs scores 614k pairs per
    sample and step, 40x the cost for pairs that would rarely win.
    """
    n = alpha.shape[1]
    k = min(n, _CANDIDATES)
    ranking = torch.where(domain, alpha - beta, torch.full_like(alpha, float("-inf")))
    candidates = ranking.topk(k, dim=1).indices
    a, b, d = alpha.gather(1, candidates), beta.gather(1, candidates), domain.gather(1, candidates)
    pair_alpha = a[:, :, None] + a[:, None, :]
    pair_beta = b[:, :, None] + b[:, None, :]
    eye = torch.eye(k, dtype=torch.bool, device=alpha.device)
    valid = (pair_alpha > 0) & (pair_beta < 0) & d[:, :, None] & d[:, None, :] & ~eye
    score = torch.where(valid, pair_alpha * -pair_beta, torch.full_like(pair_alpha, -1.0))
    best = score.flatten(1).argmax(1)
    first = candidates.gather(1, (best // k)[:, None]).squeeze(1)
    second = candidates.gather(1, (best % k)[:, None]).squeeze(1)
    return first, second, valid.flatten(1).any(1)


def jsma(
    model: nn.Module,
    x: Tensor,
    labels: Tensor,
    *,
    num_classes: int,
    outputs: Literal["softmax", "logits"] = "softmax",
    max_fraction: float = 0.145,
    target_mode: Literal["random", "next"] = "random",
    targets: Tensor | None = None,
    saliency: Literal["pairs", "target"] = "pairs",
    bounds: InputRange = (0.0, 1.0),
    seed: int = 0,
    on_step: StepHook = no_hook,
) -> AttackResult:
    """Targeted JSMA (pairs of features, increased to ``bounds[1]``), batched over samples.

    At most ``floor(max_fraction * features / 2)`` pairs are changed, so never more than
    ``max_fraction`` of the features. Success: clean prediction correct and target reached.
    ``saliency="pairs"`` is the paper's rule; ``"target"`` only follows the target output's
    gradient (the two features with the largest one), the simplification IBM ART implements,
    kept for like-for-like benchmarks.
    """
    high = bounds[1]
    if targets is None:
        if target_mode == "next":
            targets = next_targets(labels, num_classes)
        else:
            targets = random_targets(labels, num_classes, seeded_generator(seed))
    targets = targets.to(labels.device)
    correct = predict(model, x) == labels
    shape = x.shape[1:]
    flat = x.flatten(1).clone()
    features = flat.shape[1]
    max_iterations = math.floor(max_fraction * features / 2)
    # Features already at the maximum cannot be increased, so they are never chosen.
    domain = flat < high
    reached = torch.zeros_like(correct)
    stuck = torch.zeros_like(correct)
    for iteration in range(max_iterations):
        active = (correct & ~reached & ~stuck).nonzero().squeeze(1)
        if len(active) == 0:
            on_step(max_iterations, max_iterations)
            break
        xa = flat[active].view(-1, *shape)
        alpha, beta = _jacobian_rows(model, xa, targets[active], outputs)
        if saliency == "pairs":
            first, second, found = _best_pairs(alpha, beta, domain[active])
        else:
            masked = torch.where(domain[active], alpha, torch.full_like(alpha, float("-inf")))
            top = masked.topk(2, dim=1).indices
            first, second = top[:, 0], top[:, 1]
            found = domain[active].sum(1) >= 2
        stuck[active[~found]] = True
        move = active[found]
        first, second = first[found], second[found]
        flat[move, first] = high
        flat[move, second] = high
        domain[move, first] = False
        domain[move, second] = False
        if len(move):
            reached[move] = predict(model, flat[move].view(-1, *shape)) == targets[move]
        on_step(iteration + 1, max_iterations)
    x_adv = flat.view_as(x).detach()
    success = correct & (predict(model, x_adv) == targets)
    return AttackResult(x_adv, success, correct, target=targets)


def changed_fraction(x_adv: Tensor, x: Tensor) -> Tensor:
    """Per-sample fraction of input features that differ (JSMA's L0 cost)."""
    return (x_adv != x).flatten(1).float().mean(1)
