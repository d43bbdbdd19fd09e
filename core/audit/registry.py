"""The attacks of the robustness audit, one entry each: how it is presented, budgeted and run,
and what the evidence and the verdict may read from it.

``core.evaluation_spec.AttackName`` lists the same names in the same order (the spec stays
torch-free, so a test checks that they agree). :mod:`core.audit.evaluate` runs the entries on
both models; :mod:`core.audit.evidence` and :mod:`core.audit.verdict` read their flags, never
their names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

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
from core.evaluation_spec import AttackName, EvaluationSpec

PerturbationUnit = Literal["linf", "l2", "fraction_changed"]
# The part an attack plays in AutoAttack (Croce & Hein 2020): APGD on cross-entropy, APGD on a
# DLR loss (targeted in the standard version), FAB-T and Square.
AutoAttackRole = Literal["apgd_ce", "apgd_dlr", "fab", "square"]
# The roles a gain must have been measured by before the verdict calls it real: the three
# AutoAttack components that do not overlap (FAB-T rarely adds to them; Croce & Hein 2020).
AUTOATTACK_REQUIRED: tuple[AutoAttackRole, ...] = ("apgd_ce", "apgd_dlr", "square")
_UNIT_OF_NORM: dict[ThreatNorm, PerturbationUnit] = {
    "linf": "linf",
    "l2": "l2",
    "l0": "fraction_changed",
}


@dataclass(frozen=True, kw_only=True)
class Attack:
    """One attack of the audit."""

    name: AttackName
    title: str
    norm: ThreatNorm
    loss: str  # what it follows: ce, margin, dlr, softmax, logits, cw, transfer
    run: AttackRunner
    paper_attack: bool = False  # used by the distillation paper (Papernot et al. 2016)
    # Logit-level, scale-invariant, gradient-free or transfer: softmax saturation cannot stop it.
    sees_through_masking: bool = False
    black_box: bool = False  # reads no gradient of the attacked model
    slow: bool = False  # attacked on the spec's samples_slow, a prefix of the samples
    targeted: bool = False
    # Searches the smallest perturbation instead of staying inside a budget; read afterwards at
    # every budget of its norm.
    minimum_norm: bool = False
    # Reports the sizes of its successful perturbations: those of the budgeted fixed-size
    # attacks all sit near epsilon and say nothing.
    measures_perturbation: bool = False
    # The same attack following a loss that does not saturate: where it wins by far, the
    # evidence calls the failure loss-specific (gradient masking).
    loss_counterpart: AttackName | None = None
    # The attack whose adversarials on the uploaded model this one applies to the student.
    transfer_from: AttackName | None = None
    # Its part in AutoAttack, if any: the verdict calls a gain real only where the required
    # roles (AUTOATTACK_REQUIRED) all ran.
    autoattack_role: AutoAttackRole | None = None
    note: str | None = None  # shown on the models it attacks
    source_note: str | None = None  # shown on the model that supplies a transfer's adversarials

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


def _pgd_pair(
    norm: Literal["linf", "l2"], norm_title: str, *, ce_name: AttackName, margin_name: AttackName
) -> tuple[Attack, Attack]:
    """PGD in ``norm`` on cross-entropy, and its counterpart on the logit margin."""
    on_margin = Attack(
        name=margin_name, title=f"PGD {norm_title}, logit margin", norm=norm, loss="margin",
        run=pgd_runner(norm, "margin"), sees_through_masking=True,
    )  # fmt: skip
    on_cross_entropy = Attack(
        name=ce_name, title=f"PGD {norm_title}, cross-entropy", norm=norm, loss="ce",
        run=pgd_runner(norm, "ce"), loss_counterpart=margin_name,
    )  # fmt: skip
    return on_cross_entropy, on_margin


_ATTACKS = (
    Attack(
        name="fgsm_ce", title="FGSM, cross-entropy", norm="linf", loss="ce",
        run=fgsm_runner("ce"), paper_attack=True, loss_counterpart="fgsm_margin",
    ),
    Attack(
        name="fgsm_margin", title="FGSM, logit margin", norm="linf", loss="margin",
        run=fgsm_runner("margin"),
    ),
    *_pgd_pair("linf", "L-inf", ce_name="pgd_linf_ce", margin_name="pgd_linf_margin"),
    *_pgd_pair("l2", "L2", ce_name="pgd_l2_ce", margin_name="pgd_l2_margin"),
    Attack(
        name="jsma_softmax", title="JSMA on softmax (paper)", norm="l0", loss="softmax",
        run=jsma_runner("softmax"), paper_attack=True, slow=True, targeted=True,
        measures_perturbation=True,
    ),
    Attack(
        name="jsma_logits", title="JSMA on logits", norm="l0", loss="logits",
        run=jsma_runner("logits"), sees_through_masking=True, slow=True, targeted=True,
        measures_perturbation=True,
    ),
    Attack(
        name="cw_l2", title="Carlini-Wagner L2", norm="l2", loss="cw", run=run_carlini_wagner_l2,
        sees_through_masking=True, slow=True, minimum_norm=True, measures_perturbation=True,
    ),
    Attack(
        name="apgd_ce", title="APGD, cross-entropy", norm="linf", loss="ce",
        run=apgd_runner("ce"), loss_counterpart="apgd_dlr", autoattack_role="apgd_ce",
    ),
    Attack(
        name="apgd_dlr", title="APGD, DLR (scale-invariant)", norm="linf", loss="dlr",
        run=apgd_runner("dlr"), sees_through_masking=True, autoattack_role="apgd_dlr",
    ),
    Attack(
        name="apgd_t", title="APGD-T, targeted DLR", norm="linf", loss="dlr",
        run=run_apgd_targeted, sees_through_masking=True, autoattack_role="apgd_dlr",
        note="Towards each of the most likely wrong classes in turn; any misclassification "
        "counts, as in AutoAttack.",
    ),
    Attack(
        name="fab_t", title="FAB-T (targeted boundary attack)", norm="linf", loss="margin",
        run=run_fab_targeted, sees_through_masking=True, autoattack_role="fab",
        note="Towards each of the most likely wrong classes in turn; any misclassification "
        "within the budget counts, as in AutoAttack.",
    ),
    Attack(
        name="square", title="Square (gradient-free)", norm="linf", loss="margin", run=run_square,
        sees_through_masking=True, black_box=True, slow=True, autoattack_role="square",
    ),
    Attack(
        name="transfer", title="Transfer from the uploaded model", norm="linf", loss="transfer",
        run=run_transfer, sees_through_masking=True, black_box=True,
        transfer_from="pgd_linf_margin",
        note="PGD L-inf with the logit margin on the uploaded model.",
        source_note="The uploaded model is the transfer source (PGD-margin on it).",
    ),
)  # fmt: skip

# In the order of core.evaluation_spec.AttackName, which is the order of the report's sections.
REGISTRY: dict[AttackName, Attack] = {attack.name: attack for attack in _ATTACKS}
