"""``--fail-on``: the verdict as a CI gate, and the exit codes of ``harden``.

A gate is one of:

* ``masked``: trips when the verdict is ``masked`` (the gain, if any, is gradient masking);
* ``untrained``: trips when the upload's clean accuracy on the test split is at or near chance
  (untrained, or not the model of this dataset: every robustness number is noise);
* ``no-measurable-gain``: trips when the verdict is ``no measurable gain``;
* ``min-robust=VALUE@NORM:EPSILON``, e.g. ``min-robust=0.5@linf:0.3``, ``min-robust=50%@l2:1``
  or ``min-robust=0.4@linf:8/255``:
  trips when the hardened model's robust accuracy at that budget is below VALUE. The accuracy
  is the per-sample worst case over every attack where it was measured, else the strongest
  single attack's (the number the verdict weighs). The form needs no shell quoting (no ``<``);
* ``min-certified=VALUE@l2:RADIUS``, e.g. ``min-certified=0.5@l2:0.5``: trips when the hardened
  model's smoothed classifier is certified (randomized smoothing) right at that L2 radius on
  fewer than VALUE of the certified images;
* ``regression=POINTS``, e.g. ``regression=2``: trips when the hardened model is worse than the
  job's baseline (spec ``baseline``: a previous job or the MLflow champion) by more than POINTS
  percentage points beyond noise, in clean accuracy or in worst-case robust accuracy at any
  audited budget: "beyond noise" means the whole paired 95% interval of new minus baseline lies
  below -POINTS points (core.report.comparison). ``regression=0``: any regression beyond noise;
* ``corruption-drop=POINTS``, e.g. ``corruption-drop=5``: trips when hardening cost more than
  POINTS percentage points of accuracy under common corruptions, and more than its paired
  sampling noise (1.96 standard errors), in the mean over every corruption and severity or under
  any one corruption (averaged over its severities): the verdict's "weaker under" rule with
  POINTS as the margin.

A gate that cannot be checked (no verdict, a budget the evaluation did not audit) trips: a
pipeline that asked for a check must not pass without one. ``harden run`` and ``harden submit``
refuse such gates before any work where the spec already says so (exit 2): the evaluation turned
off, or budgets given that lack the gate's (budgets left to the threat model are known only once
the data is).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from core.contract.evaluation import EvaluationSpec
from core.report.comparison import REGRESSION_GATE, row_name
from core.report.summary import VerdictSummary

# The exit codes of `harden` (README: Exit codes; `harden --help`).
EXIT_OK = 0
EXIT_JOB_FAILED = 1  # the job failed, was cancelled or expired; or an operator command failed
EXIT_USAGE = 2  # bad options or input, a refused spec, a service that cannot be reached
EXIT_GATE = 3  # the job succeeded (artifacts written), but a --fail-on gate tripped

EXIT_CODES_HELP = (
    "Exit codes: 0 done (every --fail-on gate passed); 1 the job failed or was cancelled; "
    "2 bad options or input, or the service cannot be reached; 3 a --fail-on gate tripped (the "
    "job succeeded and its artifacts were written)."
)

FAIL_ON_HELP = (
    "Exit 3 when the verdict trips this gate: 'masked', 'no-measurable-gain', 'untrained' (the "
    "upload is at or near chance accuracy on the test split), or "
    "'min-robust=VALUE@NORM:EPSILON' (e.g. min-robust=0.5@linf:0.3: the hardened model's robust "
    "accuracy at L-inf 0.3, worst case over the attacks, below 0.5), or "
    "'min-certified=VALUE@l2:RADIUS' (e.g. min-certified=0.5@l2:0.5: the hardened model's "
    "certified accuracy at L2 radius 0.5 below 0.5), or 'regression=POINTS' (e.g. regression=2: "
    "worse than the job's baseline by more than 2 points beyond noise, clean or at any budget), "
    "or 'corruption-drop=POINTS' (e.g. corruption-drop=5: hardening cost more than 5 points "
    "beyond noise under common corruptions, on the mean or any one corruption). Repeat the "
    "option or separate gates with commas."
)

CORRUPTION_GATE = "corruption-drop"
UNTRAINED_GATE = "untrained"
_LABELS = {"masked": "masked", "no-measurable-gain": "no measurable gain"}
_NUMBER = r"\d+(?:\.\d+)?(?:[eE][+-]?\d+)?"
_THRESHOLD = re.compile(
    rf"min-(?P<kind>robust|certified)=(?P<value>{_NUMBER})(?P<percent>%?)@(?P<norm>linf|l2):"
    rf"(?P<epsilon>{_NUMBER})(?:/(?P<denominator>{_NUMBER}))?"
)
_POINTS = re.compile(rf"(?P<kind>{REGRESSION_GATE}|{CORRUPTION_GATE})=(?P<points>{_NUMBER})")


def same_budget(a: float, b: float) -> bool:
    """Whether two budgets are the same one (8/255 written as 0.0313725 is)."""
    return abs(a - b) <= 1e-6 * max(abs(a), abs(b))


class GateError(ValueError):
    """A --fail-on value that is no gate, or a gate this job's spec cannot check."""


@dataclass(frozen=True)
class Gate:
    """One --fail-on gate, as the user wrote it (``name``) and as it is checked."""

    name: str
    label: str | None = None  # the verdict label that trips it
    minimum: float | None = None  # the least robust accuracy that passes
    norm: str | None = None
    epsilon: float | None = None  # the budget, or the certified radius
    certified: bool = False  # min-certified: the certified accuracy, not the empirical one
    regression_points: float | None = None  # regression: the tolerated loss, in points
    corruption_points: float | None = None  # corruption-drop: the tolerated loss, in points


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one gate on one job: a JUnit test case, a line of the --json summary."""

    name: str
    passed: bool
    message: str


def parse_gates(values: list[str] | None) -> list[Gate]:
    """The gates of repeated or comma-separated ``--fail-on`` values, in order, once each."""
    gates: dict[str, Gate] = {}
    for value in values or []:
        for text in (part.strip() for part in value.split(",")):
            if text and text not in gates:
                gates[text] = _parse(text)
    return list(gates.values())


def _parse(text: str) -> Gate:
    if text in _LABELS:
        return Gate(text, label=_LABELS[text])
    if text == UNTRAINED_GATE:
        return Gate(text)
    by_points = _POINTS.fullmatch(text)
    if by_points is not None:
        points = float(by_points["points"])
        if points > 100:
            raise GateError(f"--fail-on {text!r}: the points must lie in 0..100")
        if by_points["kind"] == CORRUPTION_GATE:
            return Gate(text, corruption_points=points)
        return Gate(text, regression_points=points)
    match = _THRESHOLD.fullmatch(text)
    if match is None:
        raise GateError(
            f"--fail-on {text!r} is no gate: use masked, no-measurable-gain, untrained, "
            "min-robust=VALUE@NORM:EPSILON (e.g. min-robust=0.5@linf:0.3), "
            "min-certified=VALUE@l2:RADIUS (e.g. min-certified=0.5@l2:0.5), "
            "regression=POINTS (e.g. regression=2) or corruption-drop=POINTS (e.g. "
            "corruption-drop=5)"
        )
    value = float(match["value"]) / (100 if match["percent"] else 1)
    if not 0 <= value <= 1:
        raise GateError(f"--fail-on {text!r}: the robust accuracy must lie in 0..1 (or 0%..100%)")
    epsilon = float(match["epsilon"]) / float(match["denominator"] or 1)
    if not epsilon > 0:
        raise GateError(f"--fail-on {text!r}: the budget must be above 0")
    certified = match["kind"] == "certified"
    if certified and match["norm"] != "l2":
        raise GateError(
            f"--fail-on {text!r}: randomized smoothing certifies L2 radii only: use @l2:RADIUS"
        )
    return Gate(text, minimum=value, norm=match["norm"], epsilon=epsilon, certified=certified)


def check_evaluation(gates: list[Gate], evaluation: EvaluationSpec) -> None:
    """Refuse, before any work, gates the job's evaluation cannot answer: any gate when it is
    off, a threshold at a budget it does not audit."""
    if not gates:
        return
    if not evaluation.enabled:
        raise GateError(
            "--fail-on needs the robustness evaluation, which this job turns off "
            "(--no-evaluation or evaluation.enabled false): drop one or the other"
        )
    for gate in gates:
        if gate.norm is None or gate.epsilon is None or gate.certified:
            continue
        # Budgets left to the threat model are known only once the data is (checked then).
        audited = getattr(evaluation, f"epsilons_{gate.norm}") or []
        if audited and not any(same_budget(e, gate.epsilon) for e in audited):
            budgets = ", ".join(f"{e:g}" for e in audited)
            raise GateError(
                f"--fail-on {gate.name}: the evaluation does not audit {gate.norm} "
                f"ε={gate.epsilon:g} (it audits {budgets}); pick one of those or add it to "
                f"evaluation.epsilons_{gate.norm}"
            )


def check(gates: list[Gate], verdict: VerdictSummary | None) -> list[CheckResult]:
    """Each gate's outcome on ``verdict`` (None: the job has none, every gate trips)."""
    results = []
    for gate in gates:
        if verdict is None:
            results.append(CheckResult(gate.name, False, "the job has no verdict to check"))
        elif gate.label is not None:
            passed = verdict.label != gate.label
            results.append(CheckResult(gate.name, passed, f"verdict: {verdict.label}"))
        elif gate.name == UNTRAINED_GATE:
            results.append(_untrained(gate, verdict))
        elif gate.certified:
            results.append(_certified(gate, verdict))
        elif gate.regression_points is not None:
            results.append(_regression(gate, gate.regression_points, verdict))
        elif gate.corruption_points is not None:
            results.append(_corruption(gate, gate.corruption_points, verdict))
        else:
            results.append(_threshold(gate, verdict))
    return results


def _certified(gate: Gate, verdict: VerdictSummary) -> CheckResult:
    assert gate.minimum is not None and gate.epsilon is not None
    row = next((r for r in verdict.certified if same_budget(r.radius, gate.epsilon)), None)
    if row is None:
        certified = ", ".join(f"{r.radius:g}" for r in verdict.certified) or "none"
        return CheckResult(
            gate.name,
            False,
            f"no certified accuracy at L2 radius {gate.epsilon:g} (certified radii: "
            f"{certified}); add it to certification.radii (and certification.enabled true for a "
            "method not trained under noise)",
        )
    passed = row.student_certified_accuracy >= gate.minimum
    relation = ">=" if passed else "<"
    return CheckResult(
        gate.name,
        passed,
        f"certified accuracy at L2 radius {gate.epsilon:g}: {row.student_certified_accuracy:.4f} "
        f"{relation} {gate.minimum:g} (the hardened model's smoothed classifier)",
    )


def _regression(gate: Gate, points: float, verdict: VerdictSummary) -> CheckResult:
    comparison = verdict.baseline
    if comparison is None:
        return CheckResult(
            gate.name,
            False,
            "the job has no comparison with a baseline: name one in the spec's baseline "
            "({'job': ID} or {'mlflow_model': NAME, 'alias': 'champion'})",
        )
    worse = comparison.regressions(points)
    if not worse:
        return CheckResult(
            gate.name,
            True,
            f"no regression beyond {points:g} points against {comparison.baseline} "
            f"({len(comparison.rows)} comparisons, paired 95% intervals)",
        )
    described = "; ".join(
        f"{row_name(row)}: {100 * row.difference:+.1f} points "
        f"(95% interval {100 * row.difference_low:+.1f} to {100 * row.difference_high:+.1f})"
        for row in worse
    )
    return CheckResult(
        gate.name,
        False,
        f"worse than {comparison.baseline} by more than {points:g} points beyond noise: "
        f"{described}",
    )


def _untrained(gate: Gate, verdict: VerdictSummary) -> CheckResult:
    accuracy = verdict.clean_accuracy.uploaded
    if verdict.untrained_upload:
        return CheckResult(
            gate.name,
            False,
            f"the upload is at or near chance accuracy ({accuracy:.1%} on the test split): it is "
            "untrained or not a model of this dataset (classes, input range, normalization)",
        )
    return CheckResult(gate.name, True, f"the upload's clean accuracy: {accuracy:.1%}")


def _corruption(gate: Gate, points: float, verdict: VerdictSummary) -> CheckResult:
    cor = verdict.corruptions
    if cor is None:
        return CheckResult(
            gate.name,
            False,
            "the job did not measure accuracy under common corruptions: leave the spec's "
            "corruptions.enabled on (its default)",
        )
    worse = cor.drops_beyond(points)
    mean = (
        f"mean corruption accuracy {cor.uploaded:.1%} (upload) -> {cor.student:.1%} (hardened), "
        f"{-cor.drop_points:+.1f} points ± {cor.noise_points:.1f}"
    )
    if not worse:
        return CheckResult(
            gate.name, True, f"no loss beyond {points:g} points and noise under corruptions: {mean}"
        )
    described = "; ".join(
        f"{name}: {-drop:+.1f} points (± {noise:.1f})" for name, drop, noise in worse
    )
    return CheckResult(
        gate.name,
        False,
        f"hardening cost more than {points:g} points beyond noise under corruptions: {described}",
    )


def _threshold(gate: Gate, verdict: VerdictSummary) -> CheckResult:
    assert gate.minimum is not None and gate.epsilon is not None
    row = next(
        (r for r in verdict.robust if r.norm == gate.norm and same_budget(r.epsilon, gate.epsilon)),
        None,
    )
    if row is None:
        audited = ", ".join(f"{r.norm} {r.epsilon:g}" for r in verdict.robust) or "none"
        return CheckResult(
            gate.name,
            False,
            f"no robust accuracy was measured at {gate.norm} ε={gate.epsilon:g} (measured: "
            f"{audited}); name an audited budget, or add it to evaluation.epsilons_{gate.norm}",
        )
    measured = row.student_decisive
    passed = measured >= gate.minimum
    relation = ">=" if passed else "<"
    return CheckResult(
        gate.name,
        passed,
        f"robust accuracy at {gate.norm} ε={gate.epsilon:g}: {measured:.4f} {relation} "
        f"{gate.minimum:g} (hardened model, {row.student_attack} strongest)",
    )
