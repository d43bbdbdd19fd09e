"""The attacks of the robustness audit: how each is presented and budgeted (:data:`ATTACKS`) and
how one run of it is called with the spec's settings (:func:`run_attack`, :func:`budgets`).

The attacks themselves live in :mod:`core.audit.attacks`; :mod:`core.audit.evaluate` runs them
on both models.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from core.audit import attacks
from core.audit.attacks.base import AttackResult
from core.errors import InvalidSpecError
from core.spec import EvaluationSpec


@dataclass(frozen=True)
class AttackInfo:
    """How an attack is presented and budgeted."""

    title: str
    norm: str  # linf, l2 or l0
    loss: str
    paper: bool = False
    sees_through_masking: bool = False
    slow: bool = False
    targeted: bool = False
    unit: str | None = None


ATTACKS: dict[str, AttackInfo] = {
    "fgsm_ce": AttackInfo("FGSM, cross-entropy", "linf", "ce", paper=True),
    "fgsm_margin": AttackInfo("FGSM, logit margin", "linf", "margin"),
    "pgd_linf_ce": AttackInfo("PGD L-inf, cross-entropy", "linf", "ce"),
    "pgd_linf_margin": AttackInfo("PGD L-inf, logit margin", "linf", "margin", False, True),
    "pgd_l2_ce": AttackInfo("PGD L2, cross-entropy", "l2", "ce"),
    "pgd_l2_margin": AttackInfo("PGD L2, logit margin", "l2", "margin", False, True),
    "jsma_softmax": AttackInfo(
        "JSMA on softmax (paper)", "l0", "softmax", True, False, True, True, "fraction_changed"
    ),
    "jsma_logits": AttackInfo(
        "JSMA on logits", "l0", "logits", False, True, True, True, "fraction_changed"
    ),
    "cw_l2": AttackInfo("Carlini-Wagner L2", "l2", "cw", False, True, True, False, "l2"),
    "apgd_ce": AttackInfo("APGD, cross-entropy", "linf", "ce"),
    "apgd_dlr": AttackInfo("APGD, DLR (scale-invariant)", "linf", "dlr", False, True),
    "square": AttackInfo("Square (gradient-free)", "linf", "margin", False, True, True),
    "transfer": AttackInfo("Transfer from the uploaded model", "linf", "transfer", False, True),
}


def run_attack(
    name: str,
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    epsilon: float | None,
    ev: EvaluationSpec,
    bounds: tuple[float, float],
    num_classes: int,
    hook: attacks.StepHook,
) -> AttackResult:
    """One run of attack ``name`` on ``(x, y)`` at budget ``epsilon``, with the spec's settings."""
    seed = ev.seed
    if name.startswith("fgsm"):
        assert epsilon is not None
        return attacks.fgsm(
            model, x, y, epsilon=epsilon, loss=name.split("_")[1], bounds=bounds, on_step=hook
        )
    if name.startswith("pgd"):
        _, norm, loss = name.split("_")
        assert epsilon is not None
        return attacks.pgd(
            model, x, y, epsilon=epsilon, norm=norm,  # type: ignore[arg-type]
            loss=loss, steps=ev.pgd_steps, bounds=bounds, seed=seed, on_step=hook,
        )  # fmt: skip
    if name.startswith("apgd"):
        assert epsilon is not None
        return attacks.apgd(
            model, x, y, epsilon=epsilon, loss=name.split("_")[1], steps=ev.pgd_steps,
            bounds=bounds, seed=seed, on_step=hook,
        )  # fmt: skip
    if name.startswith("jsma"):
        return attacks.jsma(
            model, x, y, num_classes=num_classes, outputs=name.split("_")[1],  # type: ignore[arg-type]
            max_fraction=ev.jsma_max_fraction, bounds=bounds, seed=seed, on_step=hook,
        )  # fmt: skip
    if name == "cw_l2":
        return attacks.carlini_wagner_l2(
            model, x, y, binary_steps=ev.cw_binary_steps, iterations=ev.cw_iterations,
            bounds=bounds, on_step=hook,
        )  # fmt: skip
    if name == "square":
        assert epsilon is not None
        return attacks.square_linf(
            model, x, y, epsilon=epsilon, queries=ev.square_queries, bounds=bounds, seed=seed,
            on_step=hook,
        )  # fmt: skip
    raise InvalidSpecError(f"unknown attack {name!r}", hint="use the names listed in the spec")


def budgets(name: str, ev: EvaluationSpec) -> list[float | None]:
    """The budgets attack ``name`` runs at; ``[None]`` for the minimum-norm and L0 attacks."""
    norm = ATTACKS[name].norm
    if name in ("cw_l2",) or norm == "l0":
        return [None]
    return list(ev.epsilons_linf if norm == "linf" else ev.epsilons_l2)
