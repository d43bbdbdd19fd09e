"""The job runner with a stand-in pipeline (the real one runs in tests/integration)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from app.schemas import ARTIFACT_NAMES
from core.errors import DatasetError, JobCancelledError
from core.spec import HardenSpec
from tests.worker.conftest import queue_job
from worker.runner import WorkerServices, run_job


@dataclass
class FakeResult:
    artifacts: dict[str, Path]


@dataclass
class FakePipeline:
    """Behaves like core.pipeline.run: reports progress, polls should_cancel every step."""

    steps: int = 5
    fail_with: Exception | None = None
    on_step: object = None
    calls: list[tuple] = field(default_factory=list)

    def __call__(self, spec, model_file, dataset, out_dir, *, on_progress, should_cancel, device):
        assert isinstance(spec, HardenSpec)
        self.calls.append((model_file.read_bytes(), dataset, device))
        for stage in ("load", "teacher", "soft_labels", "student", "export", "report"):
            for step in range(self.steps):
                if callable(self.on_step):
                    self.on_step(stage, step)
                if should_cancel():
                    raise JobCancelledError("cancelled")
                on_progress(stage, step + 1, self.steps)
            if self.fail_with is not None and stage == "student":
                raise self.fail_with
        out_dir.mkdir(parents=True)
        paths = {}
        for name in ARTIFACT_NAMES:
            paths[name] = out_dir / name
            paths[name].write_bytes(f"{name} contents".encode())
        return FakeResult(paths)


def test_success_stores_artifacts_and_records_sha256(services: WorkerServices):
    job_id = queue_job(services)
    pipeline = FakePipeline()
    assert run_job(services, job_id, pipeline=pipeline) == "succeeded"
    job = services.store.get(job_id)
    assert job.state == "succeeded" and job.progress == 1.0 and job.attempts == 1
    assert job.started_at and job.finished_at and job.finished_at >= job.started_at
    assert sorted(job.artifacts) == sorted(ARTIFACT_NAMES)
    for name, sha in job.artifacts.items():
        assert services.artifacts.exists(job_id, name)
        assert services.artifacts.put  # the stored file's digest matches the recorded one
        from app.artifacts import sha256_file

        assert sha256_file(services.artifacts.local_path(job_id, name)) == sha
    assert pipeline.calls == [(b"model bytes", None, None)]
    assert not (Path(services.settings.work_dir) / job_id).exists()


def test_redelivered_finished_job_is_not_redone(services):
    job_id = queue_job(services)
    run_job(services, job_id, pipeline=FakePipeline())
    again = FakePipeline()
    assert run_job(services, job_id, pipeline=again) == "succeeded"
    assert again.calls == [] and services.store.get(job_id).attempts == 1


def _dead_attempt_with_all_artifacts(services, tmp_path) -> tuple[str, dict[str, str]]:
    """A running job whose worker stored every artifact, recorded them, then died."""
    job_id = queue_job(services)
    services.store.mark_running(job_id)
    shas = {}
    for name in ARTIFACT_NAMES:
        (tmp_path / name).write_bytes(b"x")
        shas[name] = services.artifacts.put(job_id, name, tmp_path / name)
    services.store.record_artifacts(job_id, shas)
    return job_id, shas


def test_complete_artifacts_of_a_dead_attempt_are_not_redone(services, tmp_path):
    job_id, shas = _dead_attempt_with_all_artifacts(services, tmp_path)
    pipeline = FakePipeline()
    assert run_job(services, job_id, pipeline=pipeline) == "succeeded"
    assert pipeline.calls == [] and services.store.get(job_id).artifacts == shas


def test_a_store_that_cannot_answer_does_not_strand_the_job(services, tmp_path, monkeypatch):
    job_id, shas = _dead_attempt_with_all_artifacts(services, tmp_path)

    def unreachable(job_id: str, name: str) -> bool:
        raise ConnectionError("artifact store unreachable")

    # The redelivered job cannot learn whether its outputs are stored: it runs again instead
    # of raising out of the task and staying 'running' for good.
    monkeypatch.setattr(services.artifacts, "exists", unreachable)
    pipeline = FakePipeline()
    assert run_job(services, job_id, pipeline=pipeline) == "succeeded"
    assert len(pipeline.calls) == 1


def test_running_job_redelivered_after_a_crash_counts_attempts(services):
    job_id = queue_job(services)
    services.store.mark_running(job_id)  # first worker took it, then died
    assert run_job(services, job_id, pipeline=FakePipeline()) == "succeeded"
    assert services.store.get(job_id).attempts == 2


def test_too_many_attempts_fail_with_worker_lost(services):
    job_id = queue_job(services)
    for _ in range(3):
        services.store.mark_running(job_id)
    pipeline = FakePipeline()
    assert run_job(services, job_id, pipeline=pipeline) == "failed"
    job = services.store.get(job_id)
    assert job.error_code == "worker_lost" and "3 times" in job.error_message
    assert pipeline.calls == []


def test_cancel_during_run_stops_within_a_step(services):
    job_id = queue_job(services)
    seen = []

    def cancel_at_student(stage, step):
        seen.append((stage, step))
        if stage == "student" and step == 2:
            services.store.request_cancel(job_id)

    assert run_job(services, job_id, pipeline=FakePipeline(on_step=cancel_at_student)) == (
        "cancelled"
    )
    job = services.store.get(job_id)
    assert job.state == "cancelled" and job.artifacts == {}
    # progress_interval_s=0: the flag is read at the very next step.
    assert seen[-1] == ("student", 2)
    assert services.artifacts.job_names(job_id) == ["inputs/model"]


def test_cancelled_or_deleted_job_is_skipped(services):
    cancelled = queue_job(services)
    services.store.request_cancel(cancelled)
    pipeline = FakePipeline()
    assert run_job(services, cancelled, pipeline=pipeline) == "cancelled"
    assert run_job(services, "0" * 32, pipeline=pipeline) == "gone"
    assert pipeline.calls == []


def test_job_deleted_while_running_leaves_no_files(services):
    job_id = queue_job(services)

    def delete_during_export(stage, step):
        if stage == "export" and step == 0:
            services.store.delete(job_id)
            services.artifacts.delete_job(job_id)

    assert run_job(services, job_id, pipeline=FakePipeline(on_step=delete_during_export)) == "gone"
    assert services.artifacts.job_names(job_id) == []


def test_harden_error_is_recorded_with_code_message_hint(services):
    job_id = queue_job(services)
    error = DatasetError("x_test has NaN values", hint="clean the array")
    assert run_job(services, job_id, pipeline=FakePipeline(fail_with=error)) == "failed"
    job = services.store.get(job_id)
    assert (job.error_code, job.error_message, job.error_hint) == (
        "invalid_dataset",
        "x_test has NaN values",
        "clean the array",
    )
    assert job.stage == "student"


def test_unexpected_error_is_internal_without_details(services, caplog):
    job_id = queue_job(services)
    pipeline = FakePipeline(fail_with=RuntimeError("secret /srv/path detail"))
    assert run_job(services, job_id, pipeline=pipeline) == "failed"
    job = services.store.get(job_id)
    assert job.error_code == "internal" and "secret" not in job.error_message
    assert "secret /srv/path detail" in caplog.text  # the traceback goes to the log


def test_deadline_fails_the_job_with_timeout(services):
    services.settings.job_soft_time_limit_s = 0
    job_id = queue_job(services)
    assert run_job(services, job_id, pipeline=FakePipeline()) == "failed"
    job = services.store.get(job_id)
    assert job.error_code == "timeout" and "time limit" in job.error_message


def test_uploaded_dataset_is_given_to_the_pipeline(services, tmp_path):
    job_id = queue_job(services, {"dataset": "upload"})
    (tmp_path / "d").write_bytes(b"npz")
    services.artifacts.put(job_id, "inputs/dataset.npz", tmp_path / "d")
    with services.store.session() as session:
        from app.db import Job

        session.get(Job, job_id).dataset_name = "dataset.npz"
        session.commit()
    pipeline = FakePipeline()
    run_job(services, job_id, pipeline=pipeline)
    assert pipeline.calls[0][1].name == "dataset.npz"
