"""The evaluation section of the contract (core/contract/evaluation.py), tested directly: the
autoattack preset's fixed parts, budgets and their defaults, sample counts by device."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from core.contract.evaluation import (
    AUTO_SAMPLES,
    AUTOATTACK_ATTACKS,
    AUTOATTACK_MINIMUMS,
    L2_BUDGET_ATTACKS,
    EvaluationSpec,
)
from core.contract.threat_models import PRESET_BUDGETS


def test_the_autoattack_preset_fills_in_its_attacks_and_minimums() -> None:
    spec = EvaluationSpec(preset="autoattack")
    assert list(AUTOATTACK_ATTACKS) == spec.attacks
    for name, minimum in AUTOATTACK_MINIMUMS.items():
        assert getattr(spec, name) == minimum
    assert spec.sample_counts("cpu")[0] == spec.sample_counts("cpu")[1]  # the same samples


@pytest.mark.parametrize(
    ("given", "refusal"),
    [
        ({"attacks": ["fgsm_ce"]}, "attacks lacks"),
        ({"pgd_steps": 10}, "pgd_steps >= 100"),
        ({"samples": 200, "samples_slow": 50}, "same samples"),
    ],
)
def test_the_autoattack_preset_refuses_what_would_weaken_it(given: dict, refusal: str) -> None:
    with pytest.raises(ValidationError, match=refusal):
        EvaluationSpec.model_validate({"preset": "autoattack", **given})


def test_budgets_are_positive_deduplicated_and_sorted() -> None:
    assert EvaluationSpec(epsilons_linf=[0.3, 0.1, 0.3]).epsilons_linf == [0.1, 0.3]
    for bad in ([0.0], [-0.1], [1001.0]):
        with pytest.raises(ValidationError, match="epsilon must be > 0"):
            EvaluationSpec(epsilons_linf=bad)


def test_l2_attacks_need_l2_budgets() -> None:
    [l2_attack, *_] = L2_BUDGET_ATTACKS
    with pytest.raises(ValidationError, match="epsilons_l2 is empty"):
        EvaluationSpec(attacks=[l2_attack], epsilons_l2=[])
    assert EvaluationSpec(attacks=["fgsm_ce"], epsilons_l2=[]).epsilons_l2 == []


def test_unset_budgets_are_the_threat_models_scaled_to_the_input_range() -> None:
    spec = EvaluationSpec().for_input_shape((3, 32, 32))
    assert spec.threat_model == "cifar"
    linf, l2 = PRESET_BUDGETS["cifar"]
    assert spec.budgets("linf", (0.0, 255.0)) == pytest.approx([255 * e for e in linf])
    assert spec.budgets("l2", (-1.0, 1.0)) == pytest.approx([2 * e for e in l2])
    resolved = EvaluationSpec().resolved((1, 28, 28), (0.0, 1.0), "cpu")
    assert resolved.threat_model == "mnist"
    assert resolved.epsilons_linf == pytest.approx(list(PRESET_BUDGETS["mnist"][0]))
    # A threat model given is kept whatever the shape.
    assert EvaluationSpec(threat_model="imagenet").for_input_shape((1, 28, 28)).threat_model == (
        "imagenet"
    )


@pytest.mark.parametrize("device", ["cpu", "cuda", "mps"])
def test_auto_sample_counts_follow_the_device(device: str) -> None:
    expected = AUTO_SAMPLES.get(device, AUTO_SAMPLES["cpu"])
    assert EvaluationSpec().sample_counts(device) == expected
    assert EvaluationSpec(samples=7, samples_slow=3).sample_counts(device) == (7, 3)
    fixed = EvaluationSpec().resolved((1, 28, 28), (0.0, 1.0), device)
    assert (fixed.samples, fixed.samples_slow) == expected


def test_an_attack_named_twice_runs_once_in_the_order_first_named() -> None:
    spec = EvaluationSpec(attacks=["pgd_linf_ce", "fgsm_ce", "pgd_linf_ce"])
    assert spec.attacks == ["pgd_linf_ce", "fgsm_ce"]
