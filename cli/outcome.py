"""What a CI pipeline reads of a finished ``harden run`` or ``harden submit --wait``: the exit
code, the ``--json`` summary on stdout and the ``--junit`` XML file.

The JUnit file has one test case per check: ``job succeeded`` (an ``error`` when the job failed)
and one per ``--fail-on`` gate (a ``failure`` when it tripped, ``skipped`` when the job never got
a verdict). It is the common subset of the format that Jenkins, GitLab CI, GitHub Actions' test
reporters, Azure Pipelines and CircleCI read (``testsuites`` > ``testsuite`` > ``testcase``),
written with the standard library's ElementTree: a few elements need no dependency.
"""

from __future__ import annotations

import inspect
import json
import socket
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from cli.gate import (
    EXIT_GATE,
    EXIT_JOB_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    FAIL_ON_HELP,
    CheckResult,
    Gate,
)
from core.report.summary import VerdictSummary

JOB_CHECK = "job succeeded"
JSON_HELP = (
    "Print a machine-readable summary on stdout (state, verdict, each gate, artifacts, exit "
    "code); progress and messages stay on stderr."
)
SARIF_HELP = (
    "Write the findings as SARIF 2.1.0 to this file (the verdict, an untrained upload, notes, "
    "each tripped --fail-on gate), for GitHub code scanning (upload-sarif) and other dashboards."
)
JUNIT_HELP = (
    "Write JUnit XML to this file: one test case per check (the job, each --fail-on gate), for "
    "CI test reports."
)


@dataclass
class Outcome:
    """A job's end as a pipeline sees it (``harden run`` has no job id)."""

    state: str
    job_id: str | None = None
    verdict: VerdictSummary | None = None
    checks: list[CheckResult] = field(default_factory=list)
    error: dict[str, Any] | None = None  # code, message, hint
    artifacts: dict[str, str] = field(default_factory=dict)  # name -> where it was written
    duration_s: float = 0.0
    failed_exit_code: int = EXIT_JOB_FAILED  # `harden run` refusing its input says 2

    @property
    def exit_code(self) -> int:
        if self.state != "succeeded":
            return self.failed_exit_code
        return EXIT_GATE if any(not c.passed for c in self.checks) else EXIT_OK

    def summary(self) -> dict[str, Any]:
        """The ``--json`` document."""
        return {
            "job_id": self.job_id,
            "state": self.state,
            "exit_code": self.exit_code,
            "gates_passed": all(c.passed for c in self.checks),
            "verdict": self.verdict.model_dump(mode="json") if self.verdict else None,
            "checks": [
                {"name": c.name, "passed": c.passed, "message": c.message} for c in self.checks
            ],
            "error": self.error,
            "artifacts": self.artifacts,
        }


def not_checked(gates: list[Gate]) -> list[CheckResult]:
    """The gates of a job that did not succeed: none passes (JUnit: skipped)."""
    return [CheckResult(gate.name, False, "the job did not succeed: no verdict") for gate in gates]


def junit_xml(outcome: Outcome, suite: str) -> bytes:
    """The JUnit XML of ``outcome``: suite ``suite``, one test case per check."""
    succeeded = outcome.state == "succeeded"
    failures = sum(not c.passed for c in outcome.checks) if succeeded else 0
    skipped = 0 if succeeded else len(outcome.checks)
    counts = {
        "tests": str(1 + len(outcome.checks)),
        "failures": str(failures),
        "errors": "0" if succeeded else "1",
        "skipped": str(skipped),
        "time": f"{outcome.duration_s:.3f}",
    }
    root = ET.Element("testsuites", {"name": "harden", **counts})
    testsuite = ET.SubElement(
        root,
        "testsuite",
        {
            "name": suite,
            **counts,
            "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
            "hostname": socket.gethostname(),
        },
    )
    properties = ET.SubElement(testsuite, "properties")
    for name, value in (
        ("job_id", outcome.job_id),
        ("state", outcome.state),
        ("verdict", outcome.verdict.label if outcome.verdict else None),
        ("method", outcome.verdict.method if outcome.verdict else None),
    ):
        if value is not None:
            ET.SubElement(properties, "property", {"name": name, "value": value})
    job = ET.SubElement(
        testsuite,
        "testcase",
        {"classname": "harden", "name": JOB_CHECK, "time": f"{outcome.duration_s:.3f}"},
    )
    if not succeeded:
        error = outcome.error or {}
        element = ET.SubElement(
            job,
            "error",
            {
                "type": str(error.get("code") or outcome.state),
                "message": str(error.get("message") or f"the job {outcome.state}"),
            },
        )
        element.text = str(error.get("hint") or "")
    for result in outcome.checks:
        case = ET.SubElement(
            testsuite,
            "testcase",
            {"classname": "harden.fail-on", "name": result.name, "time": "0"},
        )
        if not succeeded:
            ET.SubElement(case, "skipped", {"message": "the job did not succeed: no verdict"})
        elif not result.passed:
            failure = ET.SubElement(case, "failure", {"type": "gate", "message": result.message})
            failure.text = outcome.verdict.headline if outcome.verdict else result.message
    if outcome.verdict is not None:
        ET.SubElement(testsuite, "system-out").text = outcome.verdict.headline
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"


def write_sarif(path: Path, log: dict[str, Any]) -> None:
    """Write a SARIF log (core.report.sarif) to ``path``, its folder made if missing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(log, indent=2), encoding="utf-8")


def failed_sarif(outcome: Outcome) -> dict[str, Any]:
    """The SARIF log of a job that did not succeed (no results: nothing was analysed)."""
    from core.report.sarif import failed_sarif_log

    error = outcome.error or {}
    return failed_sarif_log(
        str(error.get("code") or outcome.state),
        str(error.get("message") or f"the job {outcome.state}"),
        error.get("hint"),
    )


def report(outcome: Outcome, *, as_json: bool, junit: Path | None, suite: str) -> int:
    """Write what was asked for (``--json`` on stdout, ``--junit`` to its file), say each tripped
    gate on stderr, and return the exit code."""
    if junit is not None:
        junit.parent.mkdir(parents=True, exist_ok=True)
        junit.write_bytes(junit_xml(outcome, suite))
    for result in outcome.checks:
        if outcome.state == "succeeded" and not result.passed:
            print(f"harden: --fail-on {result.name} tripped: {result.message}", file=sys.stderr)
    if as_json:
        print(json.dumps(outcome.summary(), indent=2))
    return outcome.exit_code


def ci_parameters() -> list[inspect.Parameter]:
    """``--fail-on``, ``--json``, ``--junit`` and ``--sarif`` as parameters of a generated
    signature (``harden run``'s, :mod:`cli.run_cmd`); ``harden submit`` declares the same options
    its own way."""
    kw = inspect.Parameter.KEYWORD_ONLY
    return [
        inspect.Parameter(
            "fail_on",
            kw,
            default=None,
            annotation=Annotated[list[str] | None, typer.Option("--fail-on", help=FAIL_ON_HELP)],
        ),
        inspect.Parameter(
            "json_output",
            kw,
            default=False,
            annotation=Annotated[bool, typer.Option("--json", help=JSON_HELP)],
        ),
        inspect.Parameter(
            "junit",
            kw,
            default=None,
            annotation=Annotated[Path | None, typer.Option(dir_okay=False, help=JUNIT_HELP)],
        ),
        inspect.Parameter(
            "sarif",
            kw,
            default=None,
            annotation=Annotated[Path | None, typer.Option(dir_okay=False, help=SARIF_HELP)],
        ),
    ]


def failed(error: Any, started: float, gates: list[Gate]) -> Outcome:
    """The outcome of a local run stopped by a HardenError: its input refused (status < 500,
    exit 2, as before gates existed) or the run itself failing (exit 1); no gate passes."""
    return Outcome(
        "failed",
        checks=not_checked(gates),
        error={"code": error.code, "message": error.message, "hint": error.hint or None},
        duration_s=time.monotonic() - started,
        failed_exit_code=EXIT_USAGE if error.status < 500 else EXIT_JOB_FAILED,
    )
