"""core.contract.strict_model: every number and boolean of the job contract is strict (issue 25:
"student_epochs": "2" and true were coerced and accepted). The fields are derived from the
models, so a new number or switch is covered without touching this test."""

from __future__ import annotations

import types
import typing
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from core.contract.spec import HardenSpec
from core.contract.strict_model import StrictModel


def _kinds(annotation: Any) -> set[type]:
    """The scalar types (int, float, bool) and StrictModel sections an annotation admits."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _kinds(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return set().union(*(_kinds(arg) for arg in typing.get_args(annotation)))
    if isinstance(annotation, type) and issubclass(annotation, StrictModel):
        return {annotation}
    return {annotation} & {int, float, bool}


def _scalar_fields(model: type[BaseModel], path: tuple[str, ...] = ()):  # type: ignore[no-untyped-def]
    for name, info in model.model_fields.items():
        kinds = _kinds(info.annotation)
        for kind in kinds:
            if isinstance(kind, type) and issubclass(kind, StrictModel):
                yield from _scalar_fields(kind, (*path, name))
        if kinds & {int, float, bool}:
            yield (*path, name), kinds & {int, float, bool}


def _config(path: tuple[str, ...], value: object) -> dict[str, Any]:
    config: dict[str, Any] = {path[-1]: value}
    for section in reversed(path[:-1]):
        config = {section: config}
    return config


FIELDS = dict(_scalar_fields(HardenSpec))


def _wrong_values(kinds: set[type]) -> list[object]:
    if kinds == {bool}:
        return [1, 0, "true", "false"]
    return ["2", "2.5", True, False]


def test_the_contract_has_the_fields_the_issue_named() -> None:
    assert FIELDS[("distillation", "student_epochs")] == {int}
    assert FIELDS[("evaluation", "enabled")] == {bool}
    assert FIELDS[("robust", "epsilon")] == {float}
    assert FIELDS[("mlflow", "enabled")] == {bool}
    assert len(FIELDS) >= 25  # every section walked, not only the top level


@pytest.mark.parametrize("path", sorted(FIELDS), ids=".".join)
def test_strings_and_booleans_are_no_numbers_and_numbers_no_booleans(
    path: tuple[str, ...],
) -> None:
    for value in _wrong_values(FIELDS[path]):
        with pytest.raises(ValidationError) as refused:
            HardenSpec.model_validate(_config(path, value))
        locations = [error["loc"] for error in refused.value.errors()]
        assert any(loc[: len(path)] == path for loc in locations), (value, locations)


@pytest.mark.parametrize(
    "config",
    [
        {"input_range": ["0", 1]},
        {"input_range": [True, 1]},
        {"normalization": {"mean": ["0.5"], "std": [1]}},
        {"evaluation": {"epsilons_linf": ["0.1"]}},
        {"evaluation": {"samples": "auto", "samples_slow": "50"}},
        {"seed": 1.5},
    ],
)
def test_numbers_inside_arrays_are_strict_too(config: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        HardenSpec.model_validate(config)


def test_json_integers_are_valid_floats_and_arrays_valid_tuples() -> None:
    spec = HardenSpec.model_validate(
        {
            "temperature": 100,
            "learning_rate": 1,
            "input_range": [0, 255],
            "normalization": {"mean": [0], "std": [1]},
            "evaluation": {"epsilons_linf": [1, 2], "samples": 10},
            "robust": {"epsilon": 8},
        }
    )
    temperature = spec.distillation.temperature
    assert temperature == 100.0 and isinstance(temperature, float)
    assert spec.input_range == (0.0, 255.0)
    # What the API stores and the worker reads back (JSON) validates again, unchanged.
    assert HardenSpec.model_validate(spec.model_dump(mode="json")) == spec
