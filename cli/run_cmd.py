"""``harden run``: the whole pipeline on this machine, no server (its options:
:mod:`cli.run_options`)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import typer
from pydantic import ValidationError

from cli.gate import EXIT_CODES_HELP
from cli.run_options import FIXED, build_spec, command_signature
from cli.service_client import duration
from core.contract.job_plan import JobPlan, job_plan

if TYPE_CHECKING:
    from core.pipeline import RunResult  # torch: imported only for type checking here


# What each stage counts, where it is not training steps: the audit's model passes on one sample
# (a gradient-free query a third: core.contract.evaluation_cost.run_passes), certified images,
# corruption and severity pairs.
STAGE_UNITS = {
    "load": "part", "export": "part", "report": "part", "evaluate": "pass",
    "certify": "image", "corruptions": "cell",
}  # fmt: skip


def bar_interval_s() -> float:
    """Seconds between two redraws of a progress bar: live on a terminal; in a CI log (stderr
    not a terminal, where each redraw is kept) one line per stage every 30 s and at its end."""
    return 0.1 if sys.stderr.isatty() else 30.0


class _StageBars:
    """One tqdm bar per pipeline stage, on stderr; the pipeline's ``on_progress`` callback.

    A bar counts its stage's real units (training steps, attack passes, images) and takes a
    total that changes: a training that stops at convergence corrects its estimate every epoch.
    With the job's ``plan`` each bar also shows the whole job's ETA at the pace measured so far:
    the service's eta_s (the same core.contract.job_plan), the running stage at its own pace."""

    def __init__(
        self, plan: JobPlan | None = None, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.stage: str | None = None
        self.bar: Any = None
        self.plan = plan
        self._clock = clock
        self._started = clock()
        self._stage_of_start: str | None = None
        self._stage_started = self._started

    def eta_s(self, stage: str, done: int, total: int) -> float | None:
        """Seconds until the job ends at its pace so far (the running stage's own pace once it
        is under way: this process knows when it began); None without a plan or a pace yet."""
        if self.plan is None:
            return None
        now = self._clock()
        if stage != self._stage_of_start:
            self._stage_of_start, self._stage_started = stage, now
        fraction = done / total if total > 0 else 0.0
        return self.plan.remaining_s(
            stage, fraction, now - self._started, stage_elapsed_s=now - self._stage_started
        )

    def __call__(self, stage: str, done: int, total: int) -> None:
        from tqdm import tqdm

        if stage != self.stage:
            self.close()
            self.stage = stage
            self.bar = tqdm(
                total=total,
                desc=f"{stage:<11}",
                unit=STAGE_UNITS.get(stage, "step"),
                leave=True,
                mininterval=bar_interval_s(),
            )
        if self.bar.total != total:
            self.bar.total = total
        eta = self.eta_s(stage, done, total)
        if eta is not None:
            self.bar.set_postfix_str(f"job ETA {duration(eta)}", refresh=False)
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _device_type(device: str | None) -> str:
    """The type of the device the run will use ('cpu', 'cuda'): the job's plan sizes 'auto'
    sample counts by it, as the audit does. A device this machine lacks is the run's to refuse
    (its message names the fix); the plan then reads the CPU's counts."""
    from core.device import pick_device
    from core.errors import HardenError

    try:
        return pick_device(device).type
    except HardenError:
        return "cpu"


def _summary(result: RunResult) -> str:
    report = result.report
    models = report.models
    lines = ["", "harden run: done", ""]
    lines.append(f"  {'model':<10}{'accuracy':>10}{'mean |logit|':>15}")
    for name in ("uploaded", "teacher", "student"):
        if name in models:
            m = models[name]
            lines.append(f"  {name:<10}{m.clean_accuracy:>10.4f}{m.mean_abs_logit:>15.2f}")
    lines.append(f"  method: {report.method_title or report.method}")
    distillation = report.distillation
    if distillation is not None and models["uploaded"].mean_abs_logit > 0:
        ratio = models["student"].mean_abs_logit / models["uploaded"].mean_abs_logit
        lines.append(
            f"  student/uploaded mean |logit|: {ratio:.1f}x (T={distillation.temperature:g})"
        )
        lines.append(
            f"  training: teacher {distillation.teacher_epochs} epochs, student "
            f"{distillation.student_epochs} epochs ({distillation.student_steps} optimizer "
            f"steps; stopped: {distillation.student_stop}; "
            f"{distillation.student_parametrization})"
        )
        check = distillation.student_check
        if check is not None:
            outcome = (
                "fell short, deployed a student warm-started from the teacher"
                if check.fell_back
                else "kept"
            )
            finished = (
                ""
                if check.finished_accuracy is None
                else f" ({100 * check.finished_accuracy:.1f}% after its finish)"
            )
            lines.append(
                f"  scratch student check: {100 * check.scratch_accuracy:.1f}%{finished} on "
                f"{check.held_out_samples} held-out training images vs the upload's "
                f"{100 * check.upload_test_accuracy:.1f}% (allowed drop "
                f"{100 * check.max_drop:g} + {100 * check.standard_error:.1f} points): {outcome}"
            )
    robust = report.robust_training
    if robust is not None:
        lines.append(
            f"  training: {robust.epochs} epochs against {robust.norm} ε={robust.epsilon:g} "
            f"({'FGSM, random start' if robust.fast else f'PGD-{robust.steps}'}), kept epoch "
            f"{robust.best_epoch} (held-out PGD accuracy "
            f"{100 * max(robust.held_out_robust_accuracy, default=0):.0f}%)"
        )
    for other in report.comparison:
        label = other.verdict.label if other.verdict is not None else "not audited"
        lines.append(
            f"  compared: {other.method}: accuracy {other.student.clean_accuracy:.4f}, "
            f"verdict {label}, {other.training_s:.0f}s training"
        )
    export = report.export
    lines.append(
        f"  ONNX parity: max |onnxruntime - torch| = {export.max_abs_diff:.2e} "
        f"({export.max_rel_diff:.1e} of the largest |logit|), same class on "
        f"{100 * export.prediction_agreement:.0f}% of {export.parity_samples} samples "
        f"(opset {export.opset}, {export.exporter} exporter)"
    )
    lines.append("  timings: " + ", ".join(f"{k} {v:.1f}s" for k, v in report.timings_s.items()))
    if report.verdict is not None:
        verdict = report.verdict
        text = getattr(verdict, "summary", None) or getattr(verdict, "headline", None) or verdict
        lines.append(f"  verdict: {text}")
    step = report.summary.next_step
    lines.append(f"  next step: {step.action}" + (f"\n    {step.command}" if step.command else ""))
    for note in report.notes:
        lines.append(f"  note: {note}")
    for name, path in result.artifacts.items():
        lines.append(f"  {name}: {path}")
    return "\n".join(lines)


def _fail(message: str, hint: str = "", code: int = 2) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    if hint:
        typer.echo(f"hint: {hint}", err=True)
    return typer.Exit(code=code)


def run_command(**kwargs: Any) -> None:
    """Harden MODEL (defensive distillation unless --method says otherwise) and write model.onnx
    and the report to --out."""
    from cli.gate import GateError, check, check_evaluation, parse_gates
    from cli.outcome import Outcome, failed, failed_sarif, report, write_sarif
    from core.errors import HardenError

    fixed = {name: kwargs.pop(name) for name in FIXED}
    ci = {"as_json": fixed["json_output"], "junit": fixed["junit"], "suite": "harden run"}
    try:
        gates = parse_gates(fixed["fail_on"])
        spec = build_spec(fixed["dataset"], fixed["config"], kwargs, fixed["no_evaluation"])
        check_evaluation(gates, spec.evaluation)
    except GateError as error:
        raise _fail(str(error), "see `harden run --help`") from None
    except ValidationError as error:
        details = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'spec'}: {e['msg']}" for e in error.errors()
        )
        raise _fail(f"invalid options: {details}", "see `harden run --help`") from None
    except typer.BadParameter as error:
        raise _fail(str(error), "pass --config a JSON object of spec fields") from None

    if fixed["dataset_file"] is None and "dataset" not in spec.model_fields_set:
        from core.contract.dataset_ref import missing_dataset

        missing = missing_dataset()
        raise _fail(missing.message, missing.hint) from None

    from core.pipeline import run  # imported late: torch loads only when a run really starts

    bars = _StageBars(job_plan(spec, device_type=_device_type(fixed["device"])))
    started = time.monotonic()
    try:
        result = run(
            spec,
            fixed["model"],
            fixed["dataset_file"],
            fixed["out"],
            on_progress=bars,
            device=fixed["device"],
        )
    except HardenError as error:
        bars.close()
        outcome = failed(error, started, gates)
        if fixed["sarif"] is not None:
            write_sarif(fixed["sarif"], failed_sarif(outcome))
        raise _fail(error.message, error.hint, report(outcome, **ci)) from None
    finally:
        bars.close()
    typer.echo(_summary(result), err=fixed["json_output"])  # --json: stdout is the JSON's
    if spec.mlflow is not None and spec.mlflow.enabled:
        # As the service's workers do; a failure is a warning, the files and exit code stay.
        from worker.mlflow_handoff import local_handoff

        record = local_handoff(spec.mlflow, dict(result.artifacts))
        if record.warning:
            typer.echo(f"warning: {record.warning}", err=True)
        else:
            line = f"  mlflow: run {record.run_id}, {record.model_uri} (@{record.alias})"
            typer.echo(line, err=fixed["json_output"])
    verdict = result.report.verdict_summary()
    outcome = Outcome(
        "succeeded", verdict=verdict, checks=check(gates, verdict),
        artifacts={name: str(path) for name, path in result.artifacts.items()},
        duration_s=time.monotonic() - started,
    )  # fmt: skip
    if fixed["sarif"] is not None:
        from core.report.sarif import sarif_log

        log = sarif_log(result.report, model_uri=fixed["model"], gates=outcome.checks)
        write_sarif(fixed["sarif"], log)
    code = report(outcome, **ci)
    if code:
        raise typer.Exit(code)


def register(app: typer.Typer) -> None:
    """Add the ``run`` command to ``app``."""

    def run(**kwargs: Any) -> None:
        run_command(**kwargs)

    signature, annotations = command_signature()
    run.__signature__ = signature  # type: ignore[attr-defined]
    run.__annotations__ = annotations
    run.__doc__ = run_command.__doc__
    app.command("run", epilog=EXIT_CODES_HELP)(run)


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use the `harden run` command")
