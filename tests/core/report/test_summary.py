"""What a person reads first (report.json 2.1's summary, the top of report.html): the verdict, the
test split's clean accuracy with its count, robust accuracy at the deciding budget with its 95%
interval, what ran and how long; one clean accuracy per population, each labelled; an interval
beside every accuracy; clean accuracy per class. On a real audited run (conftest.py)."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from core.report.intervals import wilson_interval
from core.report.schema import Report, read_report
from tests.core.report.test_report import SCHEMA_FILE

V1 = Path(__file__).parent / "data" / "report-v1.9.json"


def _inside(accuracy: float, interval: Any) -> bool:
    low, high = interval
    return low - 1e-12 <= accuracy <= high + 1e-12 and high > low


def test_the_summary_is_the_verdict_and_its_numbers(audited_run: tuple[Report, Path]) -> None:
    report, out = audited_run
    written = json.loads((out / "report.json").read_text())
    summary = written["summary"]
    assert report.verdict is not None and report.evaluation is not None
    assert (summary["verdict"], summary["headline"]) == (
        report.verdict.label,
        report.verdict.headline,
    )
    # Clean accuracy: the whole test split's, with its count, for both models.
    for role in ("uploaded", "student"):
        clean = summary["clean_accuracy"][role]
        assert clean["accuracy"] == report.models[role].clean_accuracy
        assert clean["samples"] == report.models[role].test_samples
        assert _inside(clean["accuracy"], clean["interval"])
    # Robust accuracy: at the budget that decides the verdict, the one its headline quotes.
    deciding = report.verdict.deciding
    assert deciding is not None
    robust = summary["robust"]
    assert (robust["norm"], robust["epsilon"]) == (deciding.norm, deciding.epsilon)
    assert robust["student"]["accuracy"] == (
        deciding.student_worst_case
        if robust["measure"] == "worst case"
        else deciding.student_robust_accuracy
    )
    assert _inside(robust["student"]["accuracy"], robust["student"]["interval"])
    # What ran and how long.
    assert summary["ran"]["method"] == report.method
    assert summary["ran"]["attacks"] == [
        a.attack for a in report.evaluation.models["student"].attacks
    ]
    assert summary["ran"]["preset"] == report.evaluation.preset
    assert math.isclose(summary["duration_s"], sum(report.timings_s.values()))
    # The document as written validates against the committed schema and reads back.
    jsonschema.validate(written, json.loads(SCHEMA_FILE.read_text()))
    assert read_report(written) == report


def _accuracies(node: Any, path: str = "") -> Iterator[tuple[str, float, Any]]:
    """Every accuracy of report.json with its interval (None where it has none): the fields
    named ``*accuracy`` or ``*worst_case`` that hold a number, and ``{accuracy, interval}``
    pairs (per class, the summary)."""
    if isinstance(node, list):
        for index, item in enumerate(node):
            yield from _accuracies(item, f"{path}[{index}]")
    if not isinstance(node, dict):
        return
    for key, value in node.items():
        here = f"{path}.{key}"
        if isinstance(value, int | float) and not isinstance(value, bool):
            if key == "accuracy":
                yield here, value, node.get("interval")
            elif re.search(r"(^|_)(accuracy|worst_case)$", key) and not key.startswith("min_"):
                yield here, value, node.get(f"{key}_interval")
        else:
            yield from _accuracies(value, here)


def test_every_accuracy_has_its_95_percent_wilson_interval(
    audited_run: tuple[Report, Path],
) -> None:
    report, out = audited_run
    written = json.loads((out / "report.json").read_text())
    # The sections this issue covers: the models, the audit and its verdict, the summary.
    found = 0
    for section in ("models", "evaluation", "verdict", "summary"):
        for where, accuracy, interval in _accuracies(written[section], section):
            assert interval is not None, f"{where} has no interval"
            assert _inside(accuracy, interval), (where, accuracy, interval)
            found += 1
    assert found > 50
    # Wilson's, from the sample count: the upload's clean accuracy on the test split.
    uploaded = report.models["uploaded"]
    correct = round(uploaded.clean_accuracy * uploaded.test_samples)
    assert uploaded.clean_accuracy_interval == pytest.approx(
        wilson_interval(correct, uploaded.test_samples)
    )
    # 0 of 100 is not the point 0: Wilson's upper end is 3.7%.
    assert wilson_interval(0, 100)[1] == pytest.approx(0.0370, abs=1e-4)
    # The schema says which interval it is.
    assert "Wilson" in json.dumps(json.loads(SCHEMA_FILE.read_text()))


def test_each_clean_accuracy_names_its_population(audited_run: tuple[Report, Path]) -> None:
    report, out = audited_run
    page = (out / "report.html").read_text(encoding="utf-8")
    assert report.evaluation is not None
    test_images, attacked = report.models["student"].test_samples, report.evaluation.samples
    assert test_images != attacked
    assert f"clean accuracy, whole test split ({test_images} images)" in page
    assert f"clean accuracy on the {attacked} attacked samples" in page
    # The summary's figure is the test split's; the audit's is on its attacked samples.
    summary = report.summary
    assert summary.clean_accuracy["student"].accuracy == report.models["student"].clean_accuracy
    top = page[: page.index('id="verdict"')]
    assert f"{100 * report.models['student'].clean_accuracy:.1f}%" in top


def test_clean_accuracy_per_class_adds_up_and_is_on_the_page(
    audited_run: tuple[Report, Path],
) -> None:
    report, out = audited_run
    names = report.input["dataset"]["class_names"]
    page = (out / "report.html").read_text(encoding="utf-8")
    table = page[page.index('<table id="classes">') :]
    table = table[: table.index("</table>")]
    for role in ("uploaded", "student"):
        model = report.models[role]
        assert [row.label for row in model.per_class] == list(range(len(names)))
        assert sum(row.samples for row in model.per_class) == model.test_samples
        correct = sum(round(row.accuracy * row.samples) for row in model.per_class)
        assert correct / model.test_samples == pytest.approx(model.clean_accuracy, abs=1e-6)
        for row in model.per_class:
            assert _inside(row.accuracy, row.interval)
            assert f"{100 * row.accuracy:.1f}%" in table
    assert table.count("<tr>") == len(names) + 1
    for name in names:
        assert f'<td class="name">{name}</td>' in table


def test_an_older_report_reads_with_its_summary_and_intervals_filled_in() -> None:
    report = read_report(json.loads(V1.read_text()))
    assert report.verdict is not None and report.verdict.deciding is not None
    written = json.loads(report.model_dump_json())
    assert written["summary"]["robust"]["epsilon"] == report.verdict.deciding.epsilon
    assert written["summary"]["next_step"]["action"]
    # Every accuracy of the old report gets its interval on reading, the compared method's too.
    for section in ("models", "evaluation", "verdict", "comparison", "summary"):
        for where, accuracy, interval in _accuracies(written[section], section):
            assert interval is not None, f"{where} has no interval"
            assert _inside(accuracy, interval), (where, accuracy, interval)
