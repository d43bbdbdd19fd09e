"""``--fail-on``, ``--json`` and ``--junit`` of ``harden run``: the exit code of each gate, the
summary a pipeline parses, and JUnit XML as CI systems read it (a real run on builtin:digits with
a small audit; the service's ``harden submit --wait`` is in tests/integration/test_verdict.py)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.gate import (
    EXIT_GATE,
    EXIT_OK,
    EXIT_USAGE,
    GateError,
    check,
    check_evaluation,
    parse_gates,
)
from cli.main import app
from core.contract.evaluation import EvaluationSpec
from core.report.schema import Report
from core.report.summary import (
    CertifiedAt,
    CleanAccuracy,
    CorruptionDropAt,
    CorruptionSummary,
    RobustAt,
    VerdictSummary,
)
from tests.core.model_files import write_model
from tests.worker.real_pipeline import TINY_EVALUATION

runner = CliRunner()


def harden_run(tmp_path: Path, *options: str) -> tuple[int, str, str]:
    """``harden run`` of the digits model, five student epochs and the small audit (about 3 s:
    a student that learnt enough to be ``masked``, as distillation's students are)."""
    config = tmp_path / "spec.json"
    config.write_text(json.dumps({"evaluation": TINY_EVALUATION}))
    model = write_model("torchscript", tmp_path)
    args = ["run", str(model), "--dataset", "builtin:digits", "--out", str(tmp_path / "out"),
            "--config", str(config), "--teacher-epochs", "0", "--student-epochs", "5",
            "--device", "cpu", *options]  # fmt: skip
    result = runner.invoke(app, args)
    return result.exit_code, result.stdout, result.stderr


def read_junit(path: Path) -> ET.Element:
    """The file parsed, with the structure CI reporters rely on checked: one suite in
    ``testsuites``, counts that match its test cases, every case named."""
    root = ET.parse(path).getroot()
    assert root.tag == "testsuites"
    (suite,) = root.findall("testsuite")
    cases = suite.findall("testcase")
    for element in (root, suite):
        assert int(element.get("tests", -1)) == len(cases)
        for outcome, attribute in (("failure", "failures"), ("error", "errors")):
            assert int(element.get(attribute, -1)) == sum(len(c.findall(outcome)) for c in cases)
        assert int(element.get("skipped", -1)) == sum(len(c.findall("skipped")) for c in cases)
        assert float(element.get("time", "nan")) >= 0
    for case in cases:
        assert case.get("classname") and case.get("name")
        assert len([child for child in case if child.tag != "system-out"]) <= 1
    return suite


def test_a_tripped_gate_exits_3_with_a_json_summary_and_junit_failures(tmp_path: Path) -> None:
    junit = tmp_path / "ci" / "harden.xml"
    code, stdout, stderr = harden_run(
        tmp_path,
        "--fail-on", "masked,min-robust=1@linf:0.1", "--fail-on", "no-measurable-gain",
        "--json", "--junit", str(junit),
    )  # fmt: skip
    report = Report.model_validate_json((tmp_path / "out" / "report.json").read_text())
    assert report.verdict is not None and report.verdict.label == "masked", report.verdict
    assert code == EXIT_GATE, stderr
    # stdout is the JSON document alone; the run's own summary and the trips went to stderr.
    summary = json.loads(stdout)
    assert summary["state"] == "succeeded" and summary["exit_code"] == EXIT_GATE
    assert summary["verdict"] == report.verdict_summary().model_dump(mode="json")
    assert [(c["name"], c["passed"]) for c in summary["checks"]] == [
        ("masked", False), ("min-robust=1@linf:0.1", False), ("no-measurable-gain", True),
    ]  # fmt: skip
    assert summary["artifacts"]["model.onnx"] == str(tmp_path / "out" / "model.onnx")
    assert "harden run: done" in stderr and "--fail-on masked tripped" in stderr
    suite = read_junit(junit)
    cases = {case.get("name"): case for case in suite.findall("testcase")}
    assert list(cases) == ["job succeeded", "masked", "min-robust=1@linf:0.1", "no-measurable-gain"]
    assert cases["job succeeded"].find("error") is None
    assert cases["masked"].find("failure").get("message") == "verdict: masked"
    assert "robust accuracy at linf ε=0.1" in cases["min-robust=1@linf:0.1"].find("failure").get(
        "message"
    )
    assert cases["no-measurable-gain"].find("failure") is None
    properties = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert properties["verdict"] == "masked" and properties["method"] == "distillation"


def test_gates_that_pass_exit_0(tmp_path: Path) -> None:
    code, stdout, stderr = harden_run(
        tmp_path, "--fail-on", "no-measurable-gain", "--fail-on", "min-robust=0%@l2:1",
        "--fail-on", "corruption-drop=100", "--json",
    )  # fmt: skip
    assert code == EXIT_OK, stderr
    summary = json.loads(stdout)
    assert summary["gates_passed"] and [c["passed"] for c in summary["checks"]] == [True] * 3
    # The job's corruption figures reach the summary a pipeline reads, as the report has them.
    report = Report.model_validate_json((tmp_path / "out" / "report.json").read_text())
    assert report.corruptions is not None
    corruptions = summary["verdict"]["corruptions"]
    assert corruptions["drop_points"] == report.corruptions.drop_points
    assert {row["corruption"] for row in corruptions["per_corruption"]} == {
        row.corruption for row in report.corruptions.per_corruption
    }
    assert "mean corruption accuracy" in summary["checks"][2]["message"]


@pytest.mark.parametrize(
    ("options", "says"),
    [
        (["--fail-on", "robust"], "is no gate"),
        (["--fail-on", "min-robust=2@linf:0.1"], "must lie in 0..1"),
        (["--fail-on", "min-robust=0.5@linf:0.25"], "does not audit linf ε=0.25"),
        (["--fail-on", "masked", "--no-evaluation"], "needs the robustness evaluation"),
    ],
)
def test_a_gate_that_cannot_be_checked_exits_2_before_any_work(
    tmp_path: Path, options: list[str], says: str
) -> None:
    code, _, stderr = harden_run(tmp_path, *options)
    assert code == EXIT_USAGE and says in stderr
    assert not (tmp_path / "out").exists()


def test_a_failed_run_is_a_junit_error_and_a_json_failure(tmp_path: Path) -> None:
    # A file that is no model: refused input, exit 2 (as without gates).
    junit = tmp_path / "harden.xml"
    model = tmp_path / "model.pt"
    model.write_bytes(b"not a model at all")
    args = ["run", str(model), "--dataset", "builtin:digits", "--out", str(tmp_path / "out"),
            "--fail-on", "masked", "--json", "--junit", str(junit)]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == EXIT_USAGE
    summary = json.loads(result.stdout)
    assert summary["state"] == "failed" and summary["error"]["code"]
    suite = read_junit(junit)
    job, gate = suite.findall("testcase")
    assert job.find("error").get("type") == summary["error"]["code"]
    assert gate.get("name") == "masked" and gate.find("skipped") is not None


def verdict(label: str, student: float, worst: float | None) -> VerdictSummary:
    row = RobustAt(
        norm="linf", epsilon=8 / 255, uploaded_robust_accuracy=0.1, student_robust_accuracy=student,
        uploaded_attack="pgd_linf_ce", student_attack="apgd_ce", uploaded_worst_case=worst,
        student_worst_case=worst,
    )  # fmt: skip
    return VerdictSummary(
        label=label, headline="h", method="adversarial",  # type: ignore[arg-type]
        clean_accuracy=CleanAccuracy(uploaded=0.9, student=0.8), robust=[row],
    )  # fmt: skip


def test_each_gate_on_each_verdict() -> None:
    gates = parse_gates(["masked,no-measurable-gain", "min-robust=40%@linf:8/255", "masked"])
    assert [g.name for g in gates] == ["masked", "no-measurable-gain", "min-robust=40%@linf:8/255"]
    passed = [[r.passed for r in check(gates, verdict(label, 0.5, 0.45))] for label in (
        "masked", "no measurable gain", "real gain")]  # fmt: skip
    assert passed == [[False, True, True], [True, False, True], [True, True, True]]
    # The per-sample worst case decides where measured; else the strongest single attack.
    assert [r.passed for r in check(gates[2:], verdict("real gain", 0.5, 0.39))] == [False]
    assert [r.passed for r in check(gates[2:], verdict("real gain", 0.41, None))] == [True]
    # No verdict at all, or none at that budget: the gate trips, it does not pass unchecked.
    assert [r.passed for r in check(gates, None)] == [False, False, False]
    (unmeasured,) = check(parse_gates(["min-robust=0.1@l2:0.5"]), verdict("real gain", 1.0, 1.0))
    assert not unmeasured.passed and "(measured: linf 0.0313725)" in unmeasured.message
    # A budget written as a fraction is the same budget as the evaluation's float.
    check_evaluation(gates, EvaluationSpec(epsilons_linf=[2 / 255, 4 / 255, 8 / 255]))
    with pytest.raises(GateError, match="does not audit"):
        check_evaluation(gates, EvaluationSpec(epsilons_linf=[0.0314]))


def test_the_untrained_gate_reads_whether_the_upload_is_near_chance() -> None:
    trained = verdict("real gain", 0.5, None)
    (passed,) = check(parse_gates(["untrained"]), trained)
    assert passed.passed and "90.0%" in passed.message
    at_chance = trained.model_copy(update={"untrained_upload": True})
    (tripped,) = check(parse_gates(["untrained"]), at_chance)
    assert not tripped.passed and "near chance" in tripped.message
    assert not check(parse_gates(["untrained"]), None)[0].passed


def test_a_certified_gate_reads_the_certified_accuracy_at_its_radius() -> None:
    gates = parse_gates(["min-certified=0.5@l2:0.5", "min-certified=60%@l2:0.25"])
    certified = verdict("real gain", 0.5, None).model_copy(
        update={
            "certified": [
                CertifiedAt(
                    radius=0.25, uploaded_certified_accuracy=0.2, student_certified_accuracy=0.7
                ),
                CertifiedAt(
                    radius=0.5, uploaded_certified_accuracy=0.1, student_certified_accuracy=0.45
                ),
            ]
        }
    )
    outcomes = check(gates, certified)
    assert [r.passed for r in outcomes] == [False, True]
    assert "0.4500 < 0.5" in outcomes[0].message and "smoothed classifier" in outcomes[0].message
    # A radius the job did not certify, or a job that certified nothing: the gate trips.
    (missing,) = check(parse_gates(["min-certified=0.1@l2:1"]), certified)
    assert not missing.passed and "certification.radii" in missing.message
    (none,) = check(gates[:1], verdict("real gain", 0.5, None))
    assert not none.passed and "certified radii: none" in none.message
    # An L-inf certificate is no randomized smoothing certificate.
    with pytest.raises(GateError, match="L2 radii only"):
        parse_gates(["min-certified=0.5@linf:0.1"])


def _corruptions(mean: tuple[float, float], fog: tuple[float, float]) -> CorruptionSummary:
    """A summary whose mean drop and fog drop are (points, noise)."""
    return CorruptionSummary(
        family="grayscale", samples=500, uploaded=0.8, student=0.8 - mean[0] / 100,
        drop_points=mean[0], noise_points=mean[1], margin_points=5, per_corruption=[
            CorruptionDropAt(corruption="fog", uploaded=0.7, student=0.7 - fog[0] / 100,
                             drop_points=fog[0], noise_points=fog[1]),
            CorruptionDropAt(corruption="contrast", uploaded=0.7, student=0.75,
                             drop_points=-5.0, noise_points=1.0),
        ],
    )  # fmt: skip


def test_the_corruption_gate_trips_beyond_its_points_and_the_noise_only() -> None:
    def outcome(gate: str, mean: tuple[float, float], fog: tuple[float, float]) -> tuple[bool, str]:
        summary = verdict("real gain", 0.5, None).model_copy(
            update={"corruptions": _corruptions(mean, fog)}
        )
        (result,) = check(parse_gates([gate]), summary)
        return result.passed, result.message

    # The mean lost 6 points (noise 2): beyond 5 trips and names it; within 10 passes.
    passed, message = outcome("corruption-drop=5", (6.0, 2.0), (1.0, 1.0))
    assert not passed and "mean: -6.0 points" in message and "fog" not in message
    assert outcome("corruption-drop=10", (6.0, 2.0), (1.0, 1.0))[0]
    # One corruption beyond the points but within its own noise does not trip; beyond, it does.
    assert outcome("corruption-drop=5", (1.0, 1.0), (8.0, 9.0))[0]
    passed, message = outcome("corruption-drop=5", (1.0, 1.0), (8.0, 3.0))
    assert not passed and "fog: -8.0 points (± 3.0)" in message and "contrast" not in message
    # A gain is never a trip, even at 0 points.
    assert outcome("corruption-drop=0", (-2.0, 1.0), (-1.0, 0.5))[0]
    # A job without the measurement: the gate trips and says how to get one.
    (missing,) = check(parse_gates(["corruption-drop=5"]), verdict("real gain", 0.5, None))
    assert not missing.passed and "corruptions.enabled" in missing.message
    for bad in ("corruption-drop=-1", "corruption-drop=101", "corruption-drop=five"):
        with pytest.raises(GateError):
            parse_gates([bad])
