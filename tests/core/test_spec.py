"""The spec's validation: student_epochs may be unset (auto, resolved by core.plan) and stays in
its bounds; input_range is ordered and of pixel magnitude."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from core.spec import STUDENT_EPOCHS_MAX, HardenSpec


def test_student_epochs_accepts_null_and_refuses_out_of_range() -> None:
    assert HardenSpec.model_validate({"student_epochs": None}).student_epochs is None
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
