"""The report's findings as SARIF 2.1.0, the format GitHub code scanning and other SAST
dashboards read (``report.sarif`` beside every job's report; ``harden run/submit --sarif``).

One rule per check, each with a stable id that never changes meaning (a retired check keeps its
id unused). A result's ``partialFingerprints`` hash the rule, the uploaded model's sha256, the
dataset and what in the check it is about (a gate's name, a note's wording without its numbers),
never the run's numbers, so a repeated run of the same model, dataset and check updates the same
alert instead of opening a new one. ``security-severity`` follows GitHub's bands (>= 7 high,
>= 4 medium, else low). Torch-free: the CLI builds the log from a downloaded report.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal, Protocol
from urllib.parse import quote

from core.report.comparison import REGRESSION_GATE, row_name
from core.report.schema import Report

SARIF_VERSION: Final = "2.1.0"
SARIF_SCHEMA_URI: Final = "https://json.schemastore.org/sarif-2.1.0.json"
FINGERPRINT_KEY: Final = "harden/v1"

Level = Literal["error", "warning", "note"]


@dataclass(frozen=True)
class Rule:
    """One check of the audit, as a SARIF ``reportingDescriptor``."""

    id: str
    name: str
    short: str
    full: str
    level: Level
    security_severity: float
    help: str

    def descriptor(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "shortDescription": {"text": self.short},
            "fullDescription": {"text": self.full},
            "help": {"text": self.help},
            "defaultConfiguration": {"level": self.level},
            "properties": {
                "security-severity": f"{self.security_severity:.1f}",
                "tags": ["security", "adversarial-robustness"],
                "precision": "high",
            },
        }


# Ids are stable: new checks take the next free id, a retired one keeps its id unused.
MASKED_GRADIENTS = Rule(
    "HARDEN001", "MaskedGradients", "The hardening only masks gradients",
    "The audit's verdict is 'masked': the gain, if any, shows only under attacks that gradient "
    "masking defeats, while attacks that see through it (logit-level, scale-invariant, "
    "gradient-free, transfer) still fool the hardened model.",
    "error", 8.0,
    "Do not deploy the model as robust. Use a method that holds up under strong attacks "
    "(methods: adversarial, trades, ard) and read the report's verdict evidence.",
)  # fmt: skip
GATE_TRIPPED = Rule(
    "HARDEN002", "GateTripped", "A --fail-on gate tripped",
    "A gate the pipeline set with --fail-on (a verdict label or a minimum robust accuracy at a "
    "budget) failed on this job.",
    "error", 7.0,
    "Read the gate's message: which verdict or robust accuracy tripped it. Harden with another "
    "method or budget, or change the gate if it asks for more than the threat model allows.",
)  # fmt: skip
REGRESSION = Rule(
    "HARDEN003", "RegressionAgainstBaseline", "Less robust than the baseline model",
    "The hardened model's clean or robust accuracy is below the baseline's (the production "
    "model) beyond sampling noise at some budget.",
    "error", 7.5,
    "Keep the baseline in production; compare both models in the report's comparison section.",
)  # fmt: skip
UNTRAINED_UPLOAD = Rule(
    "HARDEN004", "UntrainedUpload", "The uploaded model is near chance accuracy",
    "The uploaded model's clean accuracy on the test split is near chance (1 / number of "
    "classes): it is untrained or does not match the dataset (classes, input range, "
    "normalisation), and every robustness number measured on it is meaningless.",
    "error", 6.0,
    "Upload the trained model, and check the dataset, input_range and normalization of the spec "
    "against what the model was trained on.",
)  # fmt: skip
NO_MEASURABLE_GAIN = Rule(
    "HARDEN005", "NoMeasurableGain", "The hardening gave no measurable robustness",
    "The audit's verdict is 'no measurable gain': under the strongest attack at every budget "
    "the hardened model is not measurably more robust than the upload.",
    "warning", 5.0,
    "Try a larger training budget or another method, or audit more samples if the gain is "
    "within sampling noise.",
)  # fmt: skip
RUN_NOTE = Rule(
    "HARDEN006", "RunNote", "The run did something other than asked, or fell short",
    "A note of the run: something it did differently from what was asked (a fallback, an "
    "exporter's opset) or a shortfall worth a look (e.g. the student's accuracy far below the "
    "upload's).",
    "warning", 3.0,
    "Each note says what happened and what to change; the report lists them under 'notes'.",
)  # fmt: skip
ATTACK_NOTE = Rule(
    "HARDEN007", "AttackNote", "An attack of the audit was skipped or run differently",
    "A note of the audit on one attack: why it was skipped on a model or how it was run.",
    "note", 2.0,
    "Attacks that did not run weaken the verdict's evidence; the note says why and how to run it.",
)  # fmt: skip

RULES: Final = (
    MASKED_GRADIENTS,
    GATE_TRIPPED,
    REGRESSION,
    UNTRAINED_UPLOAD,
    NO_MEASURABLE_GAIN,
    RUN_NOTE,
    ATTACK_NOTE,
)


class GateOutcome(Protocol):
    """A --fail-on gate's outcome (``cli.gate.CheckResult`` is one)."""

    @property
    def name(self) -> str: ...
    @property
    def passed(self) -> bool: ...
    @property
    def message(self) -> str: ...


def _wording(text: str) -> str:
    """A note's text without its numbers: the same finding in a rerun has the same wording."""
    return re.sub(r"\d+(?:[.,]\d+)?(?:e[+-]?\d+)?", "#", text.lower())


def artifact_uri(path: str | Path) -> str:
    """A model path as a SARIF artifact URI: relative paths stay relative (code scanning resolves
    them against the repository root), percent-encoded; absolute ones as file:// URIs."""
    location = Path(path)
    if location.is_absolute():
        try:
            location = location.relative_to(Path.cwd())
        except ValueError:
            return location.as_uri()
    return quote(location.as_posix())


class _Findings:
    """The results of one log, fingerprinted by rule, model, dataset and check."""

    def __init__(self, uri: str, model_sha256: str, dataset: str) -> None:
        self.uri, self.model_sha256, self.dataset = uri, model_sha256, dataset
        self.results: list[dict[str, Any]] = []

    def add(self, rule: Rule, key: str, text: str, **properties: Any) -> None:
        identity = "\x1f".join((rule.id, self.model_sha256, self.dataset, key))
        result: dict[str, Any] = {
            "ruleId": rule.id,
            "ruleIndex": RULES.index(rule),
            "level": rule.level,
            "message": {"text": text},
            "locations": [{"physicalLocation": {"artifactLocation": {"uri": self.uri}}}],
            "partialFingerprints": {FINGERPRINT_KEY: hashlib.sha256(identity.encode()).hexdigest()},
        }
        if properties:
            result["properties"] = properties
        self.results.append(result)


def _driver(version: str) -> dict[str, Any]:
    return {
        "name": "harden",
        "version": version,
        "semanticVersion": version,
        "rules": [rule.descriptor() for rule in RULES],
    }


def _log(run: dict[str, Any]) -> dict[str, Any]:
    return {"$schema": SARIF_SCHEMA_URI, "version": SARIF_VERSION, "runs": [run]}


def sarif_log(
    report: Report,
    *,
    model_uri: str | Path | None = None,
    gates: Sequence[GateOutcome] = (),
) -> dict[str, Any]:
    """The SARIF 2.1.0 log of ``report``: the verdict, an untrained upload, the run's and the
    attacks' notes, and every tripped gate of ``gates``. ``model_uri`` is where the results
    point (the model file in the user's repository); by default the upload's file name."""
    model = report.input.get("model") or {}
    dataset = report.input.get("dataset") or {}
    reference = str(dataset.get("reference") or report.spec.get("dataset") or "")
    uri = artifact_uri(model_uri if model_uri is not None else model.get("file") or "model")
    findings = _Findings(uri, str(model.get("sha256") or report.export.sha256), reference)

    verdict = report.verdict
    if verdict is not None and verdict.label == "masked":
        signs = [sign.sign for sign in verdict.masking_signs if sign.detected]
        findings.add(
            MASKED_GRADIENTS, "verdict", verdict.headline,
            masking_signs=signs, paper_attacks_gain=verdict.paper_attacks_gain,
            evidence=verdict.evidence,
        )  # fmt: skip
    elif verdict is not None and verdict.label == "no measurable gain":
        findings.add(NO_MEASURABLE_GAIN, "verdict", verdict.headline, evidence=verdict.evidence)
    uploaded = report.models.get("uploaded")
    num_classes = dataset.get("num_classes")
    if report.untrained_upload and uploaded is not None and isinstance(num_classes, int):
        findings.add(
            UNTRAINED_UPLOAD, "uploaded",
            f"The uploaded model's clean accuracy is {100 * uploaded.clean_accuracy:.1f}% on "
            f"{uploaded.test_samples} test images of {num_classes} classes: chance is "
            f"{100 / num_classes:.1f}%. The model is untrained or does not match the dataset; "
            "its robustness numbers say nothing.",
            clean_accuracy=uploaded.clean_accuracy, num_classes=num_classes,
        )  # fmt: skip
    for note in report.notes:
        findings.add(RUN_NOTE, _wording(note), note[:1].upper() + note[1:])
    if report.evaluation is not None:
        for model_name, robustness in report.evaluation.models.items():
            for attack in robustness.attacks:
                if attack.note:
                    findings.add(
                        ATTACK_NOTE, f"{model_name}\x1f{attack.attack}\x1f{_wording(attack.note)}",
                        f"{attack.title} on the {model_name} model: {attack.note}",
                        model=model_name, attack=attack.attack,
                    )  # fmt: skip
    regression_gates = [g for g in gates if g.name.startswith(f"{REGRESSION_GATE}=")]
    for gate in gates:
        if not gate.passed:
            findings.add(
                REGRESSION if gate in regression_gates else GATE_TRIPPED, gate.name,
                f"--fail-on {gate.name} tripped: {gate.message}", gate=gate.name,
            )  # fmt: skip
    comparison = report.comparison_to_baseline
    if comparison is not None and not regression_gates:
        # No gate set the tolerance: every loss beyond noise is one (a gate's result says it).
        for row in comparison.regressions(0):
            findings.add(
                REGRESSION, row_name(row),
                f"Below the baseline ({comparison.baseline}) at {row_name(row)}: "
                f"{100 * row.difference:+.1f} points (paired 95% interval "
                f"{100 * row.difference_low:+.1f} to {100 * row.difference_high:+.1f}).",
                baseline=comparison.baseline, baseline_sha256=comparison.baseline_sha256,
            )  # fmt: skip

    version = report.software.get("harden") or "unknown"
    run: dict[str, Any] = {
        "tool": {"driver": _driver(version)},
        "invocations": [{"executionSuccessful": True, "startTimeUtc": report.created_at}],
        "results": findings.results,
        "properties": {
            "verdict": verdict.label if verdict is not None else "not audited",
            "method": report.method,
            "dataset": reference,
            "model_sha256": findings.model_sha256,
            "onnx_sha256": report.export.sha256,
        },
    }
    return _log(run)


def failed_sarif_log(
    code: str, message: str, hint: str | None = None, version: str = ""
) -> dict[str, Any]:
    """The SARIF log of a job that did not finish: the error as the invocation's notification and
    no ``results`` array (SARIF's way of saying the analysis did not complete; an empty one would
    say it found nothing)."""
    text = f"{code}: {message}" + (f" (hint: {hint})" if hint else "")
    return _log(
        {
            "tool": {"driver": _driver(version or "unknown")},
            "invocations": [
                {
                    "executionSuccessful": False,
                    "toolExecutionNotifications": [{"level": "error", "message": {"text": text}}],
                }
            ],
        }
    )
