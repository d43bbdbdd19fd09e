"""The attacks of the robustness audit, described once and torch-free: name, norm, loss, the flags
the evidence and the verdict read, and what one costs per sample.

The job contract (core/contract/evaluation.py: ``AttackName``, the default and autoattack lists),
the
submit-time cost bound (core/contract/evaluation_cost.py) and the audit's registry
(core/audit/registry.py,
which attaches a runner to each) all derive from :data:`CATALOGUE`: an attack added here is a valid
``evaluation.attacks`` name, has a cost, and must have a runner or the worker refuses to start.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Literal

# The norm an attack's perturbation is measured in (l0: the fraction of input features changed).
ThreatNorm = Literal["linf", "l2", "l0"]
PerturbationUnit = Literal["linf", "l2", "fraction_changed"]
# The part an attack plays in AutoAttack (Croce & Hein 2020): APGD on cross-entropy, APGD on a
# DLR loss (targeted in the standard version), FAB-T and Square.
AutoAttackRole = Literal["apgd_ce", "apgd_dlr", "fab", "square"]


@dataclass(frozen=True)
class CostInputs:
    """What an attack's cost per sample depends on, from the evaluation settings (before the
    data is known: core/contract/evaluation_cost.py fills it with upper bounds)."""

    budgets: dict[str, int]  # budgets audited per norm ('linf', 'l2')
    pgd_steps: int
    target_classes: int
    jsma_iterations: int  # at most, on the reference input
    jsma_classes: int
    cw_binary_steps: int
    cw_iterations: int
    square_queries: int


Cost = Callable[[CostInputs], int]


def per_budget(norm: str) -> Cost:
    """One model pass a budget (FGSM)."""
    return lambda c: c.budgets[norm]


def iterations_per_budget(norm: str) -> Cost:
    """``pgd_steps`` passes a budget (PGD, APGD)."""
    return lambda c: c.budgets[norm] * c.pgd_steps


def targeted_iterations_per_budget(norm: str) -> Cost:
    """``pgd_steps`` passes a budget towards each of ``target_classes`` classes (APGD-T, FAB-T)."""
    return lambda c: c.budgets[norm] * c.pgd_steps * c.target_classes


def jsma(c: CostInputs) -> int:
    """Every class's Jacobian at each of its iterations."""
    return c.jsma_iterations * c.jsma_classes


def carlini_wagner(c: CostInputs) -> int:
    """Its binary search over the trade-off constant, each step its iterations."""
    return c.cw_binary_steps * c.cw_iterations


def queries_per_budget(norm: str) -> Cost:
    """Square's queries at each budget."""
    return lambda c: c.budgets[norm] * c.square_queries


def transfer(c: CostInputs) -> int:
    """One pass of the hardened model a budget of every norm (the source's adversarials are the
    upload's attack, charged there)."""
    return sum(c.budgets.values())


@dataclass(frozen=True, kw_only=True)
class AttackInfo:
    """One attack of the audit, as the contract, the cost bound and the verdict see it."""

    name: str
    title: str
    norm: ThreatNorm
    loss: str  # what it follows: ce, margin, dlr, softmax, logits, cw, transfer
    cost: Cost  # model passes (forward and backward) on one sample, over all its budgets
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
    loss_counterpart: str | None = None
    # The attack whose adversarials on the uploaded model this one applies to the student.
    transfer_from: str | None = None
    # Its part in AutoAttack, if any: the verdict calls a gain real only where the required
    # roles (core.audit.registry.AUTOATTACK_REQUIRED) all ran.
    autoattack_role: AutoAttackRole | None = None
    in_autoattack_standard: bool = False  # one of AutoAttack's standard version's four
    # Run by default; APGD-T and FAB-T attack 9 target classes each (9 times APGD-DLR's cost),
    # so only the autoattack preset asks for them.
    in_default: bool = True
    note: str | None = None  # shown on the models it attacks
    source_note: str | None = None  # shown on the model that supplies a transfer's adversarials


def _pgd_pair(norm: Literal["linf", "l2"], norm_title: str) -> tuple[AttackInfo, AttackInfo]:
    """PGD in ``norm`` on cross-entropy, and its counterpart on the logit margin."""
    margin = f"pgd_{norm}_margin"
    return (
        AttackInfo(
            name=f"pgd_{norm}_ce", title=f"PGD {norm_title}, cross-entropy", norm=norm,
            loss="ce", cost=iterations_per_budget(norm), loss_counterpart=margin,
        ),
        AttackInfo(
            name=margin, title=f"PGD {norm_title}, logit margin", norm=norm, loss="margin",
            cost=iterations_per_budget(norm), sees_through_masking=True,
        ),
    )  # fmt: skip


_TOWARDS_EACH_CLASS = "Towards each of the most likely wrong classes in turn; any misclassification"

# In the order of the report's sections.
ATTACKS: Final = (
    AttackInfo(
        name="fgsm_ce", title="FGSM, cross-entropy", norm="linf", loss="ce",
        cost=per_budget("linf"), paper_attack=True, loss_counterpart="fgsm_margin",
    ),
    AttackInfo(
        name="fgsm_margin", title="FGSM, logit margin", norm="linf", loss="margin",
        cost=per_budget("linf"),
    ),
    *_pgd_pair("linf", "L-inf"),
    *_pgd_pair("l2", "L2"),
    AttackInfo(
        name="jsma_softmax", title="JSMA on softmax (paper)", norm="l0", loss="softmax",
        cost=jsma, paper_attack=True, slow=True, targeted=True, measures_perturbation=True,
    ),
    AttackInfo(
        name="jsma_logits", title="JSMA on logits", norm="l0", loss="logits", cost=jsma,
        sees_through_masking=True, slow=True, targeted=True, measures_perturbation=True,
    ),
    AttackInfo(
        name="cw_l2", title="Carlini-Wagner L2", norm="l2", loss="cw", cost=carlini_wagner,
        sees_through_masking=True, slow=True, minimum_norm=True, measures_perturbation=True,
    ),
    AttackInfo(
        name="apgd_ce", title="APGD, cross-entropy", norm="linf", loss="ce",
        cost=iterations_per_budget("linf"), loss_counterpart="apgd_dlr",
        autoattack_role="apgd_ce", in_autoattack_standard=True,
    ),
    AttackInfo(
        name="apgd_dlr", title="APGD, DLR (scale-invariant)", norm="linf", loss="dlr",
        cost=iterations_per_budget("linf"), sees_through_masking=True,
        autoattack_role="apgd_dlr",
    ),
    AttackInfo(
        name="apgd_t", title="APGD-T, targeted DLR", norm="linf", loss="dlr",
        cost=targeted_iterations_per_budget("linf"), sees_through_masking=True,
        autoattack_role="apgd_dlr", in_autoattack_standard=True, in_default=False,
        note=f"{_TOWARDS_EACH_CLASS} counts, as in AutoAttack.",
    ),
    AttackInfo(
        name="fab_t", title="FAB-T (targeted boundary attack)", norm="linf", loss="margin",
        cost=targeted_iterations_per_budget("linf"), sees_through_masking=True,
        autoattack_role="fab", in_autoattack_standard=True, in_default=False,
        note=f"{_TOWARDS_EACH_CLASS} within the budget counts, as in AutoAttack.",
    ),
    AttackInfo(
        name="square", title="Square (gradient-free)", norm="linf", loss="margin",
        cost=queries_per_budget("linf"), sees_through_masking=True, black_box=True, slow=True,
        autoattack_role="square", in_autoattack_standard=True,
    ),
    AttackInfo(
        name="transfer", title="Transfer from the uploaded model", norm="linf", loss="transfer",
        cost=transfer, sees_through_masking=True, black_box=True,
        transfer_from="pgd_linf_margin",
        note="PGD L-inf with the logit margin on the uploaded model.",
        source_note="The uploaded model is the transfer source (PGD-margin on it).",
    ),
)  # fmt: skip
CATALOGUE: Final[dict[str, AttackInfo]] = {attack.name: attack for attack in ATTACKS}

if TYPE_CHECKING:
    AttackName = str
else:
    AttackName = Literal[tuple(CATALOGUE)]
ATTACK_NAMES: Final = tuple(CATALOGUE)
DEFAULT_ATTACKS: Final = tuple(a.name for a in ATTACKS if a.in_default)
# The attacks AutoAttack's standard version runs (Croce & Hein 2020), in the catalogue's order.
AUTOATTACK_ATTACKS: Final = tuple(a.name for a in ATTACKS if a.in_autoattack_standard)
# The attacks that run at every L2 budget (cw_l2 searches the smallest perturbation instead).
L2_BUDGET_ATTACKS: Final = tuple(a.name for a in ATTACKS if a.norm == "l2" and not a.minimum_norm)
