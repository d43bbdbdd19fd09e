"""The job runner around the real core.pipeline.run, on a trained TorchScript digits classifier
and a one-epoch spec (well under a second a run). Where a test steers the run (cancel, delete,
an unexpected error at a given step) it hooks the core's own progress reports through
tests.worker.real_pipeline.RecordingPipeline; the worker, the job store and the artifact folder
are the product's own. The Celery task around run_job runs in tests/integration."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from celery.exceptions import SoftTimeLimitExceeded

from app.infra.artifacts import sha256_file
from core.contract.spec import HardenSpec
from core.names import ARTIFACT_NAMES
from core.report.schema import Report
from tests.app.conftest import digits_like_npz, npz_bytes
from tests.worker.conftest import queue_job, worker_died
from tests.worker.real_pipeline import RecordingPipeline, digits_torchscript
from worker.runner import WorkerServices, run_job


def _stored_report(services: WorkerServices, job_id: str) -> Report:
    path = services.artifacts.local_path(job_id, "report.json")
    return Report.model_validate(json.loads(path.read_text(encoding="utf-8")))


def _attach_dataset(services: WorkerServices, job_id: str, data: bytes, tmp_path: Path) -> None:
    """What POST /harden does with a dataset file: store it (the job names it, queue_job's
    ``dataset_name``)."""
    (tmp_path / "dataset").write_bytes(data)
    services.artifacts.put(job_id, "inputs/dataset.npz", tmp_path / "dataset")


def test_success_stores_artifacts_and_records_sha256(services: WorkerServices):
    job_id = queue_job(services)
    pipeline = RecordingPipeline()
    assert run_job(services, job_id, pipeline=pipeline) == "succeeded"
    job = services.store.get(job_id)
    assert job.state == "succeeded" and job.progress == 1.0 and job.attempts == 1
    assert job.started_at and job.finished_at and job.finished_at >= job.started_at
    assert sorted(job.artifacts) == sorted(ARTIFACT_NAMES)
    for name, sha in job.artifacts.items():
        assert services.artifacts.exists(job_id, name)
        assert sha256_file(services.artifacts.local_path(job_id, name)) == sha
    [call] = pipeline.calls
    assert isinstance(call.spec, HardenSpec) and call.spec.distillation.student_epochs == 1
    assert (call.model, call.dataset, call.device) == (digits_torchscript(), None, None)
    # The stored files are the ones this run wrote: the report names the queued model and the
    # ONNX file by the digests the job recorded, and its stage seconds are the job's.
    report = _stored_report(services, job_id)
    assert report.input["model"]["sha256"] == job.model_sha256
    assert report.export.sha256 == job.artifacts["model.onnx"]
    assert job.timings_s == report.timings_s and set(report.timings_s) >= {"teacher", "student"}
    onnx.checker.check_model(str(services.artifacts.local_path(job_id, "model.onnx")))
    assert not (Path(services.settings.work_dir) / job_id).exists()


def test_the_default_pipeline_is_core_pipeline_run(services):
    job_id = queue_job(services)
    assert run_job(services, job_id) == "succeeded"
    job = services.store.get(job_id)
    assert _stored_report(services, job_id).export.sha256 == job.artifacts["model.onnx"]


def test_redelivered_finished_job_is_not_redone(services):
    job_id = queue_job(services)
    run_job(services, job_id)
    finished = services.store.get(job_id)
    again = RecordingPipeline()
    assert run_job(services, job_id, pipeline=again) == "succeeded"
    job = services.store.get(job_id)
    assert again.calls == [] and job.attempts == 1 and job.artifacts == finished.artifacts


def _dead_attempt_with_all_artifacts(services, tmp_path) -> tuple[str, dict[str, str]]:
    """A running job whose worker stored every artifact, recorded them, then died."""
    job_id = queue_job(services)
    worker_died(services, job_id)
    shas = {}
    for name in ARTIFACT_NAMES:
        (tmp_path / name).write_bytes(b"x")
        shas[name] = services.artifacts.put(job_id, name, tmp_path / name)
    services.store.record_artifacts(job_id, shas)
    return job_id, shas


def test_complete_artifacts_of_a_dead_attempt_are_not_redone(services, tmp_path):
    job_id, shas = _dead_attempt_with_all_artifacts(services, tmp_path)
    pipeline = RecordingPipeline()
    assert run_job(services, job_id, pipeline=pipeline) == "succeeded"
    assert pipeline.calls == [] and services.store.get(job_id).artifacts == shas


def test_a_store_that_cannot_answer_does_not_strand_the_job(services, tmp_path, monkeypatch):
    job_id, shas = _dead_attempt_with_all_artifacts(services, tmp_path)

    def unreachable(job_id: str, name: str) -> bool:
        raise ConnectionError("artifact store unreachable")

    # The redelivered job cannot learn whether its outputs are stored: it runs again instead
    # of raising out of the task and staying 'running' for good.
    monkeypatch.setattr(services.artifacts, "exists", unreachable)
    pipeline = RecordingPipeline()
    assert run_job(services, job_id, pipeline=pipeline) == "succeeded"
    assert len(pipeline.calls) == 1
    # The rerun's outputs replaced the dead attempt's, and the job records their digests.
    job = services.store.get(job_id)
    assert job.artifacts != shas
    for name, sha in job.artifacts.items():
        assert sha256_file(services.artifacts.local_path(job_id, name)) == sha


def test_running_job_redelivered_after_a_crash_counts_attempts(services):
    job_id = queue_job(services)
    worker_died(services, job_id)
    assert run_job(services, job_id) == "succeeded"
    assert services.store.get(job_id).attempts == 2


def test_too_many_attempts_fail_with_worker_lost(services):
    job_id = queue_job(services)
    for _ in range(3):
        worker_died(services, job_id)
    pipeline = RecordingPipeline()
    assert run_job(services, job_id, pipeline=pipeline) == "failed"
    job = services.store.get(job_id)
    assert job.error_code == "worker_lost" and "3 times" in job.error_message
    assert pipeline.calls == []


def test_cancel_during_run_stops_within_a_step(services):
    job_id = queue_job(services)

    def cancel_at_student(stage: str, done: int, total: int) -> None:
        if stage == "student" and done == 2:
            services.store.request_cancel(job_id)

    pipeline = RecordingPipeline(hook=cancel_at_student)
    assert run_job(services, job_id, pipeline=pipeline) == "cancelled"
    job = services.store.get(job_id)
    assert job.state == "cancelled" and job.artifacts == {}
    # progress_interval_s=0: the core reads the flag before its very next step, so no step
    # after the second student step was trained (one epoch is 11 steps on digits: 1,294 images
    # at batch 128, the other 143 held out to check the scratch student).
    assert pipeline.progress[-1] == ("student", 2, 11)
    assert services.artifacts.job_names(job_id) == ["inputs/model"]
    assert not (Path(services.settings.work_dir) / job_id).exists()


def test_cancelled_or_deleted_job_is_skipped(services):
    cancelled = queue_job(services)
    services.store.request_cancel(cancelled)
    pipeline = RecordingPipeline()
    assert run_job(services, cancelled, pipeline=pipeline) == "cancelled"
    assert run_job(services, "0" * 32, pipeline=pipeline) == "gone"
    assert pipeline.calls == []


@pytest.mark.parametrize(
    "when",
    [
        ("export", 0),  # the core's next cancel check stops the run
        ("report", 1),  # the core's last report: the run finishes, the worker stores its files
    ],
)
def test_job_deleted_while_running_leaves_no_files(services, when):
    job_id = queue_job(services)

    def delete(stage: str, done: int, total: int) -> None:
        if (stage, done) == when:
            services.store.delete(job_id)
            services.artifacts.delete_job(job_id)

    pipeline = RecordingPipeline(hook=delete)
    assert run_job(services, job_id, pipeline=pipeline) == "gone"
    assert when in [(stage, done) for stage, done, _ in pipeline.progress]
    assert len(pipeline.results) == (1 if when[0] == "report" else 0)
    assert services.store.get(job_id) is None
    assert services.artifacts.job_names(job_id) == []
    assert not (Path(services.settings.work_dir) / job_id).exists()


def test_harden_error_is_recorded_with_code_message_hint(services, tmp_path):
    """An uploaded dataset with a NaN image: the core's DatasetError, as the core words it."""
    rng = np.random.default_rng(0)
    x_test = rng.random((10, 1, 8, 8), dtype=np.float32)
    x_test[3, 0, 4, 4] = np.nan
    dataset = npz_bytes(
        x_train=rng.random((20, 1, 8, 8), dtype=np.float32),
        y_train=rng.integers(0, 10, 20),
        x_test=x_test,
        y_test=rng.integers(0, 10, 10),
    )
    job_id = queue_job(services, {"dataset": "upload"}, dataset_name="dataset.npz")
    _attach_dataset(services, job_id, dataset, tmp_path)
    pipeline = RecordingPipeline()
    assert run_job(services, job_id, pipeline=pipeline) == "failed"
    job = services.store.get(job_id)
    assert (job.error_code, job.error_message, job.error_hint) == (
        "invalid_dataset",
        "x_test contains NaN or infinite values",
        "clean or drop those images",
    )
    assert job.stage == "load" and job.artifacts == {} and len(pipeline.calls) == 1
    assert services.artifacts.job_names(job_id) == ["inputs/dataset.npz", "inputs/model"]
    assert not (Path(services.settings.work_dir) / job_id).exists()


def test_unexpected_error_is_internal_without_details(services, caplog):
    job_id = queue_job(services)

    def fail_at_student(stage: str, done: int, total: int) -> None:
        if stage == "student" and done == 1:
            raise RuntimeError("secret /srv/path detail")

    pipeline = RecordingPipeline(hook=fail_at_student)
    assert run_job(services, job_id, pipeline=pipeline) == "failed"
    job = services.store.get(job_id)
    assert job.error_code == "internal" and "secret" not in job.error_message
    assert job.stage == "student" and job.artifacts == {}
    assert "secret /srv/path detail" in caplog.text  # the traceback goes to the log
    assert services.artifacts.job_names(job_id) == ["inputs/model"]
    assert not (Path(services.settings.work_dir) / job_id).exists()


def test_deadline_fails_the_job_with_timeout(services):
    services.settings.job_soft_time_limit_s = 0
    job_id = queue_job(services)
    pipeline = RecordingPipeline()
    assert run_job(services, job_id, pipeline=pipeline) == "failed"
    job = services.store.get(job_id)
    assert job.error_code == "timeout" and "time limit" in job.error_message
    # The core's first cancel check (before loading anything) is already past the deadline.
    assert len(pipeline.calls) == 1 and pipeline.progress == []
    assert services.artifacts.job_names(job_id) == ["inputs/model"]


def test_celery_soft_time_limit_fails_the_job_with_timeout(services):
    job_id = queue_job(services)

    def soft_limit_at_student(stage: str, done: int, total: int) -> None:
        if stage == "student":
            raise SoftTimeLimitExceeded()

    pipeline = RecordingPipeline(hook=soft_limit_at_student)
    assert run_job(services, job_id, pipeline=pipeline) == "failed"
    job = services.store.get(job_id)
    assert job.error_code == "timeout" and "time limit" in job.error_message
    assert job.artifacts == {} and services.artifacts.job_names(job_id) == ["inputs/model"]
    assert not (Path(services.settings.work_dir) / job_id).exists()


def test_uploaded_dataset_is_given_to_the_pipeline(services, tmp_path):
    job_id = queue_job(services, {"dataset": "upload"}, dataset_name="dataset.npz")
    _attach_dataset(services, job_id, digits_like_npz(), tmp_path)
    pipeline = RecordingPipeline()
    assert run_job(services, job_id, pipeline=pipeline) == "succeeded"
    [call] = pipeline.calls
    assert call.model == digits_torchscript() and call.dataset.name == "dataset.npz"
    dataset = _stored_report(services, job_id).input["dataset"]
    assert dataset["reference"] == "upload"
    assert (dataset["train_samples"], dataset["test_samples"]) == (20, 10)
