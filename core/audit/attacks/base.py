"""Shared pieces of every attack: the result type, the losses and the projections.

All attacks work on a model that returns raw logits, on batches already on the model's device,
and keep every input inside the valid range ``[low, high]``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# Called once per attack step with (step, total_steps); the evaluator uses it for progress and to
# check cancellation (it may raise).
StepHook = Callable[[int, int], None]

InputRange = tuple[float, float]


@dataclass
class AttackResult:
    """What one attack run produced, per sample."""

    adversarial: Tensor  # same shape as the clean batch, inside the input range
    success: Tensor  # bool: correctly classified before AND fooled (or target reached) after
    correct_before: Tensor  # bool: clean prediction equals the label
    target: Tensor | None = None  # int64 target class of a targeted attack


def no_hook(step: int, total: int) -> None:
    """Default ``on_step``: does nothing."""


def predict(model: nn.Module, x: Tensor, batch_size: int = 512) -> Tensor:
    """Predicted classes of ``x`` (no gradient)."""
    with torch.no_grad():
        return torch.cat(
            [model(x[i : i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)]
        )


def margin(logits: Tensor, labels: Tensor) -> Tensor:
    """CW logit margin ``max_{j != y} z_j - z_y`` per sample (> 0 means misclassified)."""
    true_logit = logits.gather(1, labels[:, None]).squeeze(1)
    others = logits.scatter(1, labels[:, None], float("-inf"))
    return others.max(1).values - true_logit


def dlr(logits: Tensor, labels: Tensor) -> Tensor:
    """Scale-invariant DLR loss of Croce & Hein 2020: ``-(z_y - max_{j!=y} z_j)/(z_1 - z_3)``.

    Dividing by the spread of the sorted logits makes it blind to the factor-T logit scaling that
    defensive distillation relies on.
    """
    ordered = logits.sort(1, descending=True).values
    return margin(logits, labels) / (ordered[:, 0] - ordered[:, 2] + 1e-12)


def cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    """Per-sample cross-entropy (the paper's attack loss; saturates on distilled models)."""
    return F.cross_entropy(logits, labels, reduction="none")


def targeted_dlr(logits: Tensor, labels: Tensor, targets: Tensor) -> Tensor:
    """Targeted DLR of Croce & Hein 2020: ``-(z_y - z_t) / (z_1 - (z_3 + z_4) / 2)``.

    Scale-invariant like :func:`dlr`; the denominator skips z_2, which may be the target itself.
    With fewer than four classes the last sorted logit stands in for the missing ones.
    """
    ordered = logits.sort(1, descending=True).values
    last = logits.shape[1] - 1
    spread = ordered[:, 0] - (ordered[:, min(2, last)] + ordered[:, min(3, last)]) / 2
    target_logit = logits.gather(1, targets[:, None]).squeeze(1)
    true_logit = logits.gather(1, labels[:, None]).squeeze(1)
    return (target_logit - true_logit) / (spread + 1e-12)


LossFn = Callable[[Tensor, Tensor], Tensor]
TargetedLossFn = Callable[[Tensor, Tensor, Tensor], Tensor]

LOSSES: dict[str, LossFn] = {
    "ce": cross_entropy,
    "margin": margin,
    "dlr": dlr,
}
# The losses an attack follows towards a given class (APGD-T).
TARGETED_LOSSES: dict[str, TargetedLossFn] = {"dlr": targeted_dlr}


def loss_gradient(
    model: nn.Module, x: Tensor, labels: Tensor, loss: LossFn
) -> tuple[Tensor, Tensor, Tensor]:
    """(gradient of the summed per-sample loss w.r.t. ``x``, per-sample loss, logits)."""
    x = x.detach().requires_grad_(True)
    logits = model(x)
    values = loss(logits, labels)
    (grad,) = torch.autograd.grad(values.sum(), x)
    return grad.detach(), values.detach(), logits.detach()


def still_correct(correct: Tensor, success: Tensor) -> Tensor:
    """Indices of the samples an iterative attack still works on: correct and not fooled yet."""
    return (correct & ~success).nonzero().squeeze(1)


def keep_fooled(
    x_best: Tensor, success: Tensor, x_cur: Tensor, active: Tensor, fooled: Tensor
) -> None:
    """Record, in place, the iterates ``x_cur[active[fooled]]`` as found adversarials.

    An iterative attack keeps the first adversarial it finds for a sample: a sample counts as
    fooled if any iterate fooled it, even if a later step would move it back. Written with
    ``torch.where`` over the active rows, not a boolean index: a boolean index waits for the
    device to count the fooled rows, once per step (the samples still active are only ever
    unfooled, so the result is the same).
    """
    x_best[active] = torch.where(per_sample(fooled, x_cur), x_cur[active], x_best[active])
    success[active] |= fooled


def active_gradient(
    model: nn.Module,
    x_cur: Tensor,
    labels: Tensor,
    correct: Tensor,
    success: Tensor,
    x_best: Tensor,
    loss: LossFn | TargetedLossFn,
    targets: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor] | None:
    """The start of one step of an iterative attack: (the samples still worked on, the loss
    gradient at their iterates, their per-sample loss), or None when every sample is done.

    With ``targets``, ``loss`` is a targeted loss and gets each sample's target class too.
    Iterates that already fool the model are recorded first (:func:`keep_fooled`).
    """
    active = still_correct(correct, success)
    if len(active) == 0:
        return None
    loss_of = cast(LossFn, loss)
    if targets is not None:
        loss_of = partial(cast(Callable[..., Tensor], loss), targets=targets[active])
    grad, values, logits = loss_gradient(model, x_cur[active], labels[active], loss_of)
    keep_fooled(x_best, success, x_cur, active, logits.argmax(1) != labels[active])
    return active, grad, values


def check_last_iterate(
    model: nn.Module,
    x_cur: Tensor,
    labels: Tensor,
    correct: Tensor,
    success: Tensor,
    x_best: Tensor,
) -> None:
    """Keep, in place, the final iterates that fool the model: the loop only checked the ones
    before its last step."""
    active = still_correct(correct, success)
    if len(active):
        keep_fooled(x_best, success, x_cur, active, predict(model, x_cur[active]) != labels[active])


def flat_norm(x: Tensor, p: float = 2.0) -> Tensor:
    """Per-sample norm over all non-batch dimensions."""
    return x.flatten(1).norm(p=p, dim=1)


def per_sample(values: Tensor, like: Tensor) -> Tensor:
    """Reshape a per-sample vector so it broadcasts against a batch shaped like ``like``."""
    return values.view(-1, *([1] * (like.dim() - 1)))


def project_linf(x_adv: Tensor, x: Tensor, epsilon: float, bounds: InputRange) -> Tensor:
    """Project into the L-infinity ball of radius ``epsilon`` around ``x`` and the input range."""
    delta = (x_adv - x).clamp(-epsilon, epsilon)
    return (x + delta).clamp(*bounds)


def project_l2(x_adv: Tensor, x: Tensor, epsilon: float, bounds: InputRange) -> Tensor:
    """Project into the L2 ball of radius ``epsilon`` around ``x``, then clip to the input range.

    Clipping after the ball projection can only shrink the perturbation, so both hold.
    """
    delta = x_adv - x
    norms = flat_norm(delta).clamp_min(1e-12)
    factor = (epsilon / norms).clamp(max=1.0)
    return (x + delta * per_sample(factor, delta)).clamp(*bounds)


def normalise_l2(g: Tensor) -> Tensor:
    """Unit-L2 direction per sample (zero stays zero)."""
    return g / per_sample(flat_norm(g).clamp_min(1e-12), g)


def random_targets(labels: Tensor, num_classes: int, generator: torch.Generator) -> Tensor:
    """A uniformly random wrong class per sample, reproducible through ``generator``."""
    shift = torch.randint(1, num_classes, labels.shape, generator=generator)
    return (labels.cpu() + shift) % num_classes


def next_targets(labels: Tensor, num_classes: int) -> Tensor:
    """The next class, ``(y + 1) mod K``: a deterministic wrong class."""
    return (labels + 1) % num_classes


def seeded_generator(seed: int) -> torch.Generator:
    """A CPU generator: random draws are identical on every device."""
    gen = torch.Generator()
    gen.manual_seed(seed)
    return gen
