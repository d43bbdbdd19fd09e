"""MODEL_CARD.md: Hugging Face front matter that YAML parsers read, whose model-index numbers are
the report's (clean accuracy, the robust accuracy the verdict weighs per threat model and
budget), and a body that says the verdict, the method, the data and the limits."""

from __future__ import annotations

import random
import string
from pathlib import Path
from typing import Any

import yaml

from core.names import MODEL_CARD
from core.report.model_card import model_card, to_yaml
from core.report.schema import Report


def _front_matter(card: str) -> dict[str, Any]:
    assert card.startswith("---\n")
    head, _, _ = card[4:].partition("\n---\n")
    parsed = yaml.safe_load(head)
    assert isinstance(parsed, dict)
    return parsed


def test_the_cards_numbers_are_the_reports(audited_run: tuple[Report, Path]) -> None:
    report, out = audited_run
    card = (out / MODEL_CARD).read_text()
    assert card == model_card(report)
    meta = _front_matter(card)
    assert meta["library_name"] == "onnx" and "distillation" in meta["tags"]
    assert "verdict-masked" in meta["tags"]
    (entry,) = meta["model-index"]
    (result,) = entry["results"]
    assert result["task"]["type"] == "image-classification"
    assert result["dataset"]["name"] == "builtin:digits"
    metrics = result["metrics"]
    assert metrics[0] == {
        "type": "accuracy",
        "name": "Clean accuracy",
        "value": report.models["student"].clean_accuracy,
    }
    summary = report.verdict_summary()
    assert summary is not None and summary.robust
    robust = {(m["args"]["norm"], m["args"]["epsilon"]): m for m in metrics[1:]}
    assert set(robust) == {(row.norm, row.epsilon) for row in summary.robust}
    for row in summary.robust:
        metric = robust[(row.norm, row.epsilon)]
        assert metric["type"] == "robust_accuracy"
        assert metric["value"] == row.student_decisive
        assert metric["args"]["strongest_attack"] == row.student_attack
        # The images behind that number: the worst case's where it decides, else the attack's.
        strongest = next(
            s
            for s in report.verdict.strongest  # type: ignore[union-attr]
            if (s.norm, s.epsilon) == (row.norm, row.epsilon)
        )
        if metric["args"]["measure"] == "worst case over attacks":
            assert metric["value"] == row.student_worst_case
            assert metric["args"]["samples"] == strongest.worst_case_samples
        else:
            assert metric["value"] == row.student_robust_accuracy
            attack = next(
                a
                for a in report.evaluation.models["student"].attacks  # type: ignore[union-attr]
                if a.attack == row.student_attack
            )
            (point,) = [p for p in attack.points if p.epsilon == row.epsilon]
            assert metric["args"]["samples"] == point.samples
    # The body says the verdict in words, the method, the data and the limits.
    assert report.verdict is not None and report.verdict.headline in card
    for heading in ("## Verdict", "## Robustness", "## Method", "## Data", "## Limits"):
        assert heading in card
    assert "Do not deploy it as robust" in card
    assert report.export.outputs in card and report.export.sha256 in card


def test_a_job_without_the_audit_claims_no_robustness(audited_run: tuple[Report, Path]) -> None:
    report, _ = audited_run
    card = model_card(report.model_copy(update={"evaluation": None, "verdict": None}), name="x")
    meta = _front_matter(card)
    metrics = meta["model-index"][0]["results"][0]["metrics"]
    assert [m["type"] for m in metrics] == ["accuracy"]
    assert meta["model-index"][0]["name"] == "x" and "not-audited" in meta["tags"]
    assert "**Not audited.**" in card and "robust accuracy" not in card.lower().split("---")[2]


def test_the_yaml_emitter_round_trips_through_a_yaml_parser() -> None:
    rng = random.Random(0)
    alphabet = string.printable + "ε–é: #'\"\\-[]{}&*!|>%@`"

    def value(depth: int) -> Any:
        kind = rng.randrange(7 if depth < 3 else 4)
        if kind == 0:
            return "".join(rng.choice(alphabet) for _ in range(rng.randrange(12)))
        if kind == 1:
            return rng.choice(
                [0, -3, 7, 1.5, 0.03137254901960784, 1e-9, 1e20, -2.5e-12, True, None]
            )
        if kind == 2:
            return rng.choice(["yes", "no", "null", "1.0", "~", "- x", ""])
        if kind == 3:
            return []
        if kind in (4, 5):
            return {f"k{i}-{rng.choice('ab-_')}": value(depth + 1) for i in range(rng.randrange(4))}
        return [value(depth + 1) for _ in range(rng.randrange(4))]

    for _ in range(300):
        document = {f"key{i}": value(0) for i in range(rng.randrange(1, 5))}
        assert yaml.safe_load(to_yaml(document)) == document
