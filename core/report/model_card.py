"""``MODEL_CARD.md``: the report as a Hugging Face model card, for model hubs and registries.

YAML front matter with ``model-index`` metadata (the clean accuracy and, per threat model and
budget, the robust accuracy the verdict weighs: the per-sample worst case over every attack where
measured, else the strongest attack's), then the method, the data, the verdict in words and the
limits. The front matter is written by a small emitter (every string double-quoted, JSON-escaped,
which YAML reads the same), so the core needs no YAML library. Torch-free.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from core.report.schema import Report

_NORM_TITLES = {"linf": "L-inf", "l2": "L2"}


def _scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return repr(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return {True: ".inf", False: "-.inf"}[value > 0] if math.isinf(value) else ".nan"
        text = repr(value)
        # YAML 1.1 readers (PyYAML) take an exponent only after a dot: 1e-09 -> 1.0e-09.
        mantissa, e, exponent = text.partition("e")
        return f"{mantissa}.0e{exponent}" if e and "." not in mantissa else text
    return json.dumps(str(value))  # a YAML double-quoted scalar


def _flow(value: Any) -> str:
    if isinstance(value, dict | list):  # empty here
        return "{}" if isinstance(value, dict) else "[]"
    return _scalar(value)


def to_yaml(value: Any, indent: int = 0) -> str:
    """``value`` (dicts, lists, scalars) as block YAML."""
    pad = " " * indent
    lines: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, dict | list) and item:
                lines.append(f"{pad}{key}:")
                lines.append(to_yaml(item, indent + 2))
            else:
                lines.append(f"{pad}{key}: {_flow(item)}")
    else:
        for item in value:
            if isinstance(item, dict | list) and item:
                body = to_yaml(item, indent + 2)
                lines.append(f"{pad}- {body.lstrip()}")
            else:
                lines.append(f"{pad}- {_flow(item)}")
    return "\n".join(lines)


def _budget_name(norm: str, epsilon: float) -> str:
    return f"{_NORM_TITLES.get(norm, norm)} ε={epsilon:g}"


def _samples(report: Report, norm: str, epsilon: float, worst_case: bool) -> int | None:
    """The test images behind the hardened model's robust accuracy at one budget: those of the
    per-sample worst case when it decides, else those the strongest attack ran on."""
    verdict, evaluation = report.verdict, report.evaluation
    if verdict is None or evaluation is None:
        return None
    row = next(r for r in verdict.strongest if r.norm == norm and r.epsilon == epsilon)
    if worst_case and row.worst_case_samples is not None:
        return row.worst_case_samples
    attacks = {a.attack: a for a in evaluation.models["student"].attacks}
    attack = attacks.get(row.student_attack)
    points = [p for p in attack.points if p.epsilon == epsilon] if attack is not None else []
    return points[0].samples if points else evaluation.samples


def card_metadata(report: Report, *, name: str) -> dict[str, Any]:
    """The card's front matter: tags and ``model-index`` with the hardened model's numbers."""
    dataset = report.input.get("dataset") or {}
    reference = str(dataset.get("reference") or report.spec.get("dataset") or "")
    metrics: list[dict[str, Any]] = [
        {
            "type": "accuracy",
            "name": "Clean accuracy",
            "value": report.models["student"].clean_accuracy,
        }
    ]
    summary = report.verdict_summary()
    for row in summary.robust if summary is not None else []:
        worst_case = row.student_decisive == row.student_worst_case
        metrics.append(
            {
                "type": "robust_accuracy",
                "name": f"Robust accuracy, {_budget_name(row.norm, row.epsilon)}",
                "value": row.student_decisive,
                "config": f"{row.norm}-{row.epsilon:g}",
                "args": {
                    "norm": row.norm,
                    "epsilon": row.epsilon,
                    "measure": "worst case over attacks" if worst_case else "strongest attack",
                    "strongest_attack": row.student_attack,
                    "samples": _samples(report, row.norm, row.epsilon, worst_case),
                },
            }
        )
    tags = ["onnx", "adversarial-robustness", report.method, "harden"]
    tags.append(f"verdict-{summary.label.replace(' ', '-')}" if summary else "not-audited")
    return {
        "library_name": "onnx",
        "pipeline_tag": "image-classification",
        "tags": tags,
        "model-index": [
            {
                "name": name,
                "results": [
                    {
                        "task": {"type": "image-classification", "name": "Image Classification"},
                        "dataset": {"type": reference, "name": reference, "split": "test"},
                        "metrics": metrics,
                    }
                ],
            }
        ],
    }


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _limits(report: Report) -> list[str]:
    limits = []
    verdict = report.verdict
    evaluation = report.evaluation
    if verdict is None or evaluation is None:
        limits.append(
            "The robustness evaluation was turned off for this job: nothing here says the model "
            "resists adversarial examples."
        )
    else:
        if verdict.label == "masked":
            limits.append(
                "The audit found gradient masking: the hardened model looks robust only to "
                "attacks that masking defeats. Do not deploy it as robust."
            )
        limits.append(
            f"Robust accuracies are measured on {evaluation.samples} test images "
            f"({evaluation.samples_slow} for the slow attacks), at the budgets listed only "
            f"(L-inf {', '.join(f'{e:g}' for e in evaluation.epsilons_linf) or 'none'}; "
            f"L2 {', '.join(f'{e:g}' for e in evaluation.epsilons_l2) or 'none'}), against the "
            "attacks the report lists: they are upper bounds, and stronger or adaptive attacks "
            "may lower them. No certificate is claimed."
        )
    uploaded = report.models.get("uploaded")
    classes = (report.input.get("dataset") or {}).get("num_classes")
    if report.untrained_upload and uploaded is not None:
        limits.append(
            f"The uploaded model is near chance accuracy ({_pct(uploaded.clean_accuracy)}, "
            f"{classes} classes): it is untrained or does not match the dataset."
        )
    if report.export.outputs:
        limits.append(report.export.outputs)
    spec = report.spec
    limits.append(
        f"Inputs are expected in the range {spec.get('input_range')}"
        + (
            f", normalised as {json.dumps(spec['normalization'])}"
            if spec.get("normalization")
            else ""
        )
        + "; robustness outside the threat models above (corruptions, other norms) was not "
        "measured."
    )
    limits += [note[:1].upper() + note[1:] for note in report.notes]
    return limits


def model_card(report: Report, *, name: str | None = None) -> str:
    """The Markdown model card of ``report``; ``name`` defaults to the upload's file stem and
    the method, e.g. ``model-distillation``."""
    model = report.input.get("model") or {}
    name = name or f"{Path(str(model.get('file') or 'model')).stem}-{report.method}"
    dataset = report.input.get("dataset") or {}
    reference = str(dataset.get("reference") or report.spec.get("dataset") or "")
    verdict = report.verdict
    summary = report.verdict_summary()
    lines = ["---", to_yaml(card_metadata(report, name=name)), "---", "", f"# {name}", ""]
    lines += [
        f"An image classifier hardened with **{report.method_title or report.method}** by the "
        "`harden` service, from an uploaded model, and audited against adversarial attacks "
        "(the uploaded model and the hardened one side by side).",
        "",
        "## Verdict",
        "",
        f"**{verdict.label}.** {verdict.headline}" if verdict else "**Not audited.**",
        "",
    ]
    if verdict is not None:
        lines += [f"- {sentence}" for sentence in verdict.evidence] + [""]
    lines += ["## Robustness", ""]
    if summary is not None and summary.robust:
        lines += [
            "| threat model | budget | uploaded | hardened | strongest attack on the hardened |",
            "|---|---|---|---|---|",
        ]
        for row in summary.robust:
            # Weighed as the hardened model's is (RobustAt.student_decisive).
            uploaded = min(
                row.uploaded_robust_accuracy,
                1.0 if row.uploaded_worst_case is None else row.uploaded_worst_case,
            )
            lines.append(
                f"| {_NORM_TITLES.get(row.norm, row.norm)} | {row.epsilon:g} | {_pct(uploaded)} "
                f"| {_pct(row.student_decisive)} | {row.student_attack} |"
            )
        lines.append("")
    else:
        lines += ["No robustness was measured.", ""]
    models = report.models
    lines += [
        "## Method",
        "",
        f"- Method: {report.method_title or report.method} (`{report.method}`).",
    ]
    if report.distillation is not None:
        lines.append(
            f"- Temperature T={report.distillation.temperature:g}, student trained "
            f"{report.distillation.student_epochs} epochs ({report.distillation.optimizer})."
        )
    if report.robust_training is not None:
        robust = report.robust_training
        lines.append(
            f"- Trained against {_budget_name(robust.norm, robust.epsilon)} attacks for "
            f"{robust.epochs} epochs."
        )
    lines += [
        f"- Clean accuracy on the test split: uploaded {_pct(models['uploaded'].clean_accuracy)}, "
        f"hardened {_pct(models['student'].clean_accuracy)} "
        f"({models['student'].test_samples} images).",
        "",
        "## Data",
        "",
        f"- Dataset: `{reference}`, {dataset.get('num_classes', '?')} classes, input shape "
        f"{dataset.get('input_shape', '?')}; {dataset.get('train_samples', '?')} training and "
        f"{dataset.get('test_samples', '?')} test images.",
        "",
        "## Limits",
        "",
    ]
    lines += [f"- {limit}" for limit in _limits(report)] + [""]
    lines += [
        "## Provenance",
        "",
        f"- `model.onnx` sha256 `{report.export.sha256}`, opset {report.export.opset}.",
        f"- Uploaded model sha256 `{model.get('sha256', 'unknown')}`.",
        f"- Made {report.created_at} with harden {report.software.get('harden', 'unknown')}; "
        "`report.json` holds every number.",
        "",
    ]
    return "\n".join(lines)
