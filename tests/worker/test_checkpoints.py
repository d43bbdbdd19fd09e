"""The worker's side of checkpoint and resume: each checkpoint stored under its attempt and
recorded fenced by it, the next attempt resuming from them, all of them deleted at the end, and
the job's process allowed to announce nothing but its own checkpoint files."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from app.infra.db import utcnow
from app.infra.settings import Settings
from core.pipeline import run
from core.report.schema import Report
from tests.worker import hostile_pipelines
from tests.worker.conftest import queue_job, worker_died
from worker.runner import WorkerServices, run_job

# Enough epochs that a stop in the student leaves a checkpoint of it behind.
_SPEC = {"teacher_epochs": 2, "student_epochs": 4}


class _WorkerLost(BaseException):
    """Stands for the worker's death: nothing of the job's outcome is recorded."""


def _with(services: WorkerServices, **update: Any) -> WorkerServices:
    settings: Settings = services.settings.model_copy(update=update)
    return WorkerServices(settings, services.store, services.artifacts)


def _dies_in_the_student(after_steps: int) -> Any:
    def pipeline(*args: Any, on_progress: Any, **options: Any) -> Any:
        def progress(stage: str, done: int, total: int) -> None:
            on_progress(stage, done, total)
            if stage == "student" and done >= after_steps:
                raise _WorkerLost

        return run(*args, on_progress=progress, **options)

    return pipeline


def _report(services: WorkerServices, job_id: str) -> Report:
    path = Path(services.settings.artifact_dir) / job_id / "report.json"
    return Report.model_validate_json(path.read_text())


def _checkpoint_files(services: WorkerServices, job_id: str) -> list[Path]:
    return sorted((Path(services.settings.artifact_dir) / job_id).glob("checkpoints/*/*"))


def test_a_job_whose_worker_died_resumes_from_its_checkpoints(services: WorkerServices) -> None:
    services = _with(services, checkpoint_every_s=0.0)
    whole = queue_job(services, _SPEC)
    assert run_job(services, whole) == "succeeded"

    job_id = queue_job(services, _SPEC)
    with pytest.raises(_WorkerLost):
        run_job(services, job_id, pipeline=_dies_in_the_student(after_steps=14))
    job = services.store.get(job_id)
    assert job is not None and job.state == "running" and job.attempts == 1
    assert set(job.checkpoints or {}) >= {
        "train-00-teacher.safetensors",
        "train-01-student.safetensors",
    }
    assert all(entry["attempt"] == 1 for entry in job.checkpoints.values())
    assert [p.parent.name for p in _checkpoint_files(services, job_id)] == ["1", "1"]

    services.store.heartbeat(job_id, 1, now=utcnow() - timedelta(hours=1))  # its worker died
    assert run_job(services, job_id) == "succeeded"
    resumed, uninterrupted = _report(services, job_id), _report(services, whole)
    assert any("of attempt 1" in note for note in resumed.notes)
    for role in ("uploaded", "teacher", "student"):
        assert resumed.models[role].clean_accuracy == uninterrupted.models[role].clean_accuracy
    assert resumed.distillation.student_loss_history == pytest.approx(
        uninterrupted.distillation.student_loss_history, rel=1e-6
    )
    # Checkpoints served their purpose: deleted from the store and the job's row.
    job = services.store.get(job_id)
    assert job is not None and not job.checkpoints
    assert _checkpoint_files(services, job_id) == []


def test_a_checkpoint_is_recorded_only_by_the_jobs_current_attempt(
    services: WorkerServices,
) -> None:
    job_id = queue_job(services, _SPEC)
    assert worker_died(services, job_id) == 1
    entry = {"sha256": "0" * 64, "bytes": 1}
    assert services.store.record_checkpoint(
        job_id, "train-00-teacher.safetensors", entry, attempt=1
    )
    assert worker_died(services, job_id) == 2  # taken over by another worker
    # The first attempt's worker, frozen then woken, writes nothing any more.
    assert not services.store.record_checkpoint(
        job_id, "train-01-student.safetensors", entry, attempt=1
    )
    job = services.store.get(job_id)
    assert job is not None and set(job.checkpoints or {}) == {"train-00-teacher.safetensors"}


def test_checkpoints_off_saves_none(services: WorkerServices) -> None:
    services = _with(services, checkpoints=False)
    job_id = queue_job(services, _SPEC)
    with pytest.raises(_WorkerLost):
        run_job(services, job_id, pipeline=_dies_in_the_student(after_steps=14))
    job = services.store.get(job_id)
    assert job is not None and not job.checkpoints
    assert _checkpoint_files(services, job_id) == []


@pytest.fixture
def contained(services: WorkerServices) -> WorkerServices:
    return _with(services, contain_models=True, model_stall_timeout_s=60.0)


def test_contained_checkpoints_reach_the_store(contained: WorkerServices) -> None:
    services = _with(contained, checkpoint_every_s=0.0)
    job_id = queue_job(services, _SPEC)
    stored: list[str] = []
    original = services.store.record_checkpoint

    def record(job: str, name: str, entry: dict[str, Any], *, attempt: int) -> bool:
        stored.append(name)
        return original(job, name, entry, attempt=attempt)

    services.store.record_checkpoint = record  # type: ignore[method-assign]
    assert run_job(services, job_id) == "succeeded"
    assert {"train-00-teacher.safetensors", "train-01-student.safetensors"} <= set(stored)
    assert _checkpoint_files(services, job_id) == []  # and deleted at the end


@pytest.mark.parametrize("pipeline", ["checkpoint_link", "checkpoint_escape"])
def test_the_job_process_cannot_pass_off_another_file_as_a_checkpoint(
    contained: WorkerServices, pipeline: str
) -> None:
    tmp = Path(contained.settings.work_dir).parent
    (tmp / "secret-of-another-tenant").write_bytes(b"the other tenant's model")
    job_id = queue_job(contained, _SPEC)
    assert run_job(contained, job_id, pipeline=getattr(hostile_pipelines, pipeline)) == "failed"
    job = contained.store.get(job_id)
    assert job is not None and job.error_code == "model_crashed"
    assert "not one" in (job.error_message or "")
    stored = Path(contained.settings.artifact_dir) / job_id
    assert not any(
        b"other tenant" in path.read_bytes() for path in stored.rglob("*") if path.is_file()
    )
