"""How one run of an audit attack is called: its inputs (:class:`AttackCall`), the runners that
pass the spec's settings to the attack families, and the budgets each norm is attacked at.

:mod:`core.audit.registry` pairs every attack with one of these runners.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from torch import Tensor, nn

from core.audit.attacks.apgd import apgd, apgd_targeted
from core.audit.attacks.base import AttackResult, InputRange, StepHook, no_hook
from core.audit.attacks.cw import carlini_wagner_l2
from core.audit.attacks.fab import fab_targeted
from core.audit.attacks.gradient import fgsm, perturbation_size, pgd
from core.audit.attacks.jsma import changed_fraction, jsma
from core.audit.attacks.square import square_linf
from core.audit.attacks.transfer import transfer
from core.audit.schema import ThreatNorm
from core.contract.evaluation import EvaluationSpec


@dataclass(frozen=True, kw_only=True)
class AttackCall:
    """Everything one run of an attack gets: the model, the batch, its budget and the settings."""

    model: nn.Module
    x: Tensor
    labels: Tensor
    epsilon: float | None  # None for a minimum-norm attack, which has no budget
    settings: EvaluationSpec
    bounds: InputRange
    num_classes: int
    on_step: StepHook = no_hook
    # Adversarials crafted on another model from the same x; only a transfer attack reads them.
    source_adversarial: Tensor | None = None
    # The seed of the attack's random draws; None: the settings' (an audit's shard k draws with
    # its own, core.audit.shards.shard_seed).
    seed: int | None = None

    @property
    def budget(self) -> float:
        """The run's epsilon, for the attacks that have one."""
        if self.epsilon is None:
            raise ValueError("this attack needs a budget, but the run was given none")
        return self.epsilon

    @property
    def draw_seed(self) -> int:
        """The seed of the run's random draws."""
        return self.settings.seed if self.seed is None else self.seed


AttackRunner = Callable[[AttackCall], AttackResult]


def norm_budgets(norm: ThreatNorm, settings: EvaluationSpec) -> list[float]:
    """The spec's budgets for ``norm``: epsilons for L-inf and L2, the changed fraction for L0.
    :func:`core.audit.evaluate.evaluate` fills in the threat model's epsilons for the data first;
    a spec without them reads the preset's for inputs in [0, 1]."""
    if norm in ("linf", "l2"):
        return settings.budgets(norm, (0.0, 1.0))  # type: ignore[arg-type]
    return [settings.jsma_max_fraction]


def perturbation_sizes(norm: ThreatNorm, x_adv: Tensor, x: Tensor) -> Tensor:
    """Per-sample size of ``x_adv - x`` in ``norm`` (L0: the fraction of features changed)."""
    if norm == "l0":
        return changed_fraction(x_adv, x)
    return perturbation_size(x_adv, x, norm)


def fgsm_runner(loss: str) -> AttackRunner:
    """FGSM (L-inf) following ``loss``."""

    def run(call: AttackCall) -> AttackResult:
        return fgsm(
            call.model, call.x, call.labels, epsilon=call.budget, loss=loss, bounds=call.bounds,
            on_step=call.on_step,
        )  # fmt: skip

    return run


def pgd_runner(norm: Literal["linf", "l2"], loss: str) -> AttackRunner:
    """PGD in ``norm`` following ``loss``, with the spec's step count."""

    def run(call: AttackCall) -> AttackResult:
        return pgd(
            call.model, call.x, call.labels, epsilon=call.budget, norm=norm, loss=loss,
            steps=call.settings.pgd_steps, bounds=call.bounds, seed=call.draw_seed,
            on_step=call.on_step,
        )  # fmt: skip

    return run


def apgd_runner(loss: str) -> AttackRunner:
    """APGD (L-inf) following ``loss``, with the spec's step count."""

    def run(call: AttackCall) -> AttackResult:
        return apgd(
            call.model, call.x, call.labels, epsilon=call.budget, loss=loss,
            steps=call.settings.pgd_steps, bounds=call.bounds, seed=call.draw_seed,
            on_step=call.on_step,
        )  # fmt: skip

    return run


def run_apgd_targeted(call: AttackCall) -> AttackResult:
    """APGD-T (L-inf, targeted DLR) towards the spec's number of target classes."""
    return apgd_targeted(
        call.model, call.x, call.labels, epsilon=call.budget, steps=call.settings.pgd_steps,
        target_classes=call.settings.target_classes, bounds=call.bounds,
        seed=call.draw_seed, on_step=call.on_step,
    )  # fmt: skip


def run_fab_targeted(call: AttackCall) -> AttackResult:
    """FAB-T (L-inf) within the budget, towards the spec's number of target classes."""
    return fab_targeted(
        call.model, call.x, call.labels, epsilon=call.budget, steps=call.settings.pgd_steps,
        target_classes=call.settings.target_classes, bounds=call.bounds, on_step=call.on_step,
    )  # fmt: skip


def jsma_runner(outputs: Literal["softmax", "logits"]) -> AttackRunner:
    """JSMA on ``outputs``, changing at most the budget's fraction of the features."""

    def run(call: AttackCall) -> AttackResult:
        return jsma(
            call.model, call.x, call.labels, num_classes=call.num_classes, outputs=outputs,
            max_fraction=call.budget, bounds=call.bounds, seed=call.draw_seed,
            on_step=call.on_step,
        )  # fmt: skip

    return run


def run_carlini_wagner_l2(call: AttackCall) -> AttackResult:
    """Carlini-Wagner L2 with the spec's binary-search and iteration counts (no budget)."""
    return carlini_wagner_l2(
        call.model, call.x, call.labels, binary_steps=call.settings.cw_binary_steps,
        iterations=call.settings.cw_iterations, bounds=call.bounds, on_step=call.on_step,
    )  # fmt: skip


# Square's initial square size (fraction of the pixels): AutoAttack's standard version uses 0.8
# for L-inf (Croce & Hein 2020), with 5,000 queries; the default evaluation keeps its 0.1.
SQUARE_P_INIT = {"default": 0.1, "autoattack": 0.8}


def run_square(call: AttackCall) -> AttackResult:
    """Square (L-inf) with the spec's query budget."""
    return square_linf(
        call.model, call.x, call.labels, epsilon=call.budget,
        queries=call.settings.square_queries, p_init=SQUARE_P_INIT[call.settings.preset],
        bounds=call.bounds, seed=call.draw_seed, on_step=call.on_step,
    )  # fmt: skip


def run_transfer(call: AttackCall) -> AttackResult:
    """The source model's adversarials applied to ``call.model``."""
    if call.source_adversarial is None:
        raise ValueError("a transfer attack needs the source model's adversarials")
    return transfer(call.model, call.x, call.source_adversarial, call.labels)
