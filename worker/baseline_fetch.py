"""Resolving a job's baseline (core/contract/baseline.py) to a file the pipeline can compare.

A previous job's model.onnx comes from the artifact store, only if that job is the same API key's
and succeeded; an MLflow champion is downloaded from the job's MLflow tracking server (the one
the hand-off would use, checked against the service's host policy again: app/infra/
mlflow_target.py), the ONNX file of the version its alias points at. Either file is hostile
input: the pipeline loads it through the same intake as an upload, in the confined child.

Each API key has its own baseline cache (core.audit.baseline: per-sample outcomes by the
baseline's sha256 and the audit settings) under ``work_dir/baseline-cache``: an entry is written
by a job's confined child, so one key's jobs never read another key's entries.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from app.infra.artifacts import ArtifactStore
from app.infra.db import Job, JobState
from app.infra.mlflow_target import TrackingUriRefused, check_target, resolve_target
from app.infra.settings import Settings
from app.infra.store import JobStore
from core.audit.baseline_input import Baseline
from core.contract.baseline import JobBaseline, MlflowBaseline
from core.contract.spec import HardenSpec
from core.errors import InvalidSpecError
from core.names import MODEL_ONNX


def baseline_cache_dir(settings: Settings, owner: str) -> Path:
    """This API key's baseline cache folder (a hash of the key's owner name, never the name)."""
    folder = hashlib.sha256(owner.encode()).hexdigest()[:24]
    return Path(settings.work_dir) / "baseline-cache" / folder


def resolve_baseline(
    job: Job,
    spec: HardenSpec,
    *,
    settings: Settings,
    store: JobStore,
    artifacts: ArtifactStore,
    work: Path,
) -> Baseline | None:
    """The job's baseline as a file under ``work``, or None when the spec names none. Raises
    InvalidSpecError (the job fails with its hint) when it cannot be had."""
    ref = spec.baseline
    if ref is None:
        return None
    cache = baseline_cache_dir(settings, job.owner)
    target = work / "inputs" / "baseline"
    if isinstance(ref, JobBaseline):
        previous = store.get(ref.job, owner=job.owner)
        if previous is None or previous.state != JobState.succeeded:
            raise InvalidSpecError(
                f"baseline job {ref.job} is not a succeeded job of this API key",
                hint="name the id of one of your succeeded jobs (GET /jobs), or another baseline",
            )
        path = artifacts.fetch(ref.job, MODEL_ONNX, target / MODEL_ONNX)
        return Baseline(path, f"job {ref.job}", cache)
    assert isinstance(ref, MlflowBaseline)
    return Baseline(_from_mlflow(ref, spec, settings, target), _mlflow_label(ref), cache)


def _mlflow_label(ref: MlflowBaseline) -> str:
    return f"mlflow model {ref.mlflow_model}@{ref.alias}"


def _from_mlflow(ref: MlflowBaseline, spec: HardenSpec, settings: Settings, target: Path) -> Path:
    hint = (
        "check the registered model's name and alias in MLflow, and that the job's "
        "mlflow.tracking_uri (or the service's HARDEN_MLFLOW_TRACKING_URI) names its server"
    )
    try:
        where = resolve_target(spec.mlflow, settings)
        if where is None:
            raise InvalidSpecError(
                f"the baseline {_mlflow_label(ref)} needs an MLflow tracking server", hint=hint
            )
        check_target(where, settings)
    except TrackingUriRefused as exc:
        message = f"the baseline's MLflow server is refused: {exc}"
        raise InvalidSpecError(message, hint=hint) from exc
    try:
        import mlflow.artifacts
        from mlflow import MlflowClient

        os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(settings.mlflow_timeout_s)
        os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = str(settings.mlflow_max_retries)
        client = MlflowClient(tracking_uri=where.tracking_uri, registry_uri=where.tracking_uri)
        version = client.get_model_version_by_alias(ref.mlflow_model, ref.alias)
        folder = mlflow.artifacts.download_artifacts(
            artifact_uri=client.get_model_version_download_uri(ref.mlflow_model, version.version),
            dst_path=str(target),
            tracking_uri=where.tracking_uri,
        )
    except InvalidSpecError:
        raise
    except Exception as exc:
        raise InvalidSpecError(
            f"the baseline {_mlflow_label(ref)} could not be downloaded ({type(exc).__name__}: "
            f"{str(exc)[:300]})",
            hint=hint,
        ) from exc
    # The logged ONNX model's file (mlflow.onnx names it model.onnx); a link is not followed.
    candidates = [p for p in Path(folder).rglob("*.onnx") if p.is_file() and not p.is_symlink()]
    if len(candidates) != 1:
        raise InvalidSpecError(
            f"the baseline {_mlflow_label(ref)} holds {len(candidates)} ONNX files, not one",
            hint="register the model with mlflow.onnx.log_model, as harden does",
        )
    if candidates[0].stat().st_size > settings.max_upload_bytes:
        raise InvalidSpecError(
            f"the baseline {_mlflow_label(ref)} is larger than an upload may be",
            hint="compare against a model no larger than HARDEN_MAX_UPLOAD_BYTES",
        )
    return candidates[0]
