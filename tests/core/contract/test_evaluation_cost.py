"""The worst-case evaluation size of a spec, in attack steps (core/contract/evaluation_cost.py)."""

from __future__ import annotations

from typing import get_args

import pytest

from core.contract.evaluation import AttackName
from core.contract.evaluation_cost import evaluation_steps
from core.contract.spec import HardenSpec


def steps(**evaluation: object) -> dict[str, int]:
    return evaluation_steps(HardenSpec.model_validate({"evaluation": evaluation}))


def test_every_attack_is_charged_and_the_default_job_is_small():
    every = steps(attacks=list(get_args(AttackName)))
    assert set(every) == set(get_args(AttackName)) and min(every.values()) > 0
    default = steps()
    assert set(default) == set(HardenSpec().evaluation.attacks)
    assert sum(default.values()) < 2_000_000  # 1.4 million: far below the service's 100 million


def test_pgd_is_samples_times_budgets_times_iterations_for_both_models():
    charged = steps(attacks=["pgd_linf_ce"], samples=7, samples_slow=1, pgd_steps=11)
    assert charged == {"pgd_linf_ce": 2 * 7 * 3 * 11}  # upload + student, 3 L-inf budgets


@pytest.mark.parametrize(
    "knob", ["samples", "samples_slow", "pgd_steps", "cw_iterations", "square_queries"]
)
def test_more_budget_costs_more(knob):
    evaluation = HardenSpec().evaluation
    default = getattr(evaluation, knob)
    if default == "auto":  # charged at the CPU's counts, 100 and 50
        fast, slow = evaluation.sample_counts("cpu")
        default = fast if knob == "samples" else slow
    base = sum(steps().values())
    # Tripled: samples_slow then passes samples, whose maximum both are charged at.
    assert sum(steps(**{knob: default * 3}).values()) > base


def test_a_switched_off_evaluation_costs_nothing_and_duplicates_count_once():
    assert steps(enabled=False, samples=10_000) == {}
    assert steps(attacks=["square"] * 1000) == steps(attacks=["square"])


def test_certification_is_charged_n0_plus_n_passes_per_image_and_model():
    def certify(**certification: object) -> dict[str, int]:
        spec = {"method": "randomized_smoothing", "certification": certification}
        return evaluation_steps(HardenSpec.model_validate(spec))

    assert certify(n=500, n0=10, samples=7)["certify"] == 2 * 7 * (10 + 500)
    assert "certify" not in certify(enabled=False)
    # Distillation does not certify unless asked: nothing charged; asked, it is.
    assert "certify" not in evaluation_steps(HardenSpec())
    asked = HardenSpec.model_validate({"certification": {"enabled": True, "n": 1000}})
    assert evaluation_steps(asked)["certify"] > 0
    # A request for days of certificates is counted, so the submit-time limit can refuse it.
    assert certify(n=100_000, samples=10_000)["certify"] > 1_000_000_000
