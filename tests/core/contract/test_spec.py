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
