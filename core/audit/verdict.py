"""The verdict: is the hardened model's robustness real, or are its gradients masked?

Decided on the strongest attack per budget (the lowest robust accuracy over every attack,
including logit-margin, DLR, gradient-free and transfer attacks) and the per-sample worst case
over all of them, hardened ("student") against uploaded, and on the symptoms of gradient masking
listed by Athalye, Carlini & Wagner (ICML 2018): vanishing gradients, loss-specific failure,
black-box beating white-box, and budgets that do not help (collected in
:mod:`core.audit.evidence`). Carlini & Wagner (2016) showed defensive distillation is exactly such
a case. A gain is real only where AutoAttack's components (Croce & Hein 2020) measured it and no
masking sign shows: the same rule for every hardening method.
"""

from __future__ import annotations

import math

from core.audit.evidence import (
    autoattack_missing,
    masking_signs,
    paper_gain,
    pct,
    point_at,
    robust_at,
)
from core.audit.registry import REGISTRY
from core.audit.schema import (
    AttackSummary,
    Evaluation,
    ModelRobustness,
    StrongestAttack,
    Verdict,
    WorstCase,
    deciding_row,
)
from core.contract.certification import Certification
from core.contract.corruptions import CorruptionRobustness
from core.report.formatting import budget_text
from core.report.intervals import accuracy_interval

GAIN_THRESHOLD = 0.05  # robust accuracy gain (5 points) that counts as real at one budget
# A gain must also exceed sampling noise: 1.96 standard errors of the difference of two
# proportions (95%, two-sided). The samples are shared by both models, so the unpaired error is
# an upper bound on the paired one: this errs towards *not* calling a gain real, the safe side.
NOISE_Z = 1.96


def _norm_name(norm: str) -> str:
    return {"linf": "L-inf", "l2": "L2", "l0": "L0"}[norm]


def _by_name(model: ModelRobustness) -> dict[str, AttackSummary]:
    return {a.attack: a for a in model.attacks}


def noise_margin(
    row: StrongestAttack, up: dict[str, AttackSummary], st: dict[str, AttackSummary]
) -> float:
    """1.96 standard errors of :func:`decisive_gain` given the samples behind each side."""
    if row.worst_case_samples and row.uploaded_worst_case is not None:
        n = row.worst_case_samples
        p_up, p_st = row.uploaded_worst_case, row.student_worst_case or 0.0
        return NOISE_Z * math.sqrt(p_up * (1 - p_up) / n + p_st * (1 - p_st) / n)
    at_up = point_at(up[row.uploaded_attack], row.epsilon)
    at_st = point_at(st[row.student_attack], row.epsilon)
    n_up = at_up.samples if at_up else 0
    n_st = at_st.samples if at_st else 0
    if n_up == 0 or n_st == 0:
        return 1.0
    p_up, p_st = row.uploaded_robust_accuracy, row.student_robust_accuracy
    return NOISE_Z * math.sqrt(p_up * (1 - p_up) / n_up + p_st * (1 - p_st) / n_st)


def _worst_at(model: ModelRobustness, norm: str, epsilon: float) -> WorstCase | None:
    return next(
        (w for w in model.worst_case if w.norm == norm and abs(w.epsilon - epsilon) < 1e-12), None
    )


def _strong_attack_run(
    norm: str, epsilon: float, up: dict[str, AttackSummary], st: dict[str, AttackSummary]
) -> bool:
    """Whether an attack immune to softmax saturation ran at this budget on both models."""
    return any(
        a.sees_through_masking
        and a.norm == norm
        and robust_at(a, epsilon) is not None
        and robust_at(up.get(name), epsilon) is not None
        for name, a in st.items()
    )


def _strongest_for(
    model: ModelRobustness, norm: str, epsilon: float
) -> tuple[str, float, tuple[float, float]] | None:
    """The attack leaving the lowest robust accuracy here, that accuracy and its interval."""
    found = [
        (point.robust_accuracy, a.attack, point.samples)
        for a in model.attacks
        if a.norm == norm and (point := point_at(a, epsilon)) is not None
    ]
    if not found:
        return None
    ra, name, samples = min(found)
    return name, ra, accuracy_interval(ra, samples)


def strongest_attacks(evaluation: Evaluation) -> list[StrongestAttack]:
    """Per norm and budget, the attack leaving the lowest robust accuracy on each model."""
    uploaded, student = evaluation.models["uploaded"], evaluation.models["student"]
    by_up, by_st = _by_name(uploaded), _by_name(student)
    rows = []
    for norm, epsilons in (("linf", evaluation.epsilons_linf), ("l2", evaluation.epsilons_l2)):
        for epsilon in epsilons:
            up, st = _strongest_for(uploaded, norm, epsilon), _strongest_for(student, norm, epsilon)
            if up is None or st is None:
                continue
            worst_up, worst_st = (
                _worst_at(uploaded, norm, epsilon),
                _worst_at(student, norm, epsilon),
            )
            both = worst_up is not None and worst_st is not None
            rows.append(
                StrongestAttack(
                    norm=norm,  # type: ignore[arg-type]
                    epsilon=epsilon,
                    uploaded_attack=up[0],
                    uploaded_robust_accuracy=up[1],
                    uploaded_robust_accuracy_interval=up[2],
                    student_attack=st[0],
                    student_robust_accuracy=st[1],
                    student_robust_accuracy_interval=st[2],
                    gain=st[1] - up[1],
                    uploaded_worst_case=worst_up.robust_accuracy if both and worst_up else None,
                    student_worst_case=worst_st.robust_accuracy if both and worst_st else None,
                    worst_case_samples=(
                        min(worst_up.samples, worst_st.samples) if worst_up and worst_st else None
                    ),
                    autoattack_missing=autoattack_missing(norm, epsilon, by_up, by_st),
                )
            )
    return rows


def _minimum_norm_sentences(
    up: dict[str, AttackSummary], st: dict[str, AttackSummary]
) -> list[str]:
    """How often each minimum-norm attack (CW-L2) fools both models, and how far it moves."""

    def size(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.2f}"

    sentences = []
    for name, attack in REGISTRY.items():
        if not attack.minimum_norm or name not in up or name not in st:
            continue
        # Its unbounded run; the other points read that run at each budget.
        u = next(p for p in up[name].points if p.epsilon is None)
        s = next(p for p in st[name].points if p.epsilon is None)
        unit = _norm_name(attack.norm)
        sentences.append(
            f"{st[name].title} fools {pct(s.success_rate)} of the hardened model's correctly "
            f"classified samples (median {unit} {size(s.median_perturbation)}) and "
            f"{pct(u.success_rate)} of the uploaded model's "
            f"(median {unit} {size(u.median_perturbation)})."
        )
    return sentences


def _strongest_sentence(row: StrongestAttack, up_title: str, st_title: str) -> str:
    worst = ""
    if row.uploaded_worst_case is not None and row.student_worst_case is not None:
        worst = (
            f" Per-sample worst case over every attack: {pct(row.uploaded_worst_case)} and "
            f"{pct(row.student_worst_case)}, a change of {100 * row.decisive_gain:+.0f} points."
        )
    return (
        f"Strongest attack at {budget_text(row.norm, row.epsilon)}: uploaded model "
        f"{pct(row.uploaded_robust_accuracy)} robust accuracy ({up_title}), hardened model "
        f"{pct(row.student_robust_accuracy)} ({st_title}), a change of "
        f"{100 * row.gain:+.0f} points." + worst
    )


def _unverified_sentence(row: StrongestAttack) -> str:
    strong = ", ".join(
        name
        for name, attack in REGISTRY.items()
        if attack.sees_through_masking and attack.norm == row.norm
    )
    return (
        f"At {budget_text(row.norm, row.epsilon)} the hardened model keeps "
        f"{100 * row.decisive_gain:.0f} more points of robust accuracy, but only attacks that "
        "follow the softmax or cross-entropy ran there; those are the attacks gradient masking "
        f"defeats, so this is not counted as a gain. Add one of {strong} to the evaluation's "
        "attacks to measure it."
    )


def _noisy_sentence(row: StrongestAttack, margin: float) -> str:
    return (
        f"At {budget_text(row.norm, row.epsilon)} the hardened model keeps "
        f"{100 * row.decisive_gain:.0f} more points of robust accuracy, within the sampling "
        f"noise of the attacked samples (±{100 * margin:.0f} points at 95%): not counted as a "
        "gain. Attack more samples to tell."
    )


def _not_autoattack_sentence(row: StrongestAttack) -> str:
    where = f"At {budget_text(row.norm, row.epsilon)}"
    if row.norm != "linf":
        return (
            f"{where} the hardened model keeps {100 * row.decisive_gain:.0f} more points of "
            "robust accuracy, but AutoAttack's components attack L-inf only in this audit: an "
            "L2 gain is shown, not counted as real."
        )
    return (
        f"{where} the hardened model keeps {100 * row.decisive_gain:.0f} more points of robust "
        f"accuracy, but {' and '.join(row.autoattack_missing)} of AutoAttack did not run there "
        "on both models: not counted as a gain until an AutoAttack-strength evaluation agrees. "
        "Run the evaluation with preset 'autoattack' (or add apgd_ce, apgd_t and square to its "
        "attacks)."
    )


def _decisive_pair(row: StrongestAttack) -> str:
    """Both models' robust accuracy as the verdict weighs it at one budget, in words."""
    both_worst = row.uploaded_worst_case is not None and row.student_worst_case is not None
    uploaded = row.uploaded_worst_case if both_worst else row.uploaded_robust_accuracy
    what = "worst case over every attack" if both_worst else "strongest attack"
    return (
        f"{pct(row.student_decisive)} robust accuracy for the hardened model vs "
        f"{pct(uploaded or 0.0)} for the uploaded model, {what}"
    )


def _masked_headline(method: str | None, deciding: StrongestAttack | None) -> str:
    # Name the method only when the evaluation knows it: any method may mask gradients.
    opening = (
        f"Masked: {method} hides the hardened model's gradients instead of removing adversarial "
        "examples."
        if method
        else "Masked: the hardened model's gradients are hidden, its adversarial examples are "
        "not removed."
    )
    strongest = "."
    if deciding is not None:
        strongest = (
            f" (at {budget_text(deciding.norm, deciding.epsilon)}: {_decisive_pair(deciding)})."
        )
    return opening + " Attacks that see through the masking still fool it" + strongest


def decide(evaluation: Evaluation) -> Verdict:
    """``masked``, ``no measurable gain`` or ``real gain``, with the evidence in sentences.

    ``real gain`` needs, at some budget: a gain of the per-sample worst case (else of the
    strongest attack) of at least GAIN_THRESHOLD and beyond sampling noise, measured by an attack
    that sees through masking and by AutoAttack's components (APGD-CE, APGD-T or APGD-DLR,
    Square) on both models, and no sign of gradient masking anywhere.
    """
    uploaded, student = evaluation.models["uploaded"], evaluation.models["student"]
    up, st = _by_name(uploaded), _by_name(student)
    strongest = strongest_attacks(evaluation)
    # A gain counts only where an attack that sees through masking was run (a gain under the
    # softmax/cross-entropy attacks alone is what masking fakes), where AutoAttack's components
    # agree, and beyond sampling noise.
    candidates = [row for row in strongest if row.decisive_gain >= GAIN_THRESHOLD]
    unverified = [r for r in candidates if not _strong_attack_run(r.norm, r.epsilon, up, st)]
    not_autoattack = [r for r in candidates if r not in unverified and r.autoattack_missing]
    checked = [r for r in candidates if r not in unverified and r not in not_autoattack]
    noisy = [r for r in checked if r.decisive_gain < noise_margin(r, up, st)]
    gains = [r for r in checked if r not in noisy]
    paper = paper_gain(up, st)
    signs = masking_signs(evaluation, up, st, strongest)
    detected = [s for s in signs if s.detected]
    titles = {**{n: a.title for n, a in up.items()}, **{n: a.title for n, a in st.items()}}
    strongest_text = [
        _strongest_sentence(r, titles[r.uploaded_attack], titles[r.student_attack])
        for r in strongest
    ]
    label = (
        "real gain"
        if gains and not detected
        else "masked"
        if gains or detected or paper
        else "no measurable gain"
    )
    deciding = deciding_row(label, strongest, gains)
    if label == "real gain":
        top = deciding
        assert top is not None  # a real gain has a budget
        made_by = f" ({evaluation.method})" if evaluation.method else ""
        headline = (
            f"Real gain: under AutoAttack's attacks and every other attack tried, the hardened "
            f"model{made_by} keeps {100 * top.decisive_gain:.0f} more points of robust accuracy "
            f"at {budget_text(top.norm, top.epsilon)} (strongest: "
            f"{titles[top.student_attack]}), and no sign of gradient masking was found. "
            "Stronger, adaptive attacks may still lower it."
        )
        evidence = strongest_text + paper
    elif label == "masked":
        headline = _masked_headline(evaluation.method, deciding)
        evidence = paper + [s.evidence for s in detected] + strongest_text
        if gains:
            evidence.append(
                "Some budgets show a gain under the strongest attack tried, but the masking signs "
                "above mean the attacks are not reliable on this model, so the gain is not trusted."
            )
    else:
        at = (
            ""
            if deciding is None
            else f" (at {budget_text(deciding.norm, deciding.epsilon)}: {_decisive_pair(deciding)})"
        )
        headline = (
            "No measurable gain: against the strongest attack at every budget, the hardened "
            f"model's robust accuracy is below the uploaded model's, less than "
            f"{100 * GAIN_THRESHOLD:.0f} points above it, or above it only within sampling noise, "
            "under attacks that masking defeats, or without AutoAttack's attacks to confirm "
            f"it{at}."
        )
        evidence = strongest_text
    evidence += [_not_autoattack_sentence(r) for r in not_autoattack]
    evidence += [_unverified_sentence(r) for r in unverified]
    evidence += [_noisy_sentence(r, noise_margin(r, up, st)) for r in noisy]
    evidence += _minimum_norm_sentences(up, st)
    return Verdict(
        label=label,  # type: ignore[arg-type]
        headline=headline,
        deciding=deciding,
        evidence=evidence,
        gains=gains,
        strongest=strongest,
        masking_signs=signs,
        paper_attacks_gain=bool(paper),
    )


def with_untrained_upload(verdict: Verdict, accuracy: float, num_classes: int) -> Verdict:
    """The verdict on an upload at or near chance accuracy: its headline says first that every
    number is noise (the label is kept: the gate ``untrained`` is how a pipeline stops on it)."""
    warning = (
        f"The upload is at or near chance accuracy ({accuracy:.1%} on the test split, "
        f"{num_classes} classes: chance is {1 / num_classes:.1%}): it is untrained or not a "
        "model of this dataset (classes, input range, normalization), so no number below means "
        "anything."
    )
    return verdict.model_copy(update={"headline": f"{warning} {verdict.headline}"})


def with_corruptions(verdict: Verdict, corruptions: CorruptionRobustness) -> Verdict:
    """The verdict with what hardening cost under common corruptions: where the hardened model's
    accuracy fell by more than the margin *and* more than 1.96 paired standard errors
    (core.audit.corruptions), the headline says so ("weaker under fog/contrast") and the evidence
    gives the numbers; otherwise one sentence of evidence says it held up."""
    weaker = [row for row in corruptions.per_corruption if row.weaker]
    up = corruptions.mean_corruption_accuracy["uploaded"]
    st = corruptions.mean_corruption_accuracy["student"]
    summary = (
        f"Under common corruptions ({corruptions.family}, {corruptions.samples} images, five "
        f"severities) mean accuracy {up:.1%} (upload) -> {st:.1%} (hardened): "
        f"{-corruptions.drop_points:+.1f} points ± {corruptions.noise_points:.1f}."
    )
    if not weaker:
        return verdict.model_copy(update={"evidence": [*verdict.evidence, summary]})
    names = "/".join(row.corruption.replace("_", " ") for row in weaker)
    details = [
        f"Under {row.corruption.replace('_', ' ')} the hardened model lost "
        f"{row.drop_points:.1f} points (± {row.noise_points:.1f}) against the upload "
        f"({row.uploaded:.1%} -> {row.student:.1%}), beyond the "
        f"{corruptions.margin_points:g}-point margin."
        for row in weaker
    ]
    headline = f"{verdict.headline.rstrip()} Weaker under {names} than the upload."
    return verdict.model_copy(
        update={"headline": headline, "evidence": [*verdict.evidence, summary, *details]}
    )


def with_certificate(verdict: Verdict, certification: Certification) -> Verdict:
    """The verdict with randomized smoothing's certificates (core.audit.certify): where the
    hardened model's *smoothed* classifier is certified at an L2 radius on at least
    GAIN_THRESHOLD more of the images than the upload's, beyond sampling noise, L2 robustness is
    a ``real gain`` on a proof rather than on attacks that failed. The headline says it is the
    smoothed classifier (PREDICT with the certificate's sigma, n and alpha) that is certified,
    never the base network, and keeps the attacks' verdict on the base network beside it."""
    up, st = certification.models["uploaded"], certification.models["student"]
    images = certification.samples
    gains = []
    for mine, theirs in zip(st.certified, up.certified, strict=True):
        gain = mine.certified_accuracy - theirs.certified_accuracy
        p, q = mine.certified_accuracy, theirs.certified_accuracy
        # The same two-proportion noise as the attacks' gains (unpaired: the safe side).
        noise = NOISE_Z * math.sqrt((p * (1 - p) + q * (1 - q)) / max(images, 1))
        if gain >= GAIN_THRESHOLD and gain > noise:
            gains.append((gain, mine.radius, p, q))
    scope = (
        f"smoothed classifier (Gaussian noise σ={certification.sigma:g}, n={certification.n}, "
        f"α={certification.alpha:g}, {images} images)"
    )
    if not gains:
        summary = (
            f"Certificates of the {scope}: no L2 radius where the hardened model's is certified "
            f"on {100 * GAIN_THRESHOLD:.0f} or more points more of the images than the upload's "
            "beyond sampling noise."
        )
        return verdict.model_copy(update={"evidence": [*verdict.evidence, summary]})
    gain, radius, student, uploaded = max(gains, key=lambda row: row[1])
    certified = (
        f"Certified L2 gain: the hardened model's {scope} is proven to keep its prediction "
        f"within L2 radius {radius:g} on {student:.0%} of the images (upload's: {uploaded:.0%}), "
        "with probability at least 1-α over the noise. The certificate holds for the smoothed "
        "classifier only, not for the base network in model.onnx run alone"
    )
    if verdict.label == "real gain":
        headline = f"{verdict.headline.rstrip()} {certified}."
    else:
        headline = f"{certified}; the base network alone, under attack: {verdict.headline.rstrip()}"
    return verdict.model_copy(
        update={
            "label": "real gain",
            "headline": headline,
            "evidence": [*verdict.evidence, certified + "."],
        }
    )
