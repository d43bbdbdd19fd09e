"""Running one job: re-read it, run core.pipeline.run, store the artifacts, record the outcome.

Kept apart from the Celery task so tests can call it in-process. Idempotent: a redelivered job
that already ended returns; one whose artifacts are all stored and recorded is marked succeeded
without redoing the work.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded

from app.infra.artifacts import ArtifactStore
from app.infra.db import Job, JobState, utcnow
from app.infra.settings import Settings
from app.infra.shard_store import ShardStore
from app.infra.store import JobError, JobStore, is_terminal
from app.infra.tracing import record_stages
from core.audit.baseline_input import CACHE_ENTRY as BASELINE_CACHE_ENTRY
from core.audit.baseline_input import store_cache_entry
from core.contract.job_plan import progress_stages
from core.contract.spec import HardenSpec
from core.errors import AuditHandedOff, HardenError, JobCancelledError
from core.names import ARTIFACT_NAMES, ProgressFn
from worker.baseline_fetch import resolve_baseline
from worker.contained import Limits, run_contained
from worker.dataset_fetch import fetch_job_dataset
from worker.heartbeat import Heartbeat
from worker.mlflow_handoff import job_handoff
from worker.progress import CancelCheck, ProgressReporter
from worker.shards import InProcessShards, ShardHost, claimant_name, forget_shards

log = logging.getLogger(__name__)

Pipeline = Callable[..., object]


@dataclass
class WorkerServices:
    settings: Settings
    store: JobStore
    artifacts: ArtifactStore
    # Sends the helper tasks of a job's audit (worker/shards.py): ``help_audit(job_id, count)``
    # queues ``count`` of them (worker/tasks.py wires Celery); None sends none.
    help_audit: Callable[[str, int], None] | None = None


def _artifacts_complete(services: WorkerServices, job: Job) -> bool:
    recorded = job.artifacts or {}
    if not all(recorded.get(name) for name in ARTIFACT_NAMES):
        return False
    try:
        return all(services.artifacts.exists(job.id, name) for name in ARTIFACT_NAMES)
    except Exception:
        # The store cannot say (S3 unreachable): run the job, which records its own outcome,
        # rather than raise out of the task and leave it queued or running for good.
        log.warning("could not check the stored artifacts of job %s", job.id, exc_info=True)
        return False


def timeout_error(seconds: int) -> JobError:
    return JobError(
        "timeout",
        f"the job ran past the time limit of {seconds} s and was stopped",
        "use fewer epochs, fewer attacks or samples, or ask the operator to raise "
        "HARDEN_JOB_SOFT_TIME_LIMIT_S",
    )


def run_job(
    services: WorkerServices,
    job_id: str,
    *,
    pipeline: Pipeline | None = None,
) -> str:
    """Work on ``job_id``; return the state it ended in (or 'gone' when deleted)."""
    store, settings = services.store, services.settings
    job = store.get(job_id)
    if job is None:
        log.info("job %s no longer exists; nothing to do", job_id)
        return "gone"
    if is_terminal(job.state):
        log.info("job %s already %s; redelivery ignored", job_id, job.state)
        return str(job.state)
    if _artifacts_complete(services, job):
        store.mark_succeeded(job_id, job.artifacts)
        return JobState.succeeded
    if job.cancel_requested:
        store.mark_cancelled(job_id)
        return JobState.cancelled
    stale_before = utcnow() - timedelta(seconds=settings.heartbeat_timeout_s)
    if job.state == JobState.running and not _stalled(job, stale_before):
        # A duplicate delivery (the reaper's requeue and Redis' own redelivery of the dead
        # worker's message): the job runs under a live worker, which keeps it.
        log.info("job %s is running under a live worker; duplicate delivery ignored", job_id)
        return str(job.state)
    if job.attempts >= settings.max_attempts:
        # Each earlier attempt died without recording an outcome (OOM, hard limit, lost node).
        store.mark_failed(job_id, worker_lost_error(job.attempts))
        _delete_checkpoints(services, job_id)
        return JobState.failed
    attempt = store.mark_running(job_id, stale_before=stale_before)
    if attempt is None:
        return str((store.get(job_id) or job).state)

    # A folder per attempt: a worker that lost the job (frozen, then woken) must not delete
    # the files of the attempt that took it over. Earlier attempts' leftovers go.
    job_dir = Path(settings.work_dir) / job_id
    shutil.rmtree(job_dir, ignore_errors=True)
    work = job_dir / f"attempt-{attempt}"
    also_beat: list[Callable[[], object]] = []  # the claims on its audit's shards

    def beat() -> bool:
        alive = store.heartbeat(job_id, attempt)
        for extra in also_beat:
            try:
                extra()
            except Exception:  # a claim not renewed once is taken over only after the timeout
                log.warning("job %s: a heartbeat of its shard claims failed", job_id, exc_info=True)
        return alive

    heartbeat = Heartbeat(
        beat, interval_s=settings.heartbeat_interval_s, timeout_s=settings.heartbeat_timeout_s
    )
    try:
        with heartbeat:
            state = _execute(services, job, attempt, heartbeat, work, pipeline, also_beat)
        if is_terminal(state):  # this attempt recorded the end: its checkpoints have served
            _delete_checkpoints(services, job_id)
        return state
    finally:
        shutil.rmtree(work, ignore_errors=True)
        with contextlib.suppress(OSError):  # another attempt's folder is not ours to remove
            job_dir.rmdir()


def _delete_checkpoints(services: WorkerServices, job_id: str) -> None:
    """Every checkpoint file of the job, each attempt's (a later attempt's checkpoint of the same
    training replaced the earlier one in the job's row, not in the store), and the row's list."""
    job = services.store.get(job_id)
    if job is None:
        return
    try:
        names = [n for n in services.artifacts.job_names(job_id) if n.startswith("checkpoints/")]
        for name in names:
            services.artifacts.delete(job_id, name)
    except Exception:  # the retention sweep deletes what is left with the job's files
        log.warning("could not delete the checkpoints of job %s", job_id, exc_info=True)
    if job.checkpoints:
        services.store.clear_checkpoints(job_id)
    forget_shards(ShardStore(services.store.engine), services.artifacts, job_id)


@dataclass
class _Checkpointing:
    """The attempt's side of core/checkpoint.py: the earlier attempts' checkpoints fetched into
    the work folder to resume from, and each new one stored, fenced by the attempt."""

    services: WorkerServices
    job_id: str
    attempt: int
    heartbeat: Heartbeat
    work: Path

    def options(self, job: Job) -> dict[str, Any]:
        settings = self.services.settings
        if not settings.checkpoints:
            return {}
        options: dict[str, Any] = {
            "checkpoint_dir": self.work / "checkpoints",
            "checkpoint_every_s": settings.checkpoint_every_s,
        }
        fetched = self.work / "resume"
        attempts = _fetch_checkpoints(self.services, job, fetched, strict=False)
        if attempts:
            options.update(resume_from=fetched, resumed_attempt=max(attempts))
        return options

    def __call__(self, path: Path) -> None:
        """Store checkpoint ``path`` (a plain file the job's process wrote and may rewrite):
        copied first out of the child's reach, then stored under the attempt's own key."""
        if self.heartbeat.lost:
            return
        outgoing = self.work.parent / "outgoing" / path.name
        try:
            outgoing.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, outgoing)
            size = outgoing.stat().st_size
            sha = self.services.artifacts.put(
                self.job_id, f"checkpoints/{self.attempt}/{path.name}", outgoing, move=True
            )
            entry = {"sha256": sha, "bytes": size}
            self.services.store.record_checkpoint(
                self.job_id, path.name, entry, attempt=self.attempt
            )
        except Exception:  # a checkpoint not stored costs a longer restart, never the job
            log.warning("checkpoint %s of job %s not stored", path.name, self.job_id, exc_info=True)
        finally:
            outgoing.unlink(missing_ok=True)
            with contextlib.suppress(OSError):  # the job's folder is removed when it ends
                outgoing.parent.rmdir()


def worker_lost_error(attempts: int) -> JobError:
    return JobError(
        "worker_lost",
        f"the job's worker died {attempts} times before finishing",
        "the job may need more memory than a worker has: try a smaller batch_size or "
        "fewer evaluation samples",
    )


def _stalled(job: Job, stale_before: datetime) -> bool:
    last_sign_of_life = job.heartbeat_at or job.updated_at
    return last_sign_of_life < stale_before


def _execute(
    services: WorkerServices,
    job: Job,
    attempt: int,
    heartbeat: Heartbeat,
    work: Path,
    pipeline: Pipeline | None,
    also_beat: list[Callable[[], object]],
) -> str:
    """Run attempt ``attempt`` of ``job``; every write is fenced by the attempt, so a worker
    whose job was handed to another changes nothing. ``also_beat``: what the job's heartbeat
    keeps alive besides the job (its shard claims, added here)."""
    store, settings = services.store, services.settings
    job_id = job.id
    spec = HardenSpec.model_validate(job.spec)
    reporter = ProgressReporter(
        lambda stage, progress: store.set_progress(job_id, stage, progress, attempt=attempt),
        # The stages the job's ETA reads its progress back over (core/contract/job_plan.py).
        progress_stages(spec),
        interval_s=settings.progress_interval_s,
    )
    cancel = CancelCheck(
        lambda: heartbeat.lost or store.cancel_requested(job_id),
        interval_s=settings.progress_interval_s,
        deadline_s=settings.job_soft_time_limit_s,
    )
    try:
        model_path, dataset_path = _fetch_inputs(services, job, spec, work)
        baseline = resolve_baseline(
            job, spec, settings=settings, store=store, artifacts=services.artifacts, work=work
        )
        run = pipeline or _core_pipeline()
        args = (spec, model_path, dataset_path, work / "out")
        options = _device_options(settings)
        if settings.training_processes > 1:  # DDP (core.hardening.distributed); uncontained
            options["training_processes"] = settings.training_processes
        if baseline is not None:
            options["baseline"] = baseline
        checkpointing = _Checkpointing(services, job_id, attempt, heartbeat, work)
        options.update(checkpointing.options(job))
        shard_host = _job_shards(services, job, spec, attempt, work)
        if shard_host is not None:  # a shard taking longer than the timeout stays the job's
            also_beat.append(shard_host.beat)
        if shard_host is not None and not settings.contain_models:
            options.update(
                audit_shards=InProcessShards(shard_host, work), shard_dir=work / "shards"
            )
        result: Any
        if settings.contain_models:
            # The upload is code: it runs in a supervised, confined child (worker/contained.py).
            readable = _readable(dataset_path, work)
            if baseline is not None and baseline.cache_dir is not None:
                baseline.cache_dir.mkdir(parents=True, exist_ok=True)
                readable.append(baseline.cache_dir)  # read only: entries come back as outputs
            result = run_contained(
                run,
                args,
                options,
                work=work,
                readable=readable,
                on_progress=reporter,
                should_cancel=cancel,
                limits=_limits(settings),
                on_checkpoint=checkpointing,
                shards=shard_host,
            )
        else:
            if "checkpoint_dir" in options:
                options["on_checkpoint"] = checkpointing
            result = run(*args, on_progress=reporter, should_cancel=cancel, **options)
        record_stages(result.stages)  # the job's trace: a span per stage (no-op untraced)
        if heartbeat.lost:  # handed to another worker while the last stage ran
            return _lost_race(services, job_id)
        outputs: dict[str, Path] = dict(result.artifacts)
        entry = outputs.pop(BASELINE_CACHE_ENTRY, None)
        if entry is not None and baseline is not None and baseline.cache_dir is not None:
            store_cache_entry(Path(entry), baseline.cache_dir)
        shas: dict[str, str] = {}
        # The MLflow hand-off reads the files once they are stored: keep the work copies then.
        handoff = spec.mlflow is not None or settings.mlflow_tracking_uri is not None
        for name in ARTIFACT_NAMES:
            if name not in outputs:
                raise RuntimeError(f"the pipeline produced no {name}")
            shas[name] = services.artifacts.put(job_id, name, Path(outputs[name]), move=not handoff)
        # Deployment wiring: per-stage seconds for GET /metrics (app/web/observability.py).
        timings = result.report.timings_s
        if timings:
            store.record_timings(job_id, {str(k): float(v) for k, v in timings.items()})
        summary = result.report.verdict_summary()
        verdict = summary.model_dump(mode="json") if summary is not None else None
        # After the files are stored, so a failing MLflow server costs a warning, not the job.
        mlflow = job_handoff(spec, settings, job_id, outputs) if handoff else None
        recorded = store.record_artifacts(
            job_id, shas, verdict=verdict, mlflow=mlflow, attempt=attempt
        )
        if not recorded or not store.mark_succeeded(job_id, shas, attempt=attempt):
            return _lost_race(services, job_id)
        return JobState.succeeded
    except JobCancelledError:
        if cancel.timed_out:
            store.mark_failed(
                job_id, timeout_error(settings.job_soft_time_limit_s), attempt=attempt
            )
            return JobState.failed
        if store.get(job_id) is None or heartbeat.lost:
            log.warning("job %s is no longer this worker's (attempt %d); stopped", job_id, attempt)
            return _lost_race(services, job_id)
        store.mark_cancelled(job_id, attempt=attempt)
        return JobState.cancelled
    except SoftTimeLimitExceeded:
        # Raised into the task by Celery's soft time limit (prefork pool); the solo and thread
        # pools have none, there the CancelCheck deadline above stops the job.
        store.mark_failed(job_id, timeout_error(settings.job_soft_time_limit_s), attempt=attempt)
        return JobState.failed
    except HardenError as exc:
        log.info("job %s failed: %s", job_id, exc)
        store.mark_failed(job_id, JobError(exc.code, exc.message, exc.hint), attempt=attempt)
        return JobState.failed
    except Exception:
        log.exception("job %s failed with an unexpected error", job_id)
        store.mark_failed(
            job_id,
            attempt=attempt,
            error=JobError(
                "internal",
                "the worker failed unexpectedly while running the job",
                "retry the job; if it fails again, report the job id to the operators (the "
                "traceback is in the worker log)",
            ),
        )
        return JobState.failed


def _device_options(settings: Settings) -> dict[str, Any]:
    """How the pipeline uses the worker's device (core.pipeline.run's options)."""
    return {
        "device": settings.device,
        "precision": settings.training_precision,
        "channels_last": settings.channels_last,
        "cudnn_benchmark": settings.cudnn_benchmark,
    }


def _limits(settings: Settings) -> Limits:
    return Limits(
        stall_timeout_s=settings.model_stall_timeout_s,
        memory_limit_bytes=settings.model_memory_limit_mb * 2**20,
    )


def _readable(dataset_path: Path | None, work: Path) -> list[Path]:
    """What the confined child may read besides its folder: a dataset kept outside it."""
    return [dataset_path] if dataset_path and work not in dataset_path.parents else []


def _fetch_checkpoints(
    services: WorkerServices, job: Job, folder: Path, *, strict: bool
) -> list[int]:
    """The job's recorded checkpoints into ``folder``; the attempts that stored them. Not
    ``strict``: one that cannot be fetched is skipped (resuming is an optimisation: without it
    the training starts over)."""
    attempts = []
    for name, entry in (job.checkpoints or {}).items():
        saved_by = int(entry["attempt"])
        try:
            services.artifacts.fetch(job.id, f"checkpoints/{saved_by}/{name}", folder / name)
        except Exception:
            if strict:
                raise
            log.warning("checkpoint %s of job %s not fetched", name, job.id, exc_info=True)
            continue
        attempts.append(saved_by)
    return attempts


def _fetch_inputs(
    services: WorkerServices, job: Job, spec: HardenSpec, work: Path
) -> tuple[Path, Path | None]:
    """The job's model file and its dataset file (None for a builtin dataset), in ``work``."""
    model_path = services.artifacts.fetch(job.id, "inputs/model", work / "inputs" / "model")
    if job.dataset_name:
        dataset = services.artifacts.fetch(
            job.id, f"inputs/{job.dataset_name}", work / "inputs" / job.dataset_name
        )
        return model_path, dataset
    # A registered dataset, or an s3:// or https:// file (None for builtin ones).
    dataset_path = fetch_job_dataset(
        job,
        spec,
        settings=services.settings,
        artifacts=services.artifacts,
        engine=services.store.engine,
        work=work,
    )
    return model_path, dataset_path


def _job_shards(
    services: WorkerServices, job: Job, spec: HardenSpec, attempt: int, work: Path
) -> ShardHost | None:
    """The job's side of its audit's shards: it claims from the first up, and at its first
    claim sends helpers for the others (worker/shards.py)."""
    settings = services.settings
    if not spec.evaluation.enabled:
        return None

    def send_helpers(count: int) -> None:
        helpers = min(count - 1, settings.audit_helpers)
        if helpers <= 0 or services.help_audit is None:
            return
        # A helper replays the training from the job's checkpoints (stored while it ran, after
        # this attempt read the job): read afresh; without any, helpers would have nothing to
        # replay from and the job audits alone (HARDEN_CHECKPOINTS=false).
        fresh = services.store.get(job.id)
        if fresh is not None and fresh.checkpoints:
            services.help_audit(job.id, helpers)

    return ShardHost(
        ShardStore(services.store.engine),
        services.artifacts,
        job.id,
        claimant_name(f"job-{attempt}"),
        stale_after_s=settings.heartbeat_timeout_s,
        scratch=work.parent / "outgoing",
        on_first_claim=send_helpers,
    )


def help_audit(services: WorkerServices, job_id: str, *, pipeline: Pipeline | None = None) -> int:
    """Compute shards of running job ``job_id``'s audit for it (a helper, worker/shards.py):
    replay its training from its checkpoints, claim shards from the last down, store each.
    Returns the number of shards computed here (0: nothing was left, or the job ended)."""
    store, settings = services.store, services.settings
    job = store.get(job_id)
    if job is None or job.state != JobState.running or not job.checkpoints:
        return 0
    spec = HardenSpec.model_validate(job.spec)
    if not spec.evaluation.enabled:
        return 0
    claimant = claimant_name("helper")
    work = Path(settings.work_dir) / f"helper-{claimant.rsplit(':', 1)[-1]}" / "work"
    shards = ShardStore(store.engine)
    host = ShardHost(
        shards, services.artifacts, job_id, claimant, stale_after_s=settings.heartbeat_timeout_s,
        scratch=work.parent / "outgoing", descending=True, helper=True,
    )  # fmt: skip

    def alive() -> bool:
        host.beat()
        current = store.get(job_id)
        return current is not None and current.state == JobState.running

    heartbeat = Heartbeat(
        alive, interval_s=settings.heartbeat_interval_s, timeout_s=settings.heartbeat_timeout_s
    )
    cancel = CancelCheck(
        lambda: heartbeat.lost, interval_s=settings.progress_interval_s,
        deadline_s=settings.job_soft_time_limit_s,
    )  # fmt: skip
    try:
        with heartbeat:
            model_path, dataset_path = _fetch_inputs(services, job, spec, work)
            options = _device_options(settings) | {"checkpoint_dir": work / "checkpoints"}
            options["resume_from"] = work / "resume"
            _fetch_checkpoints(services, job, options["resume_from"], strict=True)
            run = pipeline or _core_pipeline()
            args = (spec, model_path, dataset_path, work / "out")
            quiet: ProgressFn = lambda stage, done, total: None  # noqa: E731 - the job's bar is its own
            if settings.contain_models:
                run_contained(
                    run, args, options, work=work, readable=_readable(dataset_path, work),
                    on_progress=quiet, should_cancel=cancel, limits=_limits(settings), shards=host,
                )  # fmt: skip
            else:
                options.update(audit_shards=InProcessShards(host, work), shard_dir=work / "shards")
                with contextlib.suppress(AuditHandedOff):
                    run(*args, on_progress=quiet, should_cancel=cancel, **options)
    except JobCancelledError:
        log.info("helper of job %s stopped: the job ended or this worker lost it", job_id)
    except (AuditHandedOff, HardenError):
        log.info("helper of job %s stopped", job_id, exc_info=True)
    finally:
        shutil.rmtree(work.parent, ignore_errors=True)
    return host.claimed


def _core_pipeline() -> Pipeline:
    from core.pipeline import run  # torch loads here, in the worker process only

    return run


def _lost_race(services: WorkerServices, job_id: str) -> str:
    """The job was deleted (or ended) while it ran: drop what was just stored for it."""
    job = services.store.get(job_id)
    if job is None:
        services.artifacts.delete_job(job_id)
        return "gone"
    return str(job.state)
