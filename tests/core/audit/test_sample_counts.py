"""Evaluation samples 'auto' (the default): sized by the device the attacks run on; on the CPU
exactly the counts the audit always had (100 fast, 50 slow)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from core.audit.evaluate import evaluate
from core.contract.evaluation import AUTO_SAMPLES, EvaluationSpec
from core.contract.evaluation_cost import evaluation_steps
from core.contract.spec import HardenSpec
from tests.core.model_files import digits
from tests.core.robust_models import undefended


def test_auto_is_the_default_and_keeps_the_cpu_counts_of_old() -> None:
    evaluation = EvaluationSpec()
    assert (evaluation.samples, evaluation.samples_slow) == ("auto", "auto")
    assert evaluation.sample_counts("cpu") == (100, 50)
    assert evaluation.sample_counts("cuda") == AUTO_SAMPLES["cuda"] == (1000, 500)
    assert evaluation.sample_counts("mps") == (100, 50)  # any other device: the CPU's
    resolved = evaluation.resolved((1, 28, 28), (0.0, 1.0), "cuda")
    assert (resolved.samples, resolved.samples_slow) == (1000, 500)


def test_given_counts_win_and_the_autoattack_preset_attacks_all_samples_alike() -> None:
    given = EvaluationSpec(samples=40, samples_slow=10)
    assert given.sample_counts("cpu") == given.sample_counts("cuda") == (40, 10)
    assert EvaluationSpec(samples=40).sample_counts("cuda") == (40, 500)  # slow stays auto
    preset = EvaluationSpec.model_validate({"preset": "autoattack"})
    assert preset.sample_counts("cpu") == (100, 100)
    assert preset.sample_counts("cuda") == (1000, 1000)


@pytest.mark.parametrize("value", [0, 10_001, "many", -5])
def test_a_count_that_is_neither_auto_nor_in_range_is_refused(value: object) -> None:
    with pytest.raises(ValidationError, match="samples"):
        EvaluationSpec.model_validate({"samples": value})


def test_auto_is_charged_at_the_cpu_counts_at_submit() -> None:
    auto = evaluation_steps(HardenSpec())
    explicit = evaluation_steps(HardenSpec.model_validate({"evaluation": {"samples": 100}}))
    assert auto == explicit and sum(auto.values()) == 1_366_400


def test_an_audit_on_the_cpu_attacks_the_auto_counts() -> None:
    spec = HardenSpec(dataset="builtin:digits", evaluation={"attacks": ["fgsm_ce"]})
    evaluation, _ = evaluate(undefended(), undefended(), digits(), spec, device="cpu")
    assert (evaluation.samples, evaluation.samples_slow) == (100, 50)
    assert evaluation.device == "cpu"
