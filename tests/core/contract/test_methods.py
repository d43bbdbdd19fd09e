"""The hardening methods' descriptions (core/contract/methods.py): the names the contract
accepts come from them, each has its implementation, and nothing outside a method's own module
branches on a method's name."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from pydantic import ValidationError

from core.contract.methods import CATALOGUE, DEFAULT_METHOD, HARDENING_METHODS
from core.contract.spec import HardenSpec
from core.contract.training_cost import training_steps
from core.hardening.registry import METHODS

ROOT = Path(__file__).resolve().parents[3]
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
