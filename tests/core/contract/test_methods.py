"""The hardening methods' descriptions (core/contract/methods.py): the names the contract
accepts come from them, each has its implementation, and nothing outside a method's own module
branches on a method's name."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict, ValidationError

from core.contract import spec as contract_spec
from core.contract.methods import (
    CATALOGUE,
    DEFAULT_METHOD,
    HARDENING_METHODS,
    MethodInfo,
    Section,
    Stage,
)
from core.contract.spec import HardenSpec
from core.contract.strict_model import StrictModel
from core.contract.training_cost import training_steps
from core.hardening import registry
from core.hardening.registry import METHODS
from core.report import html as report_html
from core.report import schema as report_schema
from core.report.schema import Report, read_report

ROOT = Path(__file__).resolve().parents[3]
V1_REPORT = ROOT / "tests" / "core" / "report" / "data" / "report-v1.9.json"
# A method's own module may name it; the catalogue and the registry define the names.
OWNERS = {"core/contract/methods.py", "core/hardening/registry.py"}


def test_the_contract_accepts_exactly_the_catalogue():
    assert tuple(CATALOGUE) == HARDENING_METHODS and DEFAULT_METHOD in CATALOGUE
    for name in CATALOGUE:
        assert HardenSpec(method=name).methods == (name,)
    with pytest.raises(ValidationError):
        HardenSpec(method="label_smoothing")
    schema = HardenSpec.model_json_schema()
    assert schema["properties"]["method"]["default"] == DEFAULT_METHOD


def test_each_description_has_its_implementation_under_its_name():
    assert set(METHODS) == set(CATALOGUE)
    for name, method in METHODS.items():
        assert method.info is CATALOGUE[name] and method.name == name
        assert method.title == CATALOGUE[name].title


@pytest.mark.parametrize("name", list(CATALOGUE))
def test_each_method_costs_every_stage_it_declares(name):
    spec = HardenSpec.model_validate({"method": name, "student_epochs": 3})
    steps = training_steps(spec)
    assert list(steps) == [f"{name}.{stage.name}" for stage in CATALOGUE[name].stages]
    assert sum(steps.values()) > 0


def _method_name_comparisons(path: Path) -> list[str]:
    found = []
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if not isinstance(node, ast.Compare):
            continue
        for side in (node.left, *node.comparators):
            if isinstance(side, ast.Constant) and side.value in CATALOGUE:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


def test_nothing_outside_the_methods_branches_on_a_method_name():
    # `x == "distillation"`, `name != "adversarial"`, `in ("trades", ...)`: a method's behaviour
    # belongs in its class or its description. (robust.teacher == "adversarial" names a kind of
    # teacher, a setting of robust_distillation's own module.)
    sources = [
        path
        for folder in ("core", "app", "worker", "cli")
        for path in (ROOT / folder).rglob("*.py")
        if str(path.relative_to(ROOT)) not in OWNERS
        and not str(path.relative_to(ROOT)).startswith("core/hardening/")
    ]
    assert len(sources) > 100
    found = [where for path in sources for where in _method_name_comparisons(path)]
    assert found == []


class _ToySettings(StrictModel):
    sigma: float = 0.25


class _ToyRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")
    noise_draws: int
    sigmas: list[float]


_TOY = MethodInfo(
    name="toy",
    title="a toy method",
    stages=(Stage("training", 0.58),),
    trains_against_attacks=False,
    implementation="core.hardening.robust:Trades",
    settings=Section("toy", _ToySettings, "the toy method's settings"),
    record=Section("toy", _ToyRecord, "the toy method's record"),
)


def test_a_description_with_its_own_sections_extends_the_spec_and_the_report(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What adding a method needs beyond its description, its settings and record types and its
    class: nothing. The spec and the report gain its sections, the HTML its table."""
    catalogue = {**CATALOGUE, "toy": _TOY}
    for module in (contract_spec, report_schema, report_html):
        monkeypatch.setattr(module, "CATALOGUE", catalogue)
    spec_type = contract_spec._with_method_settings(HardenSpec)
    spec = spec_type.model_validate({"toy": {"sigma": 0.5}})
    assert _TOY.settings_of(spec) == _ToySettings(sigma=0.5)
    assert spec_type().toy == _ToySettings()  # type: ignore[attr-defined]  # defaults filled in
    with pytest.raises(ValidationError, match="sgima"):
        spec_type.model_validate({"toy": {"sgima": 0.5}})
    assert "toy" in spec_type.model_json_schema()["properties"]

    report_type = report_schema._with_method_records(Report)
    report = report_type.model_validate(
        read_report(json.loads(V1_REPORT.read_text())).model_dump()
        | {"toy": {"noise_draws": 1000, "sigmas": [0.25, 0.5]}}
    )
    assert "toy" in report_type.model_json_schema()["properties"]
    [table] = report_html.method_records(report)
    assert table["title"] == "the toy method's record"
    # Read by people: field names in words, numbers grouped, lists as lists (core/report/formatting)
    assert ("noise draws", "1,000") in table["fields"]
    assert ("sigmas", "0.25, 0.5") in table["fields"]


def test_a_class_that_implements_another_description_is_refused() -> None:
    with pytest.raises(ImportError, match="implements trades, not toy"):
        registry._implementation(_TOY)
