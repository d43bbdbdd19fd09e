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

from core.attacks.base import (
    AttackResult,
    InputRange,
    StepHook,
    next_targets,
    no_hook,
    predict,
    random_targets,
    seeded_generator,
)

# Pair scores take (chunk, n, n) floats: chunking keeps that under ~100 MB for 28x28 inputs.
_PAIR_CHUNK = 32


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
    """Per sample, the admissible feature pair (p, q) with the largest saliency, and whether any
    pair is admissible (alpha_pq > 0 and beta_pq < 0, both features still increasable)."""
    n = alpha.shape[1]
    eye = torch.eye(n, dtype=torch.bool, device=alpha.device)
    firsts, seconds, found = [], [], []
    for i in range(0, len(alpha), _PAIR_CHUNK):
        a, b, d = alpha[i : i + _PAIR_CHUNK], beta[i : i + _PAIR_CHUNK], domain[i : i + _PAIR_CHUNK]
        pair_alpha = a[:, :, None] + a[:, None, :]
        pair_beta = b[:, :, None] + b[:, None, :]
        valid = (pair_alpha > 0) & (pair_beta < 0) & d[:, :, None] & d[:, None, :] & ~eye
        score = torch.where(valid, pair_alpha * -pair_beta, torch.full_like(pair_alpha, -1.0))
        best = score.flatten(1).argmax(1)
        firsts.append(best // n)
        seconds.append(best % n)
        found.append(valid.flatten(1).any(1))
    return torch.cat(firsts), torch.cat(seconds), torch.cat(found)


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
    bounds: InputRange = (0.0, 1.0),
    seed: int = 0,
    on_step: StepHook = no_hook,
) -> AttackResult:
    """Targeted JSMA (pairs of features, increased to ``bounds[1]``), batched over samples.

    At most ``floor(max_fraction * features / 2)`` pairs are changed, so never more than
    ``max_fraction`` of the features. Success: clean prediction correct and target reached.
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
        first, second, found = _best_pairs(alpha, beta, domain[active])
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
