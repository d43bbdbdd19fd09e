"""The verdict: is the student's robustness real, or are its gradients masked?

Decided on the strongest attack per budget (the lowest robust accuracy over every attack,
including logit-margin, DLR, gradient-free and transfer attacks), student against uploaded, and
on the symptoms of gradient masking listed by Athalye, Carlini & Wagner (ICML 2018):
vanishing gradients, loss-specific failure, black-box beating white-box, and budgets that do not
help. Carlini & Wagner (2016) showed defensive distillation is exactly such a case.
"""

from __future__ import annotations

from collections.abc import Iterable

from core.robustness_schema import (
    AttackSummary,
    Evaluation,
    MaskingSign,
    ModelRobustness,
    StrongestAttack,
    Verdict,
)

GAIN_THRESHOLD = 0.05  # robust accuracy gain (5 points) that counts as real at one budget
PAPER_GAIN = 0.20  # drop in success rate of the paper's attacks that counts as "big"
GRADIENT_RATIO = 0.01  # student's median softmax gradient below 1% of the uploaded model's
LOSS_GAP = 0.20  # CE attack leaves 20 points more robust accuracy than margin/DLR at one budget
BLACK_BOX_GAP = 0.10  # gradient-free/transfer beats white-box CE by 10 points
FLAT = 0.02  # robust accuracy that "does not fall" moves by less than 2 points
# Paired attacks: (follows the saturating loss, sees through it).
LOSS_PAIRS = (
    ("fgsm_ce", "fgsm_margin"),
    ("pgd_linf_ce", "pgd_linf_margin"),
    ("pgd_l2_ce", "pgd_l2_margin"),
    ("apgd_ce", "apgd_dlr"),
)
WHITE_BOX_CE = ("fgsm_ce", "pgd_linf_ce", "apgd_ce")
BLACK_BOX = ("square", "transfer")


def _pct(value: float) -> str:
    return f"{100 * value:.0f}%"


def _norm_name(norm: str) -> str:
    return {"linf": "L-inf", "l2": "L2", "l0": "L0"}[norm]


def _by_name(model: ModelRobustness) -> dict[str, AttackSummary]:
    return {a.attack: a for a in model.attacks}


def _robust_at(summary: AttackSummary | None, epsilon: float) -> float | None:
    if summary is None:
        return None
    for point in summary.points:
        if point.epsilon is not None and abs(point.epsilon - epsilon) < 1e-12:
            return point.robust_accuracy
    return None


def _strongest_for(model: ModelRobustness, norm: str, epsilon: float) -> tuple[str, float] | None:
    found = [
        (ra, a.attack)
        for a in model.attacks
        if a.norm == norm and (ra := _robust_at(a, epsilon)) is not None
    ]
    if not found:
        return None
    ra, name = min(found)
    return name, ra


def strongest_attacks(evaluation: Evaluation) -> list[StrongestAttack]:
    """Per norm and budget, the attack leaving the lowest robust accuracy on each model."""
    uploaded, student = evaluation.models["uploaded"], evaluation.models["student"]
    rows = []
    for norm, epsilons in (("linf", evaluation.epsilons_linf), ("l2", evaluation.epsilons_l2)):
        for epsilon in epsilons:
            up, st = _strongest_for(uploaded, norm, epsilon), _strongest_for(student, norm, epsilon)
            if up is None or st is None:
                continue
            rows.append(
                StrongestAttack(
                    norm=norm,  # type: ignore[arg-type]
                    epsilon=epsilon,
                    uploaded_attack=up[0],
                    uploaded_robust_accuracy=up[1],
                    student_attack=st[0],
                    student_robust_accuracy=st[1],
                    gain=st[1] - up[1],
                )
            )
    return rows


def _success(summary: AttackSummary | None) -> Iterable[tuple[float | None, float]]:
    return [] if summary is None else [(p.epsilon, p.success_rate) for p in summary.points]


def _paper_gain(up: dict[str, AttackSummary], st: dict[str, AttackSummary]) -> list[str]:
    sentences = []
    for name in ("jsma_softmax", "fgsm_ce"):
        pairs = list(zip(_success(up.get(name)), _success(st.get(name)), strict=False))
        big = [(u, s) for u, s in pairs if u[1] - s[1] >= PAPER_GAIN]
        if big:
            (eps, u_rate), (_, s_rate) = max(big, key=lambda pair: pair[0][1] - pair[1][1])
            where = f" at ε={eps:g}" if name == "fgsm_ce" else ""
            sentences.append(
                f"The paper's attack {up[name].title}{where} fools {_pct(u_rate)} of the uploaded "
                f"model's correctly classified samples but only {_pct(s_rate)} of the student's."
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
            f"The student's median L1 norm of the softmax input-gradient is "
            f"{'exactly 0' if st.softmax_l1_median == 0 else f'{st.softmax_l1_median:.3g}'} "
            f"(uploaded model: {up.softmax_l1_median:.3g}, ratio {ratio:.2g}); its logit-margin "
            "gradient is "
            f"{st.margin_l1_median:.3g} vs {up.margin_l1_median:.3g}."
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
    for weak, strong in LOSS_PAIRS:
        if weak not in st or strong not in st:
            continue
        for point in st[weak].points:
            eps = point.epsilon
            if eps is None:
                continue
            strong_ra = _robust_at(st[strong], eps)
            if strong_ra is None:
                continue
            gap = point.robust_accuracy - strong_ra
            up_weak, up_strong = _robust_at(up.get(weak), eps), _robust_at(up.get(strong), eps)
            up_gap = up_weak - up_strong if up_weak is not None and up_strong is not None else 0.0
            if gap >= LOSS_GAP and gap > up_gap + 0.10 and gap > worst[0]:
                worst = (gap, (
                    f"At ε={eps:g}, {st[weak].title} leaves the student "
                    f"{_pct(point.robust_accuracy)} robust accuracy but {st[strong].title} only "
                    f"{_pct(strong_ra)} (on the uploaded model the gap is "
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
    for eps in epsilons:
        white = [(ra, n) for n in WHITE_BOX_CE if (ra := _robust_at(st.get(n), eps)) is not None]
        black = [(ra, n) for n in BLACK_BOX if (ra := _robust_at(st.get(n), eps)) is not None]
        if not white or not black:
            continue
        (w_ra, w_name), (b_ra, b_name) = min(white), min(black)
        if w_ra - b_ra >= BLACK_BOX_GAP and w_ra - b_ra > worst[0]:
            worst = (w_ra - b_ra, (
                f"At ε={eps:g}, {st[b_name].title} (no gradient of the student) leaves it "
                f"{_pct(b_ra)} robust accuracy, below the {_pct(w_ra)} of the best white-box "
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
    for summary in student.attacks:
        points = sorted(
            (p for p in summary.points if p.epsilon is not None and summary.norm != "l0"),
            key=lambda p: p.epsilon or 0.0,
        )
        if len(points) < 2 or summary.attack in ("cw_l2",):
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
                    f"Under {summary.title}, the student's robust accuracy goes from "
                    f"{_pct(first.robust_accuracy)} at ε={first.epsilon:g} to "
                    f"{_pct(last.robust_accuracy)} at ε={last.epsilon:g}, while the strongest "
                    f"attack at ε={last.epsilon:g} leaves only {_pct(best)}: larger budgets do "
                    "not help an attack that is blind."
                ),
            )
    return MaskingSign(
        sign="robust accuracy does not fall as ε grows",
        detected=False,
        evidence="Every attack gets stronger as its budget grows.",
    )


def _cw_sentence(up: dict[str, AttackSummary], st: dict[str, AttackSummary]) -> str | None:
    if "cw_l2" not in up or "cw_l2" not in st:
        return None
    u = next(p for p in up["cw_l2"].points if p.epsilon is None)
    s = next(p for p in st["cw_l2"].points if p.epsilon is None)

    def size(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.2f}"

    return (
        f"Carlini-Wagner L2 fools {_pct(s.success_rate)} of the student's correctly classified "
        f"samples (median L2 {size(s.median_perturbation)}) and {_pct(u.success_rate)} of the "
        f"uploaded model's (median L2 {size(u.median_perturbation)})."
    )


def _strongest_sentence(row: StrongestAttack, up_title: str, st_title: str) -> str:
    return (
        f"Strongest attack at {_norm_name(row.norm)} ε={row.epsilon:g}: uploaded model "
        f"{_pct(row.uploaded_robust_accuracy)} robust accuracy ({up_title}), student "
        f"{_pct(row.student_robust_accuracy)} ({st_title}), a change of "
        f"{100 * row.gain:+.0f} points."
    )


def decide(evaluation: Evaluation) -> Verdict:
    """``masked``, ``no measurable gain`` or ``real gain``, with the evidence in sentences."""
    uploaded, student = evaluation.models["uploaded"], evaluation.models["student"]
    up, st = _by_name(uploaded), _by_name(student)
    strongest = strongest_attacks(evaluation)
    gains = [row for row in strongest if row.gain >= GAIN_THRESHOLD]
    paper = _paper_gain(up, st)
    signs = [
        _vanishing_gradients(evaluation),
        _loss_gap(evaluation, up, st),
        _black_box_wins(st, evaluation.epsilons_linf),
        _flat_in_epsilon(student, strongest),
    ]
    detected = [s for s in signs if s.detected]
    titles = {**{n: a.title for n, a in up.items()}, **{n: a.title for n, a in st.items()}}
    strongest_text = [
        _strongest_sentence(r, titles[r.uploaded_attack], titles[r.student_attack])
        for r in strongest
    ]
    cw = _cw_sentence(up, st)
    best_gain = max(strongest, key=lambda r: r.gain, default=None)
    if gains and not detected:
        top = max(gains, key=lambda r: r.gain)
        label = "real gain"
        headline = (
            f"Real gain: against the strongest attack tried, the student keeps "
            f"{100 * top.gain:.0f} more points of robust accuracy at {_norm_name(top.norm)} "
            f"ε={top.epsilon:g} ({titles[top.student_attack]}), and no sign of gradient masking "
            "was found. Stronger, adaptive attacks may still lower it."
        )
        evidence = strongest_text + paper
    elif gains or detected or paper:
        label = "masked"
        headline = (
            "Masked: distillation hides the student's gradients instead of removing adversarial "
            "examples. Attacks that see through the masking still fool it"
            + (
                f" (strongest attack at {_norm_name(best_gain.norm)} ε={best_gain.epsilon:g}: "
                f"{_pct(best_gain.student_robust_accuracy)} robust accuracy for the student vs "
                f"{_pct(best_gain.uploaded_robust_accuracy)} for the uploaded model)."
                if best_gain is not None
                else "."
            )
        )
        evidence = paper + [s.evidence for s in detected] + strongest_text
        if gains:
            evidence.append(
                "Some budgets show a gain under the strongest attack tried, but the masking signs "
                "above mean the attacks are not reliable on this model, so the gain is not trusted."
            )
    else:
        label = "no measurable gain"
        headline = (
            "No measurable gain: against the strongest attack at every budget, the student's "
            f"robust accuracy is within {100 * GAIN_THRESHOLD:.0f} points of the uploaded model's "
            "or below it."
        )
        evidence = strongest_text
    if cw:
        evidence.append(cw)
    return Verdict(
        label=label,  # type: ignore[arg-type]
        headline=headline,
        evidence=evidence,
        gains=gains,
        strongest=strongest,
        masking_signs=signs,
        paper_attacks_gain=bool(paper),
    )
