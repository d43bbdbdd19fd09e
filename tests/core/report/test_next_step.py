"""The next step after a report: one for every verdict label (and for an upload at chance and a
run without the audit), in report.json, on the job resource's verdict and in harden run's closing
summary, with a `harden run` command that the real CLI parses into the spec it says."""

from __future__ import annotations

import json
import shlex
import time
from pathlib import Path
from typing import Any, get_args

import pytest
import typer
from markupsafe import escape

from cli.gate import check, parse_gates
from cli.main import app
from cli.run_cmd import _summary
from cli.run_options import FIXED, build_spec
from cli.service_client import _finish
from core.audit.verdict import decide
from core.contract.methods import CATALOGUE
from core.contract.spec import HardenSpec
from core.names import VerdictLabel
from core.pipeline import RunResult
from core.report.next_step import CONFIG_FILE, NextStep, next_step
from core.report.schema import Report
from tests.core.audit.test_verdict_deciding import _evaluation, _model


def _spec_of(step: NextStep, folder: Path, monkeypatch: pytest.MonkeyPatch) -> HardenSpec:
    """The spec `harden run` would run for ``step.command``, parsed by the CLI itself in
    ``folder`` (the upload's file made there), stopping before the pipeline."""
    assert step.command is not None
    write, run = step.command.split(" && ")
    echo, config, redirect, target = shlex.split(write)
    assert (echo, redirect, target) == ("echo", ">", CONFIG_FILE)
    monkeypatch.chdir(folder)
    (folder / CONFIG_FILE).write_text(config)
    words = shlex.split(run)
    assert words[:2] == ["harden", "run"]
    (folder / words[2]).write_bytes(b"")
    command = typer.main.get_command(app).commands["run"]  # type: ignore[attr-defined]
    with command.make_context("run", words[2:]) as context:
        params: dict[str, Any] = dict(context.params)
    parse_gates(params["fail_on"])  # every --fail-on it suggests is one the CLI reads
    overrides = {name: value for name, value in params.items() if name not in FIXED}
    return build_spec(params["dataset"], params["config"], overrides, params["no_evaluation"])


LABELS: tuple[str, ...] = get_args(VerdictLabel)


@pytest.mark.parametrize("method", list(CATALOGUE))
@pytest.mark.parametrize("label", LABELS)
def test_every_label_after_every_method_has_a_step_the_cli_runs(
    label: str, method: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = {"method": method, "normalization": {"mean": [0.5], "std": [0.25]}}
    step = next_step(
        label,  # type: ignore[arg-type]
        untrained_upload=False,
        method=method,
        spec=spec,
        model_file="teacher model.pt",
        dataset="builtin:mnist",
        gate=("linf", 0.3, 0.417),  # rounded down, not up
    )
    assert step.after == label and step.action
    parsed = _spec_of(step, tmp_path, monkeypatch)
    assert parsed.dataset == "builtin:mnist"
    assert parsed.method == step.spec["method"]
    # The data is read the way this job read it.
    assert parsed.normalization is not None and parsed.normalization.std == [0.25]
    # Whatever it trains, the next audit is AutoAttack-strength.
    assert parsed.evaluation.preset == "autoattack"
    if label == "real gain":
        assert parsed.method == method  # keep what worked
        assert "--fail-on min-robust=0.41@linf:0.3" in (step.command or "")
    else:
        # Masked or no gain: train against attacks, with another method if this one did.
        assert CATALOGUE[str(parsed.method)].trains_against_attacks
        assert parsed.method != method
        assert f"`method: {parsed.method}`" in step.action and "`preset: autoattack`" in step.action


def test_after_masked_distillation_the_step_is_adversarial_training_with_autoattack(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    step = next_step(
        "masked",
        untrained_upload=False,
        method="distillation",
        spec={},
        model_file="teacher.pt",
        dataset="upload",
    )
    assert "`method: adversarial`" in step.action and "`preset: autoattack`" in step.action
    assert step.command is not None and "--method adversarial" in step.command
    assert "--dataset-file DATASET_FILE" in step.command  # the job's own file, by name
    assert _spec_of(step, tmp_path, monkeypatch).method == "adversarial"


def test_an_untrained_upload_or_no_audit_comes_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    untrained = next_step(
        "real gain",
        untrained_upload=True,
        method="adversarial",
        spec={},
        model_file="m.pt",
        dataset="builtin:digits",
    )
    assert untrained.after == "untrained upload" and untrained.command is None
    assert "normalization" in untrained.action and "input_range" in untrained.action
    unaudited = next_step(
        None,
        untrained_upload=False,
        method="trades",
        spec={"evaluation": {"enabled": False}},
        model_file="m.pt",
        dataset="builtin:digits",
    )
    assert unaudited.after == "not audited"
    parsed = _spec_of(unaudited, tmp_path, monkeypatch)
    assert parsed.evaluation.enabled and parsed.method == "trades"


def test_the_report_the_job_and_the_cli_carry_the_same_step(
    audited_run: tuple[Report, Path],
) -> None:
    report, out = audited_run
    written = json.loads((out / "report.json").read_text())
    step = report.summary.next_step
    assert report.verdict is not None and step.after == report.verdict.label
    assert written["summary"]["next_step"] == step.model_dump(mode="json")
    summary = report.verdict_summary()
    assert summary is not None and summary.next_step == step
    closing = _summary(RunResult(report=report))
    assert f"next step: {step.action}" in closing
    assert step.command is not None and step.command in closing
    page = (out / "report.html").read_text(encoding="utf-8")
    assert page.index('id="next-step"') < page.index('id="verdict"')
    for part in step.command.split(" && "):  # one line each on the page
        assert str(escape(part)) in page


def test_harden_submit_wait_says_the_step_of_the_jobs_verdict(
    audited_run: tuple[Report, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    summary = audited_run[0].verdict_summary()
    assert summary is not None and summary.next_step is not None
    job = {"id": "j1", "state": "succeeded", "verdict": summary.model_dump(mode="json")}
    _finish(None, job, None, [], time.monotonic(), False)
    assert f"next step: {summary.next_step.action}" in capsys.readouterr().err


def test_a_real_gains_gate_passes_on_the_run_that_suggests_it(
    audited_run: tuple[Report, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    autoattack = ("apgd_ce", "apgd_t", "square", "pgd_linf_margin")
    uploaded = _model(0.1, {name: {0.1: 0.40, 0.3: 0.05} for name in autoattack})
    student = _model(0.1, {name: {0.1: 0.80, 0.3: 0.25} for name in autoattack})
    evaluation = _evaluation(uploaded, student, [0.1, 0.3], [])
    report = audited_run[0].model_copy(
        update={"evaluation": evaluation, "verdict": decide(evaluation)}
    )
    step = report.summary.next_step
    assert step.after == "real gain" and step.command is not None
    _spec_of(step, tmp_path, monkeypatch)
    [gate_text] = [word for word in shlex.split(step.command) if word.startswith("min-robust=")]
    results = check(parse_gates([gate_text]), report.verdict_summary())
    assert all(result.passed for result in results), results
