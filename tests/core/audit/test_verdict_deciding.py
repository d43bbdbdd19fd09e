"""The verdict's headline quotes the budget that decides it (verdict.deciding), never the budget
with the largest apparent gain when that gain is not what decided."""

from __future__ import annotations

from core.audit.registry import REGISTRY
from core.audit.schema import (
    AttackPoint,
    AttackSummary,
    Evaluation,
    GradientAmplitude,
    ModelRobustness,
)
from core.audit.verdict import decide

SAMPLES = 100


def _attack(name: str, robust: dict[float, float]) -> AttackSummary:
    info = REGISTRY[name]
    return AttackSummary(
        attack=name,
        title=info.title,
        norm=info.norm,
        loss=info.loss,
        paper=info.paper_attack,
        sees_through_masking=info.sees_through_masking,
        points=[
            AttackPoint(
                epsilon=epsilon,
                samples=SAMPLES,
                correct_before=SAMPLES,
                success_rate=1 - accuracy,
                robust_accuracy=accuracy,
                seconds=1.0,
            )
            for epsilon, accuracy in robust.items()
        ],
    )


def _model(softmax_gradient: float, attacks: dict[str, dict[float, float]]) -> ModelRobustness:
    gradient = GradientAmplitude(
        softmax_l1_mean=softmax_gradient,
        softmax_l1_median=softmax_gradient,
        margin_l1_mean=1.0,
        margin_l1_median=1.0,
    )
    return ModelRobustness(
        clean_accuracy=0.98,
        mean_abs_logit=5.0,
        gradient=gradient,
        attacks=[_attack(name, robust) for name, robust in attacks.items()],
        seconds=1.0,
    )


def _evaluation(
    uploaded: ModelRobustness, student: ModelRobustness, linf: list[float], l2: list[float]
) -> Evaluation:
    return Evaluation(
        samples=SAMPLES,
        samples_slow=SAMPLES,
        seed=0,
        device="cpu",
        input_range=(0.0, 1.0),
        epsilons_linf=linf,
        epsilons_l2=l2,
        models={"uploaded": uploaded, "student": student},
        seconds=1.0,
    )


def test_a_masked_headline_quotes_the_budget_where_the_hardened_model_is_weakest() -> None:
    # The case: at L2 ε=3 the hardened model keeps 8% against the upload's 3% (the
    # largest apparent gain), while at L-inf 0.3 both are at 0%; the softmax gradient vanished.
    uploaded = _model(
        0.1, {"pgd_linf_margin": {0.1: 0.50, 0.3: 0.0}, "pgd_l2_margin": {1.0: 0.3, 3.0: 0.03}}
    )
    student = _model(
        1e-12, {"pgd_linf_margin": {0.1: 0.45, 0.3: 0.0}, "pgd_l2_margin": {1.0: 0.3, 3.0: 0.08}}
    )
    verdict = decide(_evaluation(uploaded, student, [0.1, 0.3], [1.0, 3.0]))

    assert verdict.label == "masked"
    assert verdict.deciding is not None
    assert (verdict.deciding.norm, verdict.deciding.epsilon) == ("linf", 0.3)
    assert "L-inf ε=0.3" in verdict.headline and "ε=3" not in verdict.headline
    assert "0% robust accuracy for the hardened model vs 0%" in verdict.headline
    # The budget with the largest apparent gain is still in the evidence, not the headline.
    assert any("L2 ε=3" in sentence for sentence in verdict.evidence)


def test_a_real_gain_is_quoted_at_its_largest_counted_gain_in_255ths() -> None:
    budgets = [2 / 255, 8 / 255]
    autoattack = ("apgd_ce", "apgd_t", "square", "pgd_linf_margin")
    uploaded = _model(0.1, {name: {2 / 255: 0.40, 8 / 255: 0.05} for name in autoattack})
    student = _model(0.1, {name: {2 / 255: 0.80, 8 / 255: 0.25} for name in autoattack})
    verdict = decide(_evaluation(uploaded, student, budgets, []))

    assert verdict.label == "real gain", verdict.evidence
    assert verdict.deciding is not None and verdict.deciding.epsilon == 2 / 255
    assert "40 more points" in verdict.headline and "L-inf ε=2/255" in verdict.headline
    assert "0.00784" not in verdict.headline


def test_no_measurable_gain_names_its_weakest_budget_and_every_row_has_intervals() -> None:
    uploaded = _model(0.1, {"pgd_linf_margin": {0.1: 0.50, 0.3: 0.10}})
    student = _model(0.1, {"pgd_linf_margin": {0.1: 0.49, 0.3: 0.02}})
    verdict = decide(_evaluation(uploaded, student, [0.1, 0.3], []))

    assert verdict.label == "no measurable gain"
    assert verdict.deciding is not None and verdict.deciding.epsilon == 0.3
    assert "L-inf ε=0.3: 2% robust accuracy for the hardened model vs 10%" in verdict.headline
    for row in verdict.strongest:
        for accuracy, interval in (
            (row.uploaded_robust_accuracy, row.uploaded_robust_accuracy_interval),
            (row.student_robust_accuracy, row.student_robust_accuracy_interval),
        ):
            assert interval is not None and interval[0] <= accuracy <= interval[1]
            assert interval[1] - interval[0] > 0  # never a point, even at 0% or 100%
