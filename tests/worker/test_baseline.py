"""A job compared against a baseline, through the worker: the MLflow champion downloaded from a
real `mlflow server` on loopback, a previous job's model.onnx from the artifact store, both run in
the confined child like any upload; the new version tagged with the comparison, the alias held
back when it regressed; a baseline attacked once per setting (the cache)."""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from app.infra.job_resource import job_out
from core.names import MODEL_ONNX, REPORT_JSON
from core.report.schema import Report
from tests.worker.conftest import queue_job
from tests.worker.real_pipeline import TINY_EVALUATION
from worker.baseline_fetch import baseline_cache_dir
from worker.runner import WorkerServices, run_job

mlflow = pytest.importorskip("mlflow")
pytestmark = pytest.mark.integration


def _contained(services: WorkerServices, **settings: Any) -> None:
    # The baseline is hostile input: these jobs run in the supervised, confined child.
    services.settings = services.settings.model_copy(
        update={"contain_models": True, "mlflow_max_retries": 0} | settings
    )


def _report(services: WorkerServices, job_id: str, tmp_path: Path) -> Report:
    path = services.artifacts.fetch(job_id, REPORT_JSON, tmp_path / job_id / REPORT_JSON)
    return Report.model_validate_json(path.read_text())


def test_a_job_compared_with_the_mlflow_champion(
    services: WorkerServices, tracking_uri: str, tmp_path: Path
) -> None:
    _contained(services, mlflow_allowed_hosts=tracking_uri.removeprefix("http://"))
    name = f"digits-{uuid.uuid4().hex[:8]}"
    section = {"tracking_uri": tracking_uri, "registered_model": name, "alias": "champion"}
    champion_job = queue_job(services, {"evaluation": TINY_EVALUATION, "mlflow": section})
    assert run_job(services, champion_job) == "succeeded"
    client = mlflow.MlflowClient(tracking_uri)
    assert client.get_model_version_by_alias(name, "champion").version == "1"

    baseline = {"mlflow_model": name, "alias": "champion"}
    job_id = queue_job(
        services, {"evaluation": TINY_EVALUATION, "mlflow": section, "baseline": baseline}
    )
    assert run_job(services, job_id) == "succeeded", _error(services, job_id)
    comparison = _report(services, job_id, tmp_path).comparison_to_baseline
    assert comparison is not None and comparison.baseline == f"mlflow model {name}@champion"
    assert [row.kind for row in comparison.rows] == ["clean", "robust", "robust"]
    # The new version carries the comparison; the champion moves only if it did not regress.
    resource = job_out(services.store.get(job_id)).mlflow
    assert resource is not None and resource.model_version == "2"
    tags = client.get_model_version(name, "2").tags
    assert tags["baseline"] == comparison.baseline
    assert tags["baseline_sha256"] == comparison.baseline_sha256
    clean = comparison.rows[0]
    assert tags["baseline_difference/clean"].startswith(f"{clean.difference:+.4f}")
    regressed = bool(comparison.regressions(0))
    assert tags["baseline_regression"] == str(regressed).lower()
    champion = client.get_model_version_by_alias(name, "champion").version
    assert champion == ("1" if regressed else "2")
    assert (resource.alias is None) == regressed
    # The verdict the CLI's gates read carries it.
    verdict = job_out(services.store.get(job_id)).verdict
    assert verdict is not None and verdict.baseline == comparison


def test_a_previous_job_as_baseline_is_attacked_once_per_setting(
    services: WorkerServices, tmp_path: Path
) -> None:
    _contained(services)
    first = queue_job(services, {"evaluation": TINY_EVALUATION})
    assert run_job(services, first) == "succeeded"
    onnx = services.artifacts.fetch(first, MODEL_ONNX, tmp_path / "first.onnx").read_bytes()

    spec = {"evaluation": TINY_EVALUATION, "baseline": {"job": first}}
    second, third = queue_job(services, spec), queue_job(services, spec)
    comparisons = []
    for job_id in (second, third):
        assert run_job(services, job_id) == "succeeded", _error(services, job_id)
        comparisons.append(_report(services, job_id, tmp_path).comparison_to_baseline)
    fresh, cached = comparisons
    assert fresh is not None and cached is not None
    assert fresh.baseline == f"job {first}"
    assert fresh.baseline_sha256 == hashlib.sha256(onnx).hexdigest()
    assert (fresh.cached, cached.cached) == (False, True)
    # The same baseline outcomes: the baseline's side of every row is the same.
    assert [r.baseline_accuracy for r in fresh.rows] == [r.baseline_accuracy for r in cached.rows]
    entries = list(baseline_cache_dir(services.settings, "alice").glob("*.json"))
    assert len(entries) == 1 and json.loads(entries[0].read_text())["clean"]


def test_another_keys_job_is_no_baseline(services: WorkerServices) -> None:
    theirs = queue_job(services, {"evaluation": TINY_EVALUATION})
    assert run_job(services, theirs) == "succeeded"
    with services.store.engine.begin() as connection:  # the job becomes another key's
        connection.exec_driver_sql("UPDATE jobs SET owner = 'bob' WHERE id = ?", (theirs,))
    job_id = queue_job(services, {"evaluation": TINY_EVALUATION, "baseline": {"job": theirs}})
    assert run_job(services, job_id) == "failed"
    job = services.store.get(job_id)
    assert job is not None and job.error_code == "invalid_spec"
    assert "not a succeeded job of this API key" in (job.error_message or "")


def _error(services: WorkerServices, job_id: str) -> str:
    job = services.store.get(job_id)
    return f"{job.error_code}: {job.error_message}" if job is not None else "gone"
