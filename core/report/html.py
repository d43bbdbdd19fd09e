"""HTML view of a report: one self-contained page (inline CSS, plots as data URIs).

Rendered by a Jinja2 template with autoescaping on; no HTML is built by string concatenation.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup, escape
from pydantic import BaseModel

from core.audit.schema import Evaluation
from core.contract.methods import AFTER_METHOD, BEFORE_METHOD, CATALOGUE
from core.report.formatting import budget_text, epsilon_text, number_text, seconds_text
from core.report.plots import (
    certified_accuracy_plot,
    gradient_histograms,
    robust_accuracy_plots,
)

if TYPE_CHECKING:
    from core.report.schema import Report

_TEMPLATES = Path(__file__).parent / "templates"


def _interval(value: tuple[float, float] | None) -> str:
    """A 95% interval as "95%: 12.3–20.1%" ("" when there is none)."""
    if value is None:
        return ""
    low, high = value
    return f"95%: {100 * low:.1f}–{100 * high:.1f}%"


def _code_spans(text: str) -> Markup:
    """Text whose `backticked` parts are code, escaped like any other text."""
    parts = str(escape(text)).split("`")
    return Markup(
        "".join(f"<code>{part}</code>" if index % 2 else part for index, part in enumerate(parts))
    )


def _environment(width: float) -> Environment:
    """Jinja with the report's filters; ``width``: the input range's, which budgets are
    fractions of."""
    env = Environment(
        loader=FileSystemLoader(_TEMPLATES),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["pct"] = lambda v: "–" if v is None else f"{100 * v:.1f}%"
    env.filters["num"] = lambda v, d=3: number_text(v, d)
    env.filters["eps"] = lambda v: "–" if v is None else epsilon_text(v, width)
    env.filters["budget"] = lambda epsilon, norm: budget_text(norm, epsilon, width)
    env.filters["duration"] = lambda v: "–" if v is None else seconds_text(v)
    env.filters["interval"] = _interval
    env.filters["code_spans"] = _code_spans
    return env


def input_rows(report: Report) -> list[tuple[str, str]]:
    """The job's input (the upload and the dataset) as name/value rows of text: nested
    sections as "model: file", lists joined, shapes as 1×28×28, unset values left out."""
    rows = []
    for section, values in report.input.items():
        items = values.items() if isinstance(values, dict) else [("", values)]
        for key, value in items:
            name = f"{section}: {key.replace('_', ' ')}" if key else section
            if value is None or value == []:
                continue
            if key == "input_shape" and isinstance(value, list):
                text = "×".join(map(str, value))
            elif isinstance(value, list):
                text = ", ".join(map(str, value))
            elif isinstance(value, dict):
                text = ", ".join(f"{k}: {v}" for k, v in value.items() if v is not None)
            else:
                text = str(value)
            rows.append((name, text))
    return rows


def class_rows(report: Report) -> list[dict[str, Any]]:
    """Per class of the test split: its name, its images and each model's clean accuracy (the
    models that have a per-class breakdown: reports before 2.1 have none)."""
    names = (report.input.get("dataset") or {}).get("class_names") or []
    models = {
        role: {row.label: row for row in summary.per_class}
        for role in ("uploaded", "student")
        if (summary := report.models.get(role)) is not None and summary.per_class
    }
    if set(models) != {"uploaded", "student"}:
        return []
    return [
        {
            "name": names[label] if label < len(names) else str(label),
            "samples": row.samples,
            "uploaded": models["uploaded"].get(label),
            "student": row,
        }
        for label, row in sorted(models["student"].items())
    ]


def attack_rows(evaluation: Evaluation) -> list[dict[str, Any]]:
    """One table row per attack and budget, the uploaded model and the student side by side."""
    uploaded = {a.attack: a for a in evaluation.models["uploaded"].attacks}
    student = {a.attack: a for a in evaluation.models["student"].attacks}
    rows = []
    for name in dict.fromkeys([*uploaded, *student]):
        up, st = uploaded.get(name), student.get(name)
        info = st or up
        assert info is not None
        up_points = {p.epsilon: p for p in up.points} if up else {}
        st_points = {p.epsilon: p for p in st.points} if st else {}
        for epsilon in dict.fromkeys([*up_points, *st_points]):
            rows.append(
                {
                    "attack": info.title,
                    "id": name,
                    "norm": info.norm,
                    "paper": info.paper,
                    "strong": info.sees_through_masking,
                    "epsilon": epsilon,
                    "unit": info.perturbation_unit,
                    "uploaded": up_points.get(epsilon),
                    "student": st_points.get(epsilon),
                    "note": (st.note if st and st.note else up.note if up else None),
                }
            )
    return rows


def _field_text(value: Any) -> str:
    """A record's value as text: numbers without exponents, lists joined, no Python syntax."""
    if isinstance(value, bool) or value is None:
        return {True: "yes", False: "no", None: "–"}[value]
    if isinstance(value, int | float):
        return number_text(value)
    if isinstance(value, list):
        return ", ".join(_field_text(item) for item in value)
    if isinstance(value, dict):
        return "; ".join(f"{key}: {_field_text(item)}" for key, item in value.items())
    return str(value)


def method_records(report: Report) -> list[dict[str, Any]]:
    """The record sections that methods declare in the catalogue (core.contract.methods), as
    name/value rows: a method added later gets its table without an edit of the template."""
    sections = []
    for info in CATALOGUE.values():
        record = getattr(report, info.record.field, None) if info.record is not None else None
        if info.record is None or not isinstance(record, BaseModel):
            continue
        fields = [
            (key.replace("_", " "), _field_text(value))
            for key, value in record.model_dump(mode="json").items()
        ]
        sections.append({"title": info.record.description, "fields": fields})
    return sections


def certified_rows(report: Report) -> list[dict[str, Any]]:
    """Per certified radius: each model's certified accuracy beside its empirical robust
    accuracy at the same L2 budget (the strongest attack's, where the audit ran one there)."""
    certification = report.certification
    if certification is None:
        return []
    empirical: dict[str, dict[float, float]] = {name: {} for name in certification.models}
    if report.evaluation is not None:
        for name, robustness in report.evaluation.models.items():
            for worst in robustness.worst_case:
                if worst.norm == "l2" and name in empirical:
                    empirical[name][round(worst.epsilon, 6)] = worst.robust_accuracy
    rows = []
    for index, radius in enumerate(
        r.radius for r in next(iter(certification.models.values())).certified
    ):
        rows.append(
            {
                "radius": radius,
                "certified": [
                    m.certified[index].certified_accuracy for m in certification.models.values()
                ],
                "empirical": [
                    empirical[name].get(round(radius, 6)) for name in certification.models
                ],
            }
        )
    return rows


def render_html(report: Report) -> str:
    """The report as one self-contained HTML page: verdict first, then the numbers and plots."""
    evaluation = report.evaluation
    context: dict[str, Any] = {
        "report": report,
        "verdict": report.verdict,
        "evaluation": evaluation,
        "rows": [],
        "method_records": method_records(report),
        "summary": report.summary,
        "input_rows": input_rows(report),
        "class_rows": class_rows(report),
        "certified_rows": certified_rows(report),
        "certified_plot": (
            certified_accuracy_plot(report.certification, evaluation)
            if report.certification is not None
            else None
        ),
        "accuracy_plots": {},
        "gradient_plot": None,
        # Seconds of the hardening method's own stages (whatever it declares), for the
        # comparison table: everything but the stages every job runs around it.
        "training_s": sum(
            seconds
            for stage, seconds in report.timings_s.items()
            if stage not in {s.name for s in (*BEFORE_METHOD, *AFTER_METHOD)}
        ),
    }
    if evaluation is not None and {"uploaded", "student"} <= set(evaluation.models):
        context["rows"] = attack_rows(evaluation)
        context["accuracy_plots"] = robust_accuracy_plots(evaluation)
        context["gradient_plot"] = gradient_histograms(evaluation)
    low, high = report.spec.get("input_range") or (0.0, 1.0)
    width = float(high) - float(low)
    return _environment(width).get_template("report.html.j2").render(**context)
