"""The evidence the verdict weighs; :mod:`core.audit.verdict` decides on it.

The symptoms of gradient masking listed by Athalye, Carlini & Wagner (ICML 2018): vanishing
gradients, loss-specific failure, black-box beating white-box, and budgets that do not help. Each
rule returns a :class:`MaskingSign` with its evidence in a sentence, detected or not. Besides them,
whether the paper's own attacks (Papernot et al. 2016) fool the student far less often: a gain
that Carlini & Wagner (2016) showed to be masking in defensive distillation.
"""

from __future__ import annotations

from collections.abc import Iterable

from core.audit.registry import AUTOATTACK_REQUIRED, REGISTRY, AutoAttackRole
from core.audit.schema import (
    AttackPoint,
    AttackSummary,
    Evaluation,
    MaskingSign,
    ModelRobustness,
    StrongestAttack,
)
from core.report.formatting import epsilon_text, number_text

PAPER_GAIN = 0.20  # drop in success rate of the paper's attacks that counts as "big"
GRADIENT_RATIO = 0.01  # student's median softmax gradient below 1% of the uploaded model's
LOSS_GAP = 0.20  # CE attack leaves 20 points more robust accuracy than margin/DLR at one budget
BLACK_BOX_GAP = 0.10  # gradient-free/transfer beats white-box CE by 10 points
FLAT = 0.02  # robust accuracy that "does not fall" moves by less than 2 points


def pct(value: float) -> str:
    """A fraction as a whole percentage: 0.456 -> '46%'."""
    return f"{100 * value:.0f}%"


def point_at(summary: AttackSummary | None, epsilon: float) -> AttackPoint | None:
    """The run of ``summary`` at budget ``epsilon``; None where it was not run there."""
    if summary is None:
        return None
    for point in summary.points:
        if point.epsilon is not None and abs(point.epsilon - epsilon) < 1e-12:
            return point
    return None


def robust_at(summary: AttackSummary | None, epsilon: float) -> float | None:
    """Robust accuracy of ``summary`` at budget ``epsilon``; None where it was not run there."""
    point = point_at(summary, epsilon)
    return None if point is None else point.robust_accuracy


_ROLE_TITLES: dict[AutoAttackRole, str] = {
    "apgd_ce": "APGD-CE",
    "apgd_dlr": "APGD-T (or APGD-DLR)",
    "fab": "FAB-T",
    "square": "Square",
}


def autoattack_missing(
    norm: str, epsilon: float, up: dict[str, AttackSummary], st: dict[str, AttackSummary]
) -> list[str]:
    """The AutoAttack components (Croce & Hein 2020) that did not run at this budget on both
    models: APGD-CE, APGD on a DLR loss (APGD-T or APGD-DLR) and Square. Empty: a gain here was
    measured with AutoAttack's strength. They are all L-inf attacks, so an L2 budget lacks all."""
    ran = {
        role
        for name, attack in REGISTRY.items()
        if (role := attack.autoattack_role) is not None
        and attack.norm == norm
        and robust_at(up.get(name), epsilon) is not None
        and robust_at(st.get(name), epsilon) is not None
    }
    return [_ROLE_TITLES[role] for role in AUTOATTACK_REQUIRED if role not in ran]


def _success(summary: AttackSummary | None) -> Iterable[tuple[float | None, float]]:
    return [] if summary is None else [(p.epsilon, p.success_rate) for p in summary.points]


def paper_gain(up: dict[str, AttackSummary], st: dict[str, AttackSummary]) -> list[str]:
    """Sentences for the paper's attacks (JSMA on softmax, FGSM-CE) that fool the student far
    less often than the uploaded model; empty when none does."""
    sentences = []
    # The paper's main evaluation is JSMA (L0): its sentence comes first.
    paper_attacks = sorted(
        (attack for attack in REGISTRY.values() if attack.paper_attack),
        key=lambda attack: attack.norm != "l0",
    )
    for attack in paper_attacks:
        name = attack.name
        pairs = list(zip(_success(up.get(name)), _success(st.get(name)), strict=False))
        big = [(u, s) for u, s in pairs if u[1] - s[1] >= PAPER_GAIN]
        if big:
            (eps, u_rate), (_, s_rate) = max(big, key=lambda pair: pair[0][1] - pair[1][1])
            # An L0 budget is a fraction of features, not an ε.
            where = f" at ε={epsilon_text(eps)}" if attack.norm != "l0" else ""
            sentences.append(
                f"The distillation paper's attack {up[name].title}{where} fools {pct(u_rate)} of "
                "the uploaded model's correctly classified samples but only "
                f"{pct(s_rate)} of the hardened model's."
            )
    return sentences


def _vanishing_gradients(evaluation: Evaluation) -> MaskingSign:
    up = evaluation.models["uploaded"].gradient
    st = evaluation.models["student"].gradient
    ratio = st.softmax_l1_median / up.softmax_l1_median if up.softmax_l1_median > 0 else 1.0
    detected = ratio < GRADIENT_RATIO
    return MaskingSign(
        sign="vanishing softmax gradients",
        detected=detected,
        evidence=(
            f"The hardened model's median L1 norm of the softmax input-gradient is "
            f"{'exactly 0' if st.softmax_l1_median == 0 else number_text(st.softmax_l1_median)} "
            f"(uploaded model: {number_text(up.softmax_l1_median)}, ratio "
            f"{number_text(ratio, 2)}); its logit-margin gradient is "
            f"{number_text(st.margin_l1_median)} vs {number_text(up.margin_l1_median)}."
            + (
                " The softmax is saturated: attacks that follow it see almost nothing."
                if detected
                else ""
            )
        ),
    )


def _loss_gap(
    evaluation: Evaluation, up: dict[str, AttackSummary], st: dict[str, AttackSummary]
) -> MaskingSign:
    worst: tuple[float, str] = (0.0, "")
    # Each attack following the saturating loss against its counterpart that sees through it.
    for weak, attack in REGISTRY.items():
        strong = attack.loss_counterpart
        if strong is None or weak not in st or strong not in st:
            continue
        for point in st[weak].points:
            eps = point.epsilon
            if eps is None:
                continue
            strong_ra = robust_at(st[strong], eps)
            if strong_ra is None:
                continue
            gap = point.robust_accuracy - strong_ra
            up_weak, up_strong = robust_at(up.get(weak), eps), robust_at(up.get(strong), eps)
            up_gap = up_weak - up_strong if up_weak is not None and up_strong is not None else 0.0
            if gap >= LOSS_GAP and gap > up_gap + 0.10 and gap > worst[0]:
                worst = (gap, (
                    f"At ε={epsilon_text(eps)}, {st[weak].title} leaves the hardened model "
                    f"{pct(point.robust_accuracy)} robust accuracy but {st[strong].title} only "
                    f"{pct(strong_ra)} (on the uploaded model the gap is "
                    f"{100 * up_gap:.0f} points): "
                    "the cross-entropy loss is saturated, not the model resistant."
                ))  # fmt: skip
    return MaskingSign(
        sign="cross-entropy attacks far weaker than margin/DLR",
        detected=bool(worst[1]),
        evidence=worst[1] or "Cross-entropy and margin/DLR attacks agree within 20 points.",
    )


def _black_box_wins(st: dict[str, AttackSummary], epsilons: list[float]) -> MaskingSign:
    worst: tuple[float, str] = (0.0, "")
    linf = [attack for attack in REGISTRY.values() if attack.norm == "linf"]
    white_box_ce = [a.name for a in linf if a.loss == "ce" and not a.black_box]
    black_box = [a.name for a in linf if a.black_box]
    for eps in epsilons:
        white = [(ra, n) for n in white_box_ce if (ra := robust_at(st.get(n), eps)) is not None]
        black = [(ra, n) for n in black_box if (ra := robust_at(st.get(n), eps)) is not None]
        if not white or not black:
            continue
        (w_ra, w_name), (b_ra, b_name) = min(white), min(black)
        if w_ra - b_ra >= BLACK_BOX_GAP and w_ra - b_ra > worst[0]:
            worst = (w_ra - b_ra, (
                f"At ε={epsilon_text(eps)}, {st[b_name].title} (no gradient of the hardened "
                "model) leaves it "
                f"{pct(b_ra)} robust accuracy, below the {pct(w_ra)} of the best white-box "
                f"cross-entropy attack ({st[w_name].title})."
            ))  # fmt: skip
    return MaskingSign(
        sign="gradient-free or transfer attack beats white-box",
        detected=bool(worst[1]),
        evidence=worst[1] or "No gradient-free or transfer attack beats the white-box ones.",
    )


def _flat_in_epsilon(student: ModelRobustness, strongest: list[StrongestAttack]) -> MaskingSign:
    strongest_at: dict[tuple[str, float], float] = {
        (s.norm, s.epsilon): s.student_robust_accuracy for s in strongest
    }
    minimum_norm = {name for name, attack in REGISTRY.items() if attack.minimum_norm}
    for summary in student.attacks:
        points = sorted(
            (p for p in summary.points if p.epsilon is not None and summary.norm != "l0"),
            key=lambda p: p.epsilon or 0.0,
        )
        # A minimum-norm attack's points are one run read at each budget, not runs per budget.
        if len(points) < 2 or summary.attack in minimum_norm:
            continue
        first, last = points[0], points[-1]
        rises = any(
            b.robust_accuracy > a.robust_accuracy + 0.05
            for a, b in zip(points, points[1:], strict=False)
        )
        flat = first.robust_accuracy - last.robust_accuracy < FLAT
        best = strongest_at.get((summary.norm, last.epsilon or 0.0))
        if (flat or rises) and best is not None and last.robust_accuracy - best >= BLACK_BOX_GAP:
            return MaskingSign(
                sign="robust accuracy does not fall as ε grows",
                detected=True,
                evidence=(
                    f"Under {summary.title}, the hardened model's robust accuracy goes from "
                    f"{pct(first.robust_accuracy)} at ε={epsilon_text(first.epsilon)} to "
                    f"{pct(last.robust_accuracy)} at ε={epsilon_text(last.epsilon)}, while the "
                    f"strongest attack at ε={epsilon_text(last.epsilon)} leaves only {pct(best)}: "
                    "larger budgets do not help an attack that is blind."
                ),
            )
    return MaskingSign(
        sign="robust accuracy does not fall as ε grows",
        detected=False,
        evidence="Every attack gets stronger as its budget grows.",
    )


def masking_signs(
    evaluation: Evaluation,
    up: dict[str, AttackSummary],
    st: dict[str, AttackSummary],
    strongest: list[StrongestAttack],
) -> list[MaskingSign]:
    """Every masking symptom checked on the student (``up``/``st``: attack summaries by name)."""
    return [
        _vanishing_gradients(evaluation),
        _loss_gap(evaluation, up, st),
        _black_box_wins(st, evaluation.epsilons_linf),
        _flat_in_epsilon(evaluation.models["student"], strongest),
    ]
