"""The report: the committed JSON schema is in sync, reports validate, the HTML is one file with
the verdict first and nothing fetched from elsewhere."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import jsonschema
import pytest

from core.audit.evaluate import evaluate
from core.contract.spec import HardenSpec
from core.datasets.dataset import Dataset
from core.report.html import render_html
from core.report.schema import (
    DistillationSummary,
    ExportSummary,
    ModelSummary,
    Report,
    report_json_schema,
)
from tests.core.robust_models import digits, distilled, undefended

SCHEMA_FILE = Path(__file__).resolve().parents[3] / "schemas" / "report.schema.json"


def _report(with_evaluation: bool = True) -> Report:
    d = digits()
    data = Dataset(
        d.x_train, d.y_train, d.x_test, d.y_test, 10, [str(i) for i in range(10)],
        "builtin:digits", (1, 8, 8),
    )  # fmt: skip
    spec = HardenSpec(
        dataset="builtin:digits",
        evaluation={"samples": 40, "samples_slow": 20, "epsilons_linf": [0.1, 0.3],
                    "epsilons_l2": [0.5, 2.0], "pgd_steps": 10, "cw_iterations": 30,
                    "square_queries": 100},
    )  # fmt: skip
    evaluation, verdict = (
        evaluate(undefended(), distilled(100.0), data, spec, device="cpu")
        if with_evaluation
        else (None, None)
    )
    summary = ModelSummary(clean_accuracy=0.9, mean_abs_logit=3.0, test_samples=450)
    return Report(
        created_at="2026-01-01T00:00:00Z",
        software={"torch": "test"},
        device="cpu",
        spec=spec.model_dump(mode="json"),
        input={"format": "test", "note": "<script>alert(1)</script>"},
        models={"uploaded": summary, "student": summary},
        distillation=DistillationSummary(
            temperature=100,
            teacher_epochs=0,
            student_epochs=30,
            optimizer="adam",
            teacher_start="scaled copy",
            student_init="scratch",
            train_samples=1347,
        ),  # fmt: skip
        export=ExportSummary(
            file="model.onnx", sha256="0" * 64, opset=18, parity_samples=10, max_abs_diff=1e-6
        ),
        timings_s={"evaluate": 1.0},
        evaluation=evaluation,
        verdict=verdict,
    )


@pytest.fixture(scope="module")
def report() -> Report:
    return _report()


def test_committed_schema_is_up_to_date() -> None:
    committed = json.loads(SCHEMA_FILE.read_text())
    assert committed == json.loads(json.dumps(report_json_schema())), (
        "schemas/report.schema.json is stale: run `python -m core.report.schema > "
        "schemas/report.schema.json`"
    )


def test_written_reports_validate_against_the_schema(report: Report) -> None:
    schema = json.loads(SCHEMA_FILE.read_text())
    for candidate in (report, _report(with_evaluation=False)):
        document = json.loads(candidate.model_dump_json())
        jsonschema.validate(document, schema)
        # And the document reads back into the same model.
        assert Report.model_validate(document) == candidate
    broken = json.loads(report.model_dump_json())
    broken["verdict"]["label"] = "robust"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.references: list[str] = []
        self.scripts = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.scripts += tag == "script"
        self.references += [v or "" for k, v in attrs if k in ("src", "href")]


def test_html_is_self_contained_with_the_verdict_first(report: Report) -> None:
    html = render_html(report)
    parser = _Links()
    parser.feed(html)
    # Plots are embedded as data URIs; nothing is fetched from elsewhere.
    assert parser.references and all(
        r.startswith("data:image/png;base64,") for r in parser.references
    )
    assert parser.scripts == 0
    assert report.verdict is not None
    verdict_at = html.index(report.verdict.label)
    table_at = html.index('<table id="attacks">')
    assert verdict_at < table_at
    assert html.index(report.verdict.headline.split(":")[0]) < table_at
    # Every attack run is in the table, for both models.
    for summary in report.evaluation.models["student"].attacks:  # type: ignore[union-attr]
        assert summary.title in html
    # Autoescaping: user-controlled text can never become markup.
    assert "<script>" not in html and "&lt;script&gt;alert(1)" in html


def test_html_without_evaluation_makes_no_robustness_claim() -> None:
    html = render_html(_report(with_evaluation=False))
    assert "no verdict" in html
    assert not re.search(r"robust(?!\s+accuracy)", html, flags=re.IGNORECASE)


def test_html_shows_the_worst_case_beside_the_strongest_attack(report: Report) -> None:
    html = render_html(report)
    assert report.verdict is not None and report.evaluation is not None
    assert "per-sample worst case" in html
    for row in report.verdict.strongest:
        # Both worst cases are in the report and on the page.
        assert row.uploaded_worst_case is not None and row.student_worst_case is not None
        assert f"{100 * row.student_worst_case:.1f}%" in html
    for model in report.evaluation.models.values():
        assert {(w.norm, w.epsilon) for w in model.worst_case} >= {
            ("linf", e) for e in report.evaluation.epsilons_linf
        }


def test_the_verdict_summary_is_the_verdict_with_its_numbers(report: Report) -> None:
    summary = report.verdict_summary()
    assert report.verdict is not None and summary is not None
    assert (summary.label, summary.headline) == (report.verdict.label, report.verdict.headline)
    assert summary.method == report.method == "distillation"
    assert summary.clean_accuracy.uploaded == report.models["uploaded"].clean_accuracy
    rows = [(r.norm, r.epsilon, r.student_robust_accuracy) for r in summary.robust]
    assert rows == [
        (r.norm, r.epsilon, r.student_robust_accuracy) for r in report.verdict.strongest
    ]
    assert {(r.norm, r.epsilon) for r in summary.robust} == {
        ("linf", 0.1), ("linf", 0.3), ("l2", 0.5), ("l2", 2.0)
    }  # fmt: skip
    for row in summary.robust:
        assert row.student_decisive <= row.student_robust_accuracy
    assert _report(with_evaluation=False).verdict_summary() is None
