"""MLflow hand-off of a succeeded job: one run, the ONNX model registered as a new version.

The run holds the job spec as parameters; the clean accuracies, the robust accuracy per model,
attack and epsilon, the strongest attack's and the per-sample worst case per budget, and the
stage timings as metrics; report.json and report.html under ``report/``; and model.onnx logged
as an MLflow ONNX model with a signature read from its graph. The model is registered as a new
version of the target's registered model, tagged with the verdict, the method and the job id,
and the target's alias is moved to it (aliases and tags: MLflow's stages are deprecated).

Called after the job's files are stored: a hand-off that fails (server down, refused, MLflow
missing) becomes a warning on the job, never a failed job or a lost file.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from app.infra.mlflow_target import (
    HINT,
    MlflowTarget,
    TrackingUriRefused,
    check_target,
    resolve_target,
)
from app.infra.settings import Settings
from core.contract.mlflow_settings import MlflowSpec
from core.contract.spec import HardenSpec
from core.names import MODEL_CARD, MODEL_ONNX, REPORT_HTML, REPORT_JSON, REPORT_SARIF
from core.report.schema import Report, read_report

log = logging.getLogger(__name__)

# MLflow's fluent API keeps the tracking URI and the active run per process; one hand-off at a
# time (a worker process runs one job at a time anyway).
_LOCK = threading.Lock()
# Spec fields not logged as parameters: a webhook URL may carry a token in its query.
_PRIVATE_SPEC_FIELDS = ("webhook_url", "mlflow")
NOT_AUDITED = "not audited"


@dataclass(frozen=True)
class MlflowRecord:
    """What the hand-off left in MLflow (or why it did not), as stored on the job."""

    tracking_uri: str
    experiment: str
    registered_model: str
    alias: str | None  # None: not moved (the version regressed against the job's baseline)
    run_id: str | None = None
    model_version: str | None = None
    model_uri: str | None = None
    warning: str | None = None

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def job_handoff(
    spec: HardenSpec, settings: Settings, job_id: str, outputs: dict[str, Path]
) -> dict[str, Any] | None:
    """The MLflow record of a succeeded job (None when it is not handed over): its target from
    the spec and the settings, checked against the service's policy again (settings and DNS may
    have changed since submit), then :func:`hand_off`."""
    try:
        target = resolve_target(spec.mlflow, settings)
        if target is None:
            return None
        check_target(target, settings)
    except TrackingUriRefused as exc:
        warning = f"the MLflow hand-off was not attempted: {exc} ({HINT})"
        log.warning("job %s: %s", job_id, warning)
        section = spec.mlflow
        return {
            "tracking_uri": str(section.tracking_uri) if section and section.tracking_uri else "",
            "warning": warning,
        }
    return hand_off(
        target,
        job_id,
        outputs,
        timeout_s=settings.mlflow_timeout_s,
        max_retries=settings.mlflow_max_retries,
    ).as_json()


def local_handoff(section: MlflowSpec, outputs: dict[str, Path]) -> MlflowRecord:
    """`harden run`'s hand-off: the config's own tracking server (the user's machine and
    credentials, so no host policy), unset names and limits from the service's defaults (not
    read from the environment)."""
    defaults = {name: field.default for name, field in Settings.model_fields.items()}
    target = MlflowTarget(
        tracking_uri=str(section.tracking_uri or ""),
        experiment=section.experiment or defaults["mlflow_experiment"],
        registered_model=section.registered_model or defaults["mlflow_registered_model"],
        alias=section.alias,
        from_job=False,
    )
    if section.tracking_uri is None:
        warning = "not logged to MLflow: the mlflow section names no tracking_uri"
        return replace(_blank(target), warning=warning)
    return hand_off(
        target,
        "local",
        outputs,
        timeout_s=defaults["mlflow_timeout_s"],
        max_retries=defaults["mlflow_max_retries"],
    )


def hand_off(
    target: MlflowTarget,
    job_id: str,
    outputs: dict[str, Path],
    *,
    timeout_s: int,
    max_retries: int,
) -> MlflowRecord:
    """Log the job's outputs to ``target``; any failure comes back as the record's warning."""
    record = _blank(target)
    try:
        return _log(target, job_id, outputs, record, timeout_s=timeout_s, max_retries=max_retries)
    except ImportError as exc:
        return _failed(record, job_id, f"the worker has no MLflow client ({exc})", "harden[mlflow]")
    except Exception as exc:
        detail = f"{type(exc).__name__}: {exc}"
        return _failed(record, job_id, detail[:600], None)


def _blank(target: MlflowTarget) -> MlflowRecord:
    return MlflowRecord(
        tracking_uri=target.tracking_uri,
        experiment=target.experiment,
        registered_model=target.registered_model,
        alias=target.alias,
    )


def _failed(record: MlflowRecord, job_id: str, detail: str, install: str | None) -> MlflowRecord:
    fix = f"install {install} on the workers" if install else "check the tracking server"
    warning = (
        f"the MLflow hand-off to {record.tracking_uri} failed ({detail}); the job's files are "
        f"stored and downloadable as usual: {fix}, then log them by hand or run the job again"
    )
    log.warning("job %s: %s", job_id, warning)
    return replace(record, warning=warning)


def _log(
    target: MlflowTarget,
    job_id: str,
    outputs: dict[str, Path],
    record: MlflowRecord,
    *,
    timeout_s: int,
    max_retries: int,
) -> MlflowRecord:
    import mlflow
    import mlflow.onnx
    import onnx
    import onnxruntime
    from mlflow import MlflowClient

    # The client reads these on each request: a dead server fails the hand-off in seconds
    # instead of MLflow's default of 7 retries with exponential backoff (minutes).
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(timeout_s)
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = str(max_retries)
    os.environ["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"] = "1"
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"

    report = read_report(json.loads(Path(outputs[REPORT_JSON]).read_text()))
    verdict = report.verdict.label if report.verdict is not None else NOT_AUDITED
    method = report.method
    onnx_model = onnx.load(str(outputs[MODEL_ONNX]))
    with _LOCK:
        mlflow.set_tracking_uri(target.tracking_uri)
        mlflow.set_registry_uri(target.tracking_uri)
        experiment = mlflow.set_experiment(target.experiment)
        tags = {"harden.job_id": job_id, "harden.verdict": verdict, "harden.method": method}
        with mlflow.start_run(
            experiment_id=experiment.experiment_id, run_name=f"harden-{job_id[:12]}", tags=tags
        ) as run:
            mlflow.log_params(spec_params(report.spec))
            mlflow.log_metrics(report_metrics(report))
            # The model card and the SARIF findings go with the report (older jobs lack them).
            for document in (REPORT_JSON, REPORT_HTML, MODEL_CARD, REPORT_SARIF):
                if document in outputs:
                    mlflow.log_artifact(str(outputs[document]), artifact_path="report")
            info = mlflow.onnx.log_model(
                onnx_model,
                name="model",
                signature=onnx_signature(onnx_model),
                registered_model_name=target.registered_model,
                # Listed, not inferred: inference loads the model in a subprocess (seconds).
                pip_requirements=[
                    f"onnx=={onnx.__version__}",
                    f"onnxruntime=={onnxruntime.__version__}",
                ],
                metadata={"harden_job_id": job_id, "verdict": verdict, "method": method},
                # One self-contained file, as the job's own: a later job that compares against
                # this version (a baseline) reads it through an intake that refuses external data.
                save_as_external_data=False,
            )
        version = str(info.registered_model_version)
        client = MlflowClient(tracking_uri=target.tracking_uri, registry_uri=target.tracking_uri)
        tags = {"verdict": verdict, "method": method, "harden_job_id": job_id}
        tags.update(comparison_tags(report))
        for key, value in tags.items():
            client.set_model_version_tag(target.registered_model, version, key, value)
        # A version worse than the job's baseline beyond noise does not take the alias: the
        # baseline (the champion) stays where it is; the tags say why.
        regressed = tags.get("baseline_regression") == "true"
        if not regressed:
            client.set_registered_model_alias(target.registered_model, target.alias, version)
    log.info(
        "job %s logged to MLflow run %s, %s version %s (@%s)",
        job_id,
        run.info.run_id,
        target.registered_model,
        version,
        target.alias,
    )
    model_uri = f"models:/{target.registered_model}/{version}"
    record = replace(record, run_id=run.info.run_id, model_version=version, model_uri=model_uri)
    if regressed:
        return replace(
            record,
            alias=None,
            warning=f"the alias {target.alias!r} was not moved to version {version}: it is worse "
            f"than the baseline ({tags['baseline']}) beyond noise (see the version's "
            "baseline_difference tags and the report's comparison_to_baseline)",
        )
    return record


def comparison_tags(report: Report) -> dict[str, str]:
    """The version's tags from the report's comparison with its baseline (none without one):
    what it is, whether it regressed beyond noise, and each difference with its 95% interval."""
    comparison = report.comparison_to_baseline
    if comparison is None:
        return {}
    tags = {
        "baseline": comparison.baseline,
        "baseline_sha256": comparison.baseline_sha256,
        "baseline_regression": "true" if comparison.regressions(0) else "false",
    }
    for row in comparison.rows:
        name = "clean" if row.kind == "clean" else f"{row.norm}{_budget(row.epsilon)}"
        tags[f"baseline_difference/{name}"] = (
            f"{row.difference:+.4f} [{row.difference_low:+.4f}, {row.difference_high:+.4f}]"
        )
    return tags


def onnx_signature(model: Any) -> Any:
    """The MLflow signature of an ONNX model, read from its graph: each input's and output's
    name, element type and shape (-1 for a dynamic dimension such as the batch)."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, Schema, TensorSpec
    from onnx.helper import tensor_dtype_to_np_dtype

    def tensor(value: Any) -> TensorSpec:
        tensor_type = value.type.tensor_type
        shape = tuple(
            dim.dim_value if dim.HasField("dim_value") else -1 for dim in tensor_type.shape.dim
        )
        return TensorSpec(tensor_dtype_to_np_dtype(tensor_type.elem_type), shape, value.name)

    weights = {initializer.name for initializer in model.graph.initializer}
    inputs: list[ColSpec | TensorSpec] = [
        tensor(value) for value in model.graph.input if value.name not in weights
    ]
    outputs: list[ColSpec | TensorSpec] = [tensor(value) for value in model.graph.output]
    return ModelSignature(Schema(inputs), Schema(outputs))


def spec_params(spec: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """The resolved spec as flat MLflow parameters: nested fields dotted, lists as JSON."""
    params: dict[str, str] = {}
    for key, value in spec.items():
        if not prefix and key in _PRIVATE_SPEC_FIELDS:
            continue
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            params.update(spec_params(value, f"{name}."))
        else:
            params[name] = value if isinstance(value, str) else json.dumps(value)
    return params


def report_metrics(report: Report) -> dict[str, float]:
    """The report's numbers as MLflow metrics (names: README, "MLflow hand-off")."""
    metrics: dict[str, float] = {}
    for model, summary in report.models.items():
        metrics[f"clean_accuracy/{model}"] = summary.clean_accuracy
    if report.evaluation is not None:
        for model, robustness in report.evaluation.models.items():
            for attack in robustness.attacks:
                for point in attack.points:
                    name = f"robust_accuracy/{model}/{attack.attack}{_budget(point.epsilon)}"
                    metrics[name] = point.robust_accuracy
            for worst in robustness.worst_case:
                budget = f"{worst.norm}{_budget(worst.epsilon)}"
                metrics[f"worst_case_robust_accuracy/{model}/{budget}"] = worst.robust_accuracy
    for row in report.verdict.strongest if report.verdict is not None else []:
        budget = f"{row.norm}{_budget(row.epsilon)}"
        metrics[f"strongest_attack_robust_accuracy/uploaded/{budget}"] = (
            row.uploaded_robust_accuracy
        )
        metrics[f"strongest_attack_robust_accuracy/student/{budget}"] = row.student_robust_accuracy
    if report.certification is not None:
        for model, certified in report.certification.models.items():
            for at in certified.certified:
                name = f"certified_accuracy/{model}/l2{_budget(at.radius)}"
                metrics[name] = at.certified_accuracy
    if report.corruptions is not None:  # what hardening cost under common corruptions
        corruptions = report.corruptions
        for model, accuracy in corruptions.mean_corruption_accuracy.items():
            metrics[f"mean_corruption_accuracy/{model}"] = accuracy
        metrics["corruption_drop_points"] = corruptions.drop_points
        for per in corruptions.per_corruption:
            metrics[f"corruption_accuracy/uploaded/{per.corruption}"] = per.uploaded
            metrics[f"corruption_accuracy/student/{per.corruption}"] = per.student
    for stage, seconds in report.timings_s.items():
        metrics[f"time_s/{stage}"] = seconds
    return metrics


def _budget(epsilon: float | None) -> str:
    return "" if epsilon is None else f"/eps_{epsilon:g}"
