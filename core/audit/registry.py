"""The attacks of the robustness audit, runnable: each description of core.contract.attacks
(torch-free: name, norm, flags, cost) with the runner that attacks with it.

:mod:`core.audit.evaluate` runs the entries on both models; :mod:`core.audit.evidence` and
:mod:`core.audit.verdict` read their flags, never their names.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from core.audit.runs import (
    AttackRunner,
    apgd_runner,
    fgsm_runner,
    jsma_runner,
    norm_budgets,
    pgd_runner,
    run_apgd_targeted,
    run_carlini_wagner_l2,
    run_fab_targeted,
    run_square,
    run_transfer,
)
from core.audit.schema import ThreatNorm
from core.contract.attacks import (
    CATALOGUE,
    AttackInfo,
    AttackName,
    AutoAttackRole,
    PerturbationUnit,
)
from core.contract.evaluation import EvaluationSpec

# The roles a gain must have been measured by before the verdict calls it real: the three
# AutoAttack components that do not overlap (FAB-T rarely adds to them; Croce & Hein 2020).
AUTOATTACK_REQUIRED: tuple[AutoAttackRole, ...] = ("apgd_ce", "apgd_dlr", "square")
_UNIT_OF_NORM: dict[ThreatNorm, PerturbationUnit] = {
    "linf": "linf",
    "l2": "l2",
    "l0": "fraction_changed",
}


@dataclass(frozen=True, kw_only=True)
class Attack(AttackInfo):
    """One attack of the audit: its description (core.contract.attacks) and its runner."""

    run: AttackRunner

    def budgets(self, settings: EvaluationSpec) -> list[float | None]:
        """The budgets it runs at; ``[None]`` for a minimum-norm attack."""
        if self.minimum_norm:
            return [None]
        budgets: list[float | None] = [*norm_budgets(self.norm, settings)]
        return budgets

    @property
    def perturbation_unit(self) -> PerturbationUnit | None:
        """The unit of the perturbation sizes it reports; None where it reports none."""
        return _UNIT_OF_NORM[self.norm] if self.measures_perturbation else None


# The runner of each attack of the catalogue; nothing else about an attack is said here.
_RUNNERS: dict[str, AttackRunner] = {
    "fgsm_ce": fgsm_runner("ce"),
    "fgsm_margin": fgsm_runner("margin"),
    "pgd_linf_ce": pgd_runner("linf", "ce"),
    "pgd_linf_margin": pgd_runner("linf", "margin"),
    "pgd_l2_ce": pgd_runner("l2", "ce"),
    "pgd_l2_margin": pgd_runner("l2", "margin"),
    "jsma_softmax": jsma_runner("softmax"),
    "jsma_logits": jsma_runner("logits"),
    "cw_l2": run_carlini_wagner_l2,
    "apgd_ce": apgd_runner("ce"),
    "apgd_dlr": apgd_runner("dlr"),
    "apgd_t": run_apgd_targeted,
    "fab_t": run_fab_targeted,
    "square": run_square,
    "transfer": run_transfer,
}
_missing = [name for name in CATALOGUE if name not in _RUNNERS]
if _missing:  # described but not runnable: every job naming it would fail mid-audit
    raise ImportError(f"attacks described in core/contract/attacks.py without a runner: {_missing}")

# In the catalogue's order, which is the order of the report's sections.
REGISTRY: dict[AttackName, Attack] = {
    info.name: Attack(
        **{field.name: getattr(info, field.name) for field in fields(AttackInfo)},
        run=_RUNNERS[info.name],
    )
    for info in CATALOGUE.values()
}
