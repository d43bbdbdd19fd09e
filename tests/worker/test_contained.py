"""The job's pipeline in a supervised, confined child (worker/contained.py, worker/confine.py):
the real pipeline succeeds there; a looping model is cancelled or timed out within seconds and
the worker then runs the next job; a memory hog and a crash end as clear failures; and what a
hostile model tries from inside (other tenants' files, writes outside its folder, the network,
the worker's secrets) is denied."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest

from tests.worker import hostile_pipelines
from tests.worker.conftest import queue_job
from worker.confine import landlock_abi
from worker.runner import WorkerServices, run_job


@pytest.fixture
def contained(services: WorkerServices, monkeypatch) -> WorkerServices:
    settings = services.settings.model_copy(
        update={"contain_models": True, "model_stall_timeout_s": 60.0}
    )
    monkeypatch.setenv("HARDEN_DATABASE_URL", settings.database_url)  # a secret to keep in
    return WorkerServices(settings, services.store, services.artifacts)


def _with(services: WorkerServices, **update) -> WorkerServices:
    settings = services.settings.model_copy(update=update)
    return WorkerServices(settings, services.store, services.artifacts)


def test_the_real_pipeline_succeeds_contained(contained):
    job_id = queue_job(contained)
    assert run_job(contained, job_id) == "succeeded"
    job = contained.store.get(job_id)
    assert job.progress == 1.0 and set(job.timings_s) >= {"teacher", "student"}
    assert job.verdict is None  # no evaluation in the quick spec
    assert not (Path(contained.settings.work_dir) / job_id).exists()


@pytest.mark.skipif(landlock_abi() < 4, reason="needs Landlock ABI 4 (this kernel: see docs)")
def test_a_hostile_model_sees_only_its_own_job(contained):
    tmp = Path(contained.settings.work_dir).parent
    (tmp / "secret-of-another-tenant").write_bytes(b"the other tenant's model")
    job_id = queue_job(contained)
    assert run_job(contained, job_id, pipeline=hostile_pipelines.snoop) == "failed"
    job = contained.store.get(job_id)
    assert job.error_code == "observed"
    observed = json.loads(job.error_message)
    assert observed.pop("read_own_model").startswith("allowed")
    assert observed.pop("write_own_folder").startswith("allowed")
    assert all(outcome.startswith("denied") for outcome in observed.values()), observed
    assert not (tmp / "marker-from-model").exists()


def _cancel_when_running(services: WorkerServices, job_id: str) -> threading.Thread:
    def cancel() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            job = services.store.get(job_id)
            if job.state == "running" and job.progress > 0:
                services.store.request_cancel(job_id)
                return
            time.sleep(0.1)

    thread = threading.Thread(target=cancel, daemon=True)
    thread.start()
    return thread


def test_a_looping_model_is_cancelled_at_once_and_the_next_job_runs(contained):
    job_id = queue_job(contained)
    thread = _cancel_when_running(contained, job_id)
    started = time.monotonic()
    assert run_job(contained, job_id, pipeline=hostile_pipelines.loop_forever) == "cancelled"
    thread.join()
    assert time.monotonic() - started < 30
    assert run_job(contained, queue_job(contained)) == "succeeded"


def test_a_model_with_no_progress_fails_as_model_timeout(contained):
    quick = _with(contained, model_stall_timeout_s=2.0)
    job_id = queue_job(quick)
    started = time.monotonic()
    assert run_job(quick, job_id, pipeline=hostile_pipelines.loop_forever) == "failed"
    job = quick.store.get(job_id)
    assert job.error_code == "model_timeout" and "HARDEN_MODEL_STALL_TIMEOUT_S" in job.error_hint
    assert time.monotonic() - started < 30


def test_a_memory_hog_fails_as_model_memory(contained):
    bounded = _with(contained, model_memory_limit_mb=512)
    job_id = queue_job(bounded)
    assert run_job(bounded, job_id, pipeline=hostile_pipelines.hog_memory) == "failed"
    job = bounded.store.get(job_id)
    assert job.error_code == "model_memory" and "512 MiB" in job.error_message


def test_a_crash_of_the_runtime_is_a_clear_failure(contained):
    job_id = queue_job(contained)
    assert run_job(contained, job_id, pipeline=hostile_pipelines.crash) == "failed"
    job = contained.store.get(job_id)
    assert job.error_code == "model_crashed" and str(-11) in job.error_message
    assert os.getpid()  # the test process itself lives on


_SUPERVISOR = """
import sys
from pathlib import Path
from worker.contained import Limits, run_contained
from tests.worker import hostile_pipelines
import worker.contained as contained

started = contained._start
def report(child):
    started(child)
    print(child.pid, flush=True)
contained._start = report
work = Path(sys.argv[1])
run_contained(hostile_pipelines.loop_forever, (None, work / "m", None, work / "out"), {},
              work=work, readable=[], on_progress=lambda *a: None, should_cancel=lambda: False,
              limits=Limits(stall_timeout_s=600, memory_limit_bytes=2**33))
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie no one reaped yet is dead too.
    status = Path(f"/proc/{pid}/status")
    return status.exists() and "zombie" not in status.read_text()


def test_the_job_process_dies_with_a_killed_worker(tmp_path):
    import signal
    import subprocess
    import sys

    supervisor = subprocess.Popen(
        [sys.executable, "-c", _SUPERVISOR, str(tmp_path)],
        stdout=subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[2],
    )
    child = int(supervisor.stdout.readline())
    time.sleep(1.0)
    assert _alive(child)
    supervisor.send_signal(signal.SIGKILL)  # the worker process dies mid-job
    supervisor.wait()
    deadline = time.monotonic() + 20
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(child)


def test_a_link_left_as_an_output_is_not_followed(contained):
    tmp = Path(contained.settings.work_dir).parent
    (tmp / "secret-of-another-tenant").write_bytes(b"the other tenant's model")
    job_id = queue_job(contained)
    assert run_job(contained, job_id, pipeline=hostile_pipelines.link_out) == "failed"
    job = contained.store.get(job_id)
    assert job.error_code == "model_crashed" and "plain file" in job.error_message
    stored = Path(contained.settings.artifact_dir) / job_id
    assert not any(
        b"other tenant" in path.read_bytes() for path in stored.rglob("*") if path.is_file()
    )
