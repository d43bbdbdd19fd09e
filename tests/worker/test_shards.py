"""The worker's side of a sharded audit (worker/shards.py, app/infra/shard_store.py): claims
that one claimant wins, taken over only from a dead claimant, results through the artifact
store, the job meeting its helpers in the middle."""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from app.infra.db import utcnow
from app.infra.shard_store import DONE, ShardStore
from core.pipeline import run
from core.report.schema import Report
from tests.worker import hostile_pipelines
from tests.worker.conftest import queue_job
from tests.worker.real_pipeline import TINY_EVALUATION, without_seconds
from worker.runner import WorkerServices, help_audit, run_job
from worker.shards import ShardHost, forget_shards, result_name


def _host(services: WorkerServices, job_id: str, name: str, tmp_path: Path, **kw) -> ShardHost:
    return ShardHost(
        ShardStore(services.store.engine), services.artifacts, job_id, name,
        stale_after_s=30.0, scratch=tmp_path / f"scratch-{name}", **kw,
    )  # fmt: skip


def _result(tmp_path: Path, shard: int, content: bytes) -> Path:
    path = tmp_path / "out" / f"audit-{shard}.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def test_one_claimant_wins_each_shard_even_when_racing(
    services: WorkerServices, tmp_path: Path
) -> None:
    job_id = queue_job(services)
    shards = ShardStore(services.store.engine)
    wins: dict[str, list[int]] = {"a": [], "b": []}

    def claim_all(name: str) -> None:
        for shard in range(20):
            if shards.claim(job_id, shard, name, stale_before=utcnow() - timedelta(hours=1)):
                wins[name].append(shard)

    threads = [threading.Thread(target=claim_all, args=(name,)) for name in wins]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(wins["a"] + wins["b"]) == list(range(20))


def test_the_job_and_a_helper_meet_in_the_middle_and_the_job_waits_for_the_helpers_shard(
    services: WorkerServices, tmp_path: Path
) -> None:
    job_id = queue_job(services)
    sent: list[int] = []
    job = _host(services, job_id, "job", tmp_path, on_first_claim=sent.append)
    helper = _host(services, job_id, "helper", tmp_path, descending=True, helper=True)
    assert job.claim(4) == 0 and sent == [4]  # helpers sent at the first claim only
    assert helper.claim(4) == 3
    assert job.claim(4) == 1 and helper.claim(4) == 2
    assert job.claim(4) is None and helper.claim(4) is None
    inbox = tmp_path / "inbox"
    assert job.wait(2, inbox) == "pending"  # the helper is alive and on it
    helper.done(2, _result(tmp_path, 2, b"shard two"))
    assert job.wait(2, inbox) == "ready"
    assert (inbox / "audit-2.safetensors").read_bytes() == b"shard two"
    assert helper.wait(0, inbox) == "elsewhere"  # a helper never merges
    assert job.claimed == 2 and helper.claimed == 2 and sent == [4]


def test_a_dead_claimants_shard_is_computed_again_and_no_other(
    services: WorkerServices, tmp_path: Path
) -> None:
    job_id = queue_job(services)
    shards = ShardStore(services.store.engine)
    an_hour_ago = utcnow() - timedelta(hours=1)
    # A helper that died an hour ago holding shard 1; shard 2 finished by another.
    assert shards.claim(job_id, 1, "dead", stale_before=an_hour_ago)
    assert shards.claim(job_id, 2, "finished", stale_before=an_hour_ago)
    services.artifacts.put(job_id, result_name(2), _result(tmp_path, 2, b"two"))
    assert shards.finish(job_id, 2, "finished", "0" * 64)
    with services.store.engine.begin() as connection:
        connection.exec_driver_sql(
            "UPDATE audit_shards SET heartbeat_at = ? WHERE shard = 1", (an_hour_ago,)
        )
    job = _host(services, job_id, "job", tmp_path)
    claimed = [job.claim(3), job.claim(3), job.claim(3)]
    assert claimed == [0, 1, None]  # the dead claim taken over; the finished shard not redone
    assert job.wait(2, tmp_path / "inbox") == "ready"
    states = shards.states(job_id)
    assert states[1].claims == 2 and states[1].claimant == "job"
    assert states[2].state == DONE and states[2].claims == 1
    # The dead claimant, woken, cannot mark the shard done any more.
    assert not shards.finish(job_id, 1, "dead", "1" * 64)


def test_the_jobs_end_forgets_its_claims_and_results(
    services: WorkerServices, tmp_path: Path
) -> None:
    job_id = queue_job(services)
    host = _host(services, job_id, "job", tmp_path)
    assert host.claim(1) == 0
    host.done(0, _result(tmp_path, 0, b"zero"))
    assert result_name(0) in services.artifacts.job_names(job_id)
    forget_shards(ShardStore(services.store.engine), services.artifacts, job_id)
    assert ShardStore(services.store.engine).states(job_id) == {}
    assert not any(n.startswith("audit/") for n in services.artifacts.job_names(job_id))


def _evaluation(services: WorkerServices, job_id: str) -> dict:
    path = Path(services.settings.artifact_dir) / job_id / "report.json"
    report = Report.model_validate_json(path.read_text())
    assert report.evaluation is not None
    return without_seconds(report.evaluation.model_dump(mode="json"))  # type: ignore[return-value]


# Eight shards of five samples: a helper started at the job's first claim gets some of them.
_SHARDED = {
    "teacher_epochs": 1,
    "student_epochs": 1,
    "evaluation": TINY_EVALUATION | {"samples": 40, "samples_slow": 10, "shard_samples": 5},
}


def _slow_audit(*args: Any, on_progress: Any, **options: Any) -> Any:
    """The real pipeline, whose audit takes a little longer (time for a helper to join)."""

    def progress(stage: str, done: int, total: int) -> None:
        on_progress(stage, done, total)
        if stage == "evaluate":
            time.sleep(0.02)

    return run(*args, on_progress=progress, **options)


def test_a_helpers_shards_merge_into_the_audit_the_job_makes_alone(
    services: WorkerServices,
) -> None:
    services = replace(services, settings=services.settings.model_copy(update={"audit_helpers": 1}))
    alone = queue_job(services, _SHARDED)
    assert run_job(services, alone) == "succeeded"

    computed: list[int] = []
    threads: list[threading.Thread] = []

    def send_helpers(job_id: str, count: int) -> None:
        for _ in range(count):
            thread = threading.Thread(
                target=lambda: computed.append(help_audit(services, job_id)), daemon=True
            )
            thread.start()
            threads.append(thread)

    helped = queue_job(services, _SHARDED)
    assert run_job(replace(services, help_audit=send_helpers), helped, pipeline=_slow_audit) == (
        "succeeded"
    )
    for thread in threads:
        thread.join(60)
    assert len(threads) == 1 and computed and computed[0] >= 1, computed
    assert _evaluation(services, helped) == _evaluation(services, alone)
    # Its claims and shard files went with the job's end.
    assert ShardStore(services.store.engine).states(helped) == {}
    assert not any(n.startswith("audit/") for n in services.artifacts.job_names(helped))


def test_a_helper_for_a_job_that_ended_computes_nothing(services: WorkerServices) -> None:
    job_id = queue_job(services, _SHARDED)
    assert run_job(services, job_id) == "succeeded"
    assert help_audit(services, job_id) == 0


@pytest.fixture
def contained(services: WorkerServices) -> WorkerServices:
    update = {"contain_models": True, "model_stall_timeout_s": 60.0, "audit_helpers": 1}
    return replace(services, settings=services.settings.model_copy(update=update))


def test_contained_job_and_helper_share_the_audit(contained: WorkerServices) -> None:
    computed: list[int] = []
    threads: list[threading.Thread] = []

    def send_helpers(job_id: str, count: int) -> None:
        thread = threading.Thread(
            target=lambda: computed.append(help_audit(contained, job_id)), daemon=True
        )
        thread.start()
        threads.append(thread)

    job_id = queue_job(contained, _SHARDED)
    assert run_job(replace(contained, help_audit=send_helpers), job_id) == "succeeded"
    for thread in threads:
        thread.join(60)
    assert len(computed) == 1  # the helper ran, contained, and ended (whatever it computed)
    evaluation = _evaluation(contained, job_id)
    assert evaluation["samples"] == 40


@pytest.mark.parametrize("pipeline", ["shard_link", "shard_other_number"])
def test_the_job_process_cannot_hand_in_another_file_as_a_shard(
    contained: WorkerServices, pipeline: str
) -> None:
    tmp = Path(contained.settings.work_dir).parent
    (tmp / "secret-of-another-tenant").write_bytes(b"the other tenant's model")
    job_id = queue_job(contained, _SHARDED)
    assert run_job(contained, job_id, pipeline=getattr(hostile_pipelines, pipeline)) == "failed"
    job = contained.store.get(job_id)
    assert job is not None and job.error_code == "model_crashed", job.error_message
    stored = Path(contained.settings.artifact_dir) / job_id
    assert not any(
        b"other tenant" in path.read_bytes() for path in stored.rglob("*") if path.is_file()
    )


def test_the_jobs_heartbeat_keeps_its_shard_claims_through_a_long_shard(
    services: WorkerServices,
) -> None:
    """A shard that takes longer than the heartbeat timeout stays the job's: its heartbeat
    renews its claims, so no helper takes over a shard the job is computing."""
    update = {"heartbeat_interval_s": 0.05, "heartbeat_timeout_s": 0.6}
    services = replace(services, settings=services.settings.model_copy(update=update))
    taken: list[bool] = []
    job_id = queue_job(services, _SHARDED)

    def pipeline(*args: Any, on_progress: Any, **options: Any) -> Any:
        def progress(stage: str, done: int, total: int) -> None:
            on_progress(stage, done, total)
            if stage == "evaluate" and not taken:  # the job holds shard 0 now
                time.sleep(1.5)  # past the timeout
                stale_before = utcnow() - timedelta(seconds=0.6)
                shards = ShardStore(services.store.engine)
                taken.append(shards.claim(job_id, 0, "thief", stale_before=stale_before))

        return run(*args, on_progress=progress, **options)

    assert run_job(services, job_id, pipeline=pipeline) == "succeeded"
    assert taken == [False]


@pytest.mark.parametrize(("checkpoints", "sent"), [(True, 1), (False, 0)])
def test_helpers_are_sent_only_when_they_have_checkpoints_to_replay(
    services: WorkerServices, checkpoints: bool, sent: int
) -> None:
    update = {"audit_helpers": 1, "checkpoints": checkpoints}
    services = replace(services, settings=services.settings.model_copy(update=update))
    calls: list[tuple[str, int]] = []
    job_id = queue_job(services, _SHARDED)
    helped = replace(services, help_audit=lambda job, count: calls.append((job, count)))
    assert run_job(helped, job_id) == "succeeded"
    assert calls == [(job_id, 1)] * sent


class _Unreachable:
    """An artifact store whose reads and writes fail (S3 away)."""

    def fetch(self, *args: object, **kwargs: object) -> Path:
        raise OSError("the store is unreachable")

    def put(self, *args: object, **kwargs: object) -> str:
        raise OSError("the store is unreachable")


def test_a_store_that_fails_costs_a_shard_computed_again_not_the_job(
    services: WorkerServices, tmp_path: Path
) -> None:
    job_id = queue_job(services)
    helper = _host(services, job_id, "helper", tmp_path, descending=True, helper=True)
    assert helper.claim(2) == 1
    helper.done(1, _result(tmp_path, 1, b"one"))  # stored and marked done
    job = _host(services, job_id, "job", tmp_path)
    job.artifacts = _Unreachable()  # type: ignore[assignment]
    assert job.claim(2) == 0
    assert job.wait(1, tmp_path / "inbox") == "compute"  # not fetched: computed here
    job.done(0, _result(tmp_path, 0, b"zero"))  # not stored: no error, the claim stays open
    assert ShardStore(services.store.engine).states(job_id)[0].state == "claimed"
