"""The inner maximisation of training against attacks, and the held-out check that guards it.

Adversarial training (Madry et al. 2018) solves ``min_θ E max_{δ in ball} loss(f(x + δ), y)``; the
inner max is PGD from a random start. The audit's PGD (core.audit.attacks.gradient) is not reused
for it on purpose: that one keeps the first adversarial it finds and drops fooled samples, which
is right for measuring and wrong for training, where every sample wants its highest-loss point and
the batch must keep its shape. The projections are the audit's, so both agree on the ball.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from core.audit.attacks.base import normalise_l2, per_sample, project_l2, project_linf
from core.audit.attacks.gradient import Norm, pgd
from core.contract.spec import HardenSpec
from core.modules import set_training_mode

# What the inner maximisation climbs: the batch's logits at x + δ -> a scalar.
Objective = Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class Budget:
    """The threat model one training step defends against."""

    norm: Norm
    epsilon: float
    steps: int
    step_size: float
    bounds: tuple[float, float]

    @classmethod
    def of(cls, spec: HardenSpec) -> Budget:
        """The spec's training budget (``spec.robust``; epsilon defaults to the audited one)."""
        epsilon = spec.robust_epsilon()
        steps = spec.robust.steps
        step_size = spec.robust.step_size or 2.5 * epsilon / steps
        return cls(spec.robust.norm, epsilon, steps, step_size, spec.input_range)

    def at(self, fraction: float) -> Budget:
        """This budget scaled by ``fraction`` (the warm-up's linear ramp), step size included."""
        fraction = min(1.0, max(0.0, fraction))
        return Budget(
            self.norm, self.epsilon * fraction, self.steps, self.step_size * fraction, self.bounds
        )

    def project(self, x_adv: Tensor, x: Tensor) -> Tensor:
        if self.norm == "linf":
            return project_linf(x_adv, x, self.epsilon, self.bounds)
        return project_l2(x_adv, x, self.epsilon, self.bounds)

    def direction(self, grad: Tensor) -> Tensor:
        return grad.sign() if self.norm == "linf" else normalise_l2(grad)

    def uniform_start(self, x: Tensor, generator: torch.Generator) -> Tensor:
        """A uniformly random point of the ball around ``x`` (L-inf), or a random direction at a
        uniform radius (L2), inside the input range."""
        noise = torch.rand(x.shape, generator=generator, device=generator.device)
        noise = noise.to(x.device, x.dtype)
        if self.norm == "linf":
            return self.project(x + (2 * noise - 1) * self.epsilon, x)
        direction = normalise_l2(noise - 0.5)
        radius = noise.flatten(1)[:, 0] * self.epsilon
        return self.project(x + direction * per_sample(radius, x), x)


def perturb(
    model: nn.Module,
    x: Tensor,
    objective: Objective,
    budget: Budget,
    *,
    start: Tensor,
    steps: int | None = None,
    step_size: float | None = None,
) -> Tensor:
    """Gradient ascent on ``objective(model(x'))`` from ``start``, projected onto the budget's
    ball around ``x`` and the input range after every step. The model is evaluated in eval mode
    (batch statistics of adversarial batches must not leak into BatchNorm's running averages)
    and left in training mode; the result carries no graph."""
    if budget.epsilon <= 0:
        return x.detach()
    set_training_mode(model, False)
    x_adv = start.detach()
    for _ in range(budget.steps if steps is None else steps):
        x_adv.requires_grad_(True)
        (grad,) = torch.autograd.grad(objective(model(x_adv)), x_adv)
        step = budget.step_size if step_size is None else step_size
        x_adv = budget.project(x_adv.detach() + step * budget.direction(grad), x)
    set_training_mode(model, True)
    return x_adv.detach()


@dataclass
class HeldOutCheck:
    """PGD accuracy on a held-out batch after every epoch, at the full budget.

    It keeps the weights of the most robust epoch (robust overfitting: the last epoch is often not
    the best, Rice et al. 2020) and notices catastrophic overfitting, where fast single-step
    training suddenly stops resisting PGD while its FGSM accuracy soars (Wong et al. 2020): PGD
    accuracy falling below half its best marks it.
    """

    model: nn.Module
    inputs: Tensor
    labels: Tensor
    budget: Budget
    seed: int
    accuracies: list[float] = field(default_factory=list)
    best_epoch: int = -1
    best_state: dict[str, Tensor] | None = None

    def measure(self) -> float:
        set_training_mode(self.model, False)
        result = pgd(
            self.model, self.inputs, self.labels, epsilon=self.budget.epsilon,
            norm=self.budget.norm, loss="ce", steps=self.budget.steps,
            step_size=self.budget.step_size, bounds=self.budget.bounds, seed=self.seed,
        )  # fmt: skip
        return float((result.correct_before & ~result.success).float().mean())

    def record(self, epoch: int) -> float:
        """Measure after ``epoch``; keep the weights if it is the best so far."""
        accuracy = self.measure()
        self.accuracies.append(accuracy)
        if self.best_epoch < 0 or accuracy >= max(self.accuracies[:-1], default=-1.0):
            self.best_epoch = epoch
            self.best_state = copy.deepcopy(self.model.state_dict())
        return accuracy

    def collapsed(self) -> bool:
        """The last epoch lost more than half the best robust accuracy (a meaningful one)."""
        best = max(self.accuracies, default=0.0)
        return best >= 0.1 and self.accuracies[-1] < 0.5 * best

    def restore_best(self) -> None:
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)
