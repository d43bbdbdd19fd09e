"""The spec's validation: student_epochs may be unset (auto, resolved by core.plan) and stays in
its bounds; input_range is ordered and of pixel magnitude."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from core.contract.spec import STUDENT_EPOCHS_MAX, HardenSpec, deprecations


def test_student_epochs_accepts_null_and_refuses_out_of_range() -> None:
    spec = HardenSpec.model_validate({"distillation": {"student_epochs": None}})
    assert spec.distillation.student_epochs is None
    for bad in (0, STUDENT_EPOCHS_MAX + 1):
        with pytest.raises(ValidationError, match="student_epochs"):
            HardenSpec.model_validate({"student_epochs": bad})


@pytest.mark.parametrize(
    ("value", "allowed"),
    [([0, 1], True), ([-1, 1], True), ([0, 255], True), ([0, 1e7], False), ([-1e308, 1e308], False),
     ([1, 1], False), ([1, 0], False)],
)  # fmt: skip
def test_input_range_must_be_ordered_and_of_pixel_magnitude(value: list[float], allowed: bool):
    if allowed:
        assert HardenSpec(input_range=value).input_range == tuple(value)
    else:
        with pytest.raises(ValidationError, match="input_range"):
            HardenSpec(input_range=value)


def test_distillation_settings_live_in_their_section_and_the_flat_form_still_reads() -> None:
    nested_config = {"distillation": {"temperature": 50, "student_epochs": 3}}
    flat_config = {"temperature": 50, "student_epochs": 3}
    flat = HardenSpec.model_validate(flat_config)
    assert flat == HardenSpec.model_validate(nested_config)
    assert flat.distillation.temperature == 50.0
    assert deprecations(nested_config) == []
    assert deprecations(flat_config) == [
        "temperature at the top level is deprecated: give it as distillation.temperature",
        "student_epochs at the top level is deprecated: give it as distillation.student_epochs",
    ]
    # What is stored (JSON) is the section's form.
    stored = flat.model_dump(mode="json")
    assert "temperature" not in stored and stored["distillation"]["temperature"] == 50.0
    assert deprecations(stored) == [] and HardenSpec.model_validate(stored) == flat


def test_a_setting_given_in_both_places_is_refused() -> None:
    with pytest.raises(ValidationError, match="both at the top level and in distillation"):
        HardenSpec.model_validate({"student_epochs": 3, "distillation": {"student_epochs": 4}})


@pytest.mark.parametrize(
    ("method", "refusal"),
    [([], "lists no method"), (["adversarial", "adversarial"], "names a method twice")],
)
def test_a_method_list_names_each_method_once(method: list[str], refusal: str) -> None:
    with pytest.raises(ValidationError, match=refusal):
        HardenSpec(method=method)
    assert HardenSpec(method=["distillation", "trades"]).methods == ("distillation", "trades")


def test_the_robust_budget_defaults_to_the_largest_audited_one() -> None:
    spec = HardenSpec(method="adversarial", evaluation={"epsilons_linf": [0.05, 0.2]})
    assert spec.trains_against_attacks and spec.robust_epsilon() == 0.2
    assert HardenSpec(method="adversarial", robust={"epsilon": 0.1}).robust_epsilon() == 0.1
    assert not HardenSpec().trains_against_attacks
    # Training against L2 attacks with no L2 budget audited has nothing to train for.
    with pytest.raises(ValidationError, match="set robust.epsilon"):
        HardenSpec(
            method="adversarial",
            robust={"norm": "l2"},
            evaluation={"epsilons_l2": [], "attacks": ["fgsm_ce"]},
        )


@pytest.mark.parametrize(
    ("dataset", "pin", "allowed"),
    [
        ("dataset:" + "c" * 32, "a" * 64, True),
        ("builtin:mnist", "a" * 64, False),
        ("https://example.test/d.npz#sha256=" + "b" * 64, "a" * 64, False),
        ("https://example.test/d.npz#sha256=" + "a" * 64, "a" * 64, True),
    ],
)
def test_dataset_sha256_pins_only_a_fetched_dataset(dataset: str, pin: str, allowed: bool) -> None:
    if allowed:
        assert HardenSpec(dataset=dataset, dataset_sha256=pin).dataset_sha256 == pin
    else:
        with pytest.raises(ValidationError, match="dataset_sha256"):
            HardenSpec(dataset=dataset, dataset_sha256=pin)
