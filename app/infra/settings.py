"""Service settings, read from ``HARDEN_*`` environment variables (pydantic-settings).

Only app/ and worker/ read settings; the core gets plain arguments.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

EMBEDDED_BROKER_URL = "sqla+sqlite:///var/broker.db"
# Unset HARDEN_VISIBILITY_TIMEOUT_S: the hard time limit plus this margin.
VISIBILITY_MARGIN_S = 600


class Settings(BaseSettings):
    """Everything the API and the workers can be configured with."""

    model_config = SettingsConfigDict(env_prefix="HARDEN_", extra="ignore")

    database_url: str = Field(
        "sqlite:///var/harden.db",
        description="SQLAlchemy URL of the job store, e.g. postgresql+psycopg://user@host/db.",
    )
    broker_url: str = Field(
        EMBEDDED_BROKER_URL,
        description="Celery broker: redis://host:6379/0 in production; the default needs no "
        "server.",
    )
    queue: str = Field("harden", description="Celery queue the jobs go through.")
    max_attempts: int = Field(
        3, ge=1, description="A job whose worker died this many times fails ('worker_lost')."
    )
    visibility_timeout_s: int | None = Field(
        None,
        ge=1,
        description=(
            "Redis broker: an unacknowledged job is redelivered after this long, so a killed "
            "worker's job is not lost. Must exceed the hard time limit (job_time_limit_s), or "
            "a job still running is handed to a second worker; unset: job_time_limit_s + 600."
        ),
    )
    heartbeat_interval_s: float = Field(
        10.0,
        gt=0,
        description="How often the worker running a job records that it is alive (heartbeat).",
    )
    heartbeat_timeout_s: float = Field(
        60.0,
        gt=0,
        description=(
            "A running job whose heartbeat is older than this lost its worker: the reaper "
            "queues it again (counting HARDEN_MAX_ATTEMPTS). A worker that cannot record its "
            "heartbeat for half of this stops the job itself, so two never run it at once. "
            "At least 3 heartbeat intervals."
        ),
    )
    reaper_interval_s: float = Field(
        30.0,
        gt=0,
        description="How often the reaper looks for running jobs whose heartbeat stopped "
        "(Celery beat, maintenance worker).",
    )
    artifact_store: Literal["local", "s3"] = "local"
    artifact_dir: Path = Field(Path("var/artifacts"), description="LocalStore root folder.")
    s3_bucket: str = ""
    s3_prefix: str = "harden/"
    s3_endpoint_url: str | None = None
    upload_dir: Path = Field(Path("var/uploads"), description="Scratch space for uploads.")
    work_dir: Path = Field(Path("var/work"), description="Worker scratch space.")
    max_upload_bytes: int = Field(
        512 * 1024 * 1024, ge=1, description="Largest model or dataset upload accepted (413 past)."
    )
    max_evaluation_steps: int = Field(
        100_000_000,
        ge=1,
        description=(
            "Largest robustness evaluation a job may ask for, in worst-case attack steps "
            "(core/contract/evaluation_cost.py: one model pass on one sample, every attack at its "
            "full "
            "budget on both models). The default job needs about 1.4 million; AutoAttack on "
            "1,000 samples about 41 million. Past it, POST /harden answers 422."
        ),
    )
    # --- quotas and recovery (issue 25: app/web/submit.py, worker/reaper.py, worker/tasks.py) ---
    max_training_steps: int = Field(
        1_000_000,
        ge=1,
        description=(
            "Largest training a job may ask for, in worst-case training steps (core/"
            "training_cost.py: one forward and backward pass of one model over one batch, the "
            "attack iterations of the methods training against attacks included; a dataset of "
            "unknown size is charged as builtin:mnist's 4,000 training images). The default job "
            "needs at most 32,256 (builtin:mnist, batch size 128, the auto student's whole "
            "bound); 500 teacher and 500 student epochs at batch size 1 about 6 million. Past "
            "it, POST /harden answers 422."
        ),
    )
    max_active_jobs_per_key: int = Field(
        4,
        ge=1,
        description="Most jobs one API key may have queued or running at once; past it, POST "
        "/harden answers 429 until one of them ends or is cancelled.",
    )
    queued_republish_after_s: float | None = Field(
        None,
        gt=0,
        description=(
            "The reaper publishes again the task of a job still queued (no update) after this "
            "long: its message may have been lost with a broker outage (a worker had received "
            "it, Redis restarted). A duplicate delivery is dropped by the worker at once. "
            "Unset: 2 x HARDEN_HEARTBEAT_TIMEOUT_S."
        ),
    )
    worker_process_start_timeout_s: float = Field(
        30.0,
        gt=0,
        description=(
            "How long a worker waits for a new pool process to say it is up before killing it "
            "(Celery's worker_proc_alive_timeout, 4 s by default). torch and the pipeline are "
            "imported once in the worker's main process before it forks, so a pool process "
            "starts in well under a second; the margin is for a busy host."
        ),
    )
    auth: Literal["open", "keys"] = Field(
        "keys", description="'keys': Bearer API keys required; 'open': no auth, owner 'anonymous'."
    )
    metrics_open: bool = Field(
        False,
        description="Serve GET /metrics without an API key even when HARDEN_AUTH=keys (the page "
        "holds service-wide totals only): for a scrape port tenants cannot reach. False: "
        "Prometheus sends a key (harden keys create --name prometheus).",
    )
    webhook_secret: str = Field("", description="HMAC-SHA256 secret of webhook signatures.")
    otel_endpoint: str | None = Field(
        None,
        description="An OpenTelemetry collector's OTLP/HTTP endpoint (e.g. "
        "http://otel-collector:4318): the API and the workers export each job's trace there "
        "(POST /harden, the Celery task, each pipeline stage; app/infra/tracing.py). Unset: no "
        "tracing at all.",
    )
    webhook_max_retries: int = Field(6, ge=0, le=20)
    webhook_allow_private: bool = Field(
        False,
        description="Let webhook URLs reach loopback, private, link-local and other non-public "
        "addresses (a receiver inside your network); false: refused at submit and delivery.",
    )
    # --- MLflow hand-off (worker/mlflow_handoff.py, app/infra/mlflow_target.py) -------------------
    mlflow_tracking_uri: str | None = Field(
        None,
        description="MLflow tracking server every succeeded job is logged to (unless its "
        "config says mlflow.enabled false); a job's own mlflow.tracking_uri overrides it.",
    )
    mlflow_experiment: str = Field("harden", min_length=1, description="Default experiment.")
    mlflow_registered_model: str = Field(
        "harden-student", min_length=1, description="Default registered model name."
    )
    mlflow_allowed_hosts: str = Field(
        "",
        description="Comma-separated hosts (host or host:port) a job's own mlflow.tracking_uri "
        "may name, private addresses included; '*' also allows any host whose addresses are all "
        "public. Empty: jobs use HARDEN_MLFLOW_TRACKING_URI only (a URI naming its host is "
        "accepted).",
    )
    mlflow_timeout_s: int = Field(
        30, ge=1, description="Timeout of each request to the MLflow server."
    )
    mlflow_max_retries: int = Field(
        2, ge=0, le=10, description="Retries of a failed request to the MLflow server."
    )
    job_soft_time_limit_s: int = Field(
        6 * 3600, ge=1, description="Past this a job fails with code 'timeout'."
    )
    job_time_limit_s: int = Field(
        6 * 3600 + 300, ge=1, description="Hard kill of the worker process running the job."
    )
    progress_interval_s: float = Field(
        0.5, ge=0, description="Least time between two progress writes / cancel-flag reads."
    )
    checkpoints: bool = Field(
        True,
        description="Save each training's state to the artifact store (core/checkpoint.py), so "
        "a job whose worker was lost resumes from its last checkpoint instead of from zero.",
    )
    audit_helpers: int = Field(
        3,
        ge=0,
        description="The most helper tasks one job's audit sends to other workers (each idle "
        "worker that takes one computes shards of it: worker/shards.py); 0: a job audits alone. "
        "Bounds what one job holds of a shared pool.",
    )
    checkpoint_every_s: float = Field(
        300.0,
        ge=0,
        description="Least seconds between two checkpoints of a training: one is saved at the "
        "first epoch end past this (and at each training's end). 0: every epoch.",
    )
    device: str | None = Field(
        None,
        description="The worker's device: 'cpu', 'cuda' or 'cuda:N' (one worker per GPU on a "
        "machine with several); unset: the first GPU if any, else the CPU. A GPU this machine "
        "lacks stops the worker at start (docs/deploy.md).",
    )
    training_processes: int = Field(
        1,
        ge=1,
        le=64,
        description="Processes one job's training runs over (core/hardening/distributed.py: "
        "DistributedDataParallel, NCCL on CUDA with GPUs HARDEN_DEVICE..+N-1, gloo on the CPU). "
        "The ranks talk over TCP, which a contained job may not: above 1 it needs "
        "HARDEN_CONTAIN_MODELS=false (docs/deploy.md).",
    )
    training_precision: Literal["auto", "float32", "bfloat16"] = Field(
        "auto",
        description="Training precision (core/compute.py): 'auto' trains in bfloat16 autocast on "
        "a CUDA GPU that supports it, float32 elsewhere; attacks, soft labels and the ONNX "
        "export stay float32 either way.",
    )
    channels_last: bool = Field(
        True, description="Train convolutional networks in channels-last layout on CUDA."
    )
    cudnn_benchmark: bool = Field(
        True, description="Let cuDNN pick the fastest convolution algorithms (CUDA only)."
    )
    # --- containment of the uploaded model's code (worker/contained.py) --------------------------
    contain_models: bool = Field(
        True,
        description="Run each job's pipeline (everything that executes the upload) in a child "
        "process the worker supervises: killed at once on cancel, on no progress and past its "
        "memory bound; on Linux it sees only its own job's folder (Landlock) and has no network. "
        "false runs it inside the worker process (a trusted single-user machine only).",
    )
    model_stall_timeout_s: float = Field(
        900.0,
        gt=0,
        description="A contained job that reports no progress for this long is killed and "
        "fails with code 'model_timeout' (a model whose forward never returns).",
    )
    model_memory_limit_mb: int = Field(
        16 * 1024,
        ge=256,
        description="Most resident memory a contained job may use (MiB); past it the job is "
        "killed and fails with code 'model_memory'.",
    )
    migrate_on_start: bool = Field(True, description="Run 'alembic upgrade head' at start.")
    events_poll_s: float = Field(0.5, gt=0, description="How often /events polls the job store.")
    # --- deployment (app/web/observability.py, worker/retention.py) ------------------------------
    log_level: str = Field("INFO", description="Level of the service's logs (DEBUG, INFO, ...).")
    log_json: bool = Field(
        True, description="Logs as JSON lines with the job id (false: plain text, for a terminal)."
    )
    retention_days: float = Field(
        30.0,
        ge=0,
        description="Finished jobs' files are deleted this long after the job ended and the job "
        "marked 'expired'; 0 keeps them forever.",
    )
    retention_interval_s: float = Field(
        3600.0, gt=0, description="How often the retention task runs (Celery beat)."
    )

    # --- datasets a worker fetches (worker/dataset_fetch.py) ------------------------------------
    dataset_url_allow_private: bool = Field(
        False,
        description="Let dataset URLs reach loopback, private, link-local and other non-public "
        "addresses (a file server inside your network); false: refused at submit (422) and at "
        "every fetch and redirect.",
    )
    dataset_url_allow_http: bool = Field(
        False,
        description="Accept plain http:// dataset URLs (a file server inside your network, "
        "tests); false: https:// only.",
    )
    dataset_fetch_max_bytes: int = Field(
        4 * 1024**3,
        ge=1,
        description="Largest s3:// or https:// dataset a worker downloads; past it the job "
        "fails (invalid_dataset).",
    )
    dataset_fetch_timeout_s: float = Field(
        900.0, gt=0, description="Longest a worker spends downloading one remote dataset."
    )
    dataset_s3_endpoint_url: str | None = Field(
        None,
        description="S3 endpoint of s3:// dataset references (MinIO, Ceph); unset: "
        "HARDEN_S3_ENDPOINT_URL, else AWS. Credentials come from the environment (AWS_*), as "
        "for the artifact store.",
    )
    dataset_cache_bytes: int = Field(
        20 * 1024**3,
        ge=0,
        description="Each worker keeps fetched datasets by sha256 under work_dir/dataset-cache, "
        "up to this many bytes (least recently used go first); 0 keeps none.",
    )

    @model_validator(mode="after")
    def _visibility_outlasts_the_longest_job(self) -> Settings:
        timeout, limit = self.visibility_timeout_s, self.job_time_limit_s
        if timeout is not None and timeout <= limit:
            raise ValueError(
                f"HARDEN_VISIBILITY_TIMEOUT_S ({timeout} s) must exceed HARDEN_JOB_TIME_LIMIT_S "
                f"({limit} s): the Redis broker would hand a job that is still running to a "
                f"second worker. Raise HARDEN_VISIBILITY_TIMEOUT_S above {limit}, or unset it "
                f"to get HARDEN_JOB_TIME_LIMIT_S + {VISIBILITY_MARGIN_S} s"
            )
        return self

    @model_validator(mode="after")
    def _heartbeat_outlasts_its_interval(self) -> Settings:
        interval, timeout = self.heartbeat_interval_s, self.heartbeat_timeout_s
        if timeout < 3 * interval:
            raise ValueError(
                f"HARDEN_HEARTBEAT_TIMEOUT_S ({timeout:g} s) must be at least 3 times "
                f"HARDEN_HEARTBEAT_INTERVAL_S ({interval:g} s): a live worker that misses one "
                "heartbeat would lose its job to the reaper. Raise the timeout to "
                f"{3 * interval:g} s or more, or lower the interval"
            )
        return self

    @model_validator(mode="after")
    def _soft_limit_comes_first(self) -> Settings:
        soft, hard = self.job_soft_time_limit_s, self.job_time_limit_s
        if soft >= hard:
            raise ValueError(
                f"HARDEN_JOB_SOFT_TIME_LIMIT_S ({soft} s) must be below HARDEN_JOB_TIME_LIMIT_S "
                f"({hard} s): past the soft limit a job fails cleanly with code 'timeout', past "
                "the hard one its worker process is killed. Lower the soft limit (a few minutes "
                "below the hard one is enough)"
            )
        return self

    @model_validator(mode="after")
    def _training_processes_can_reach_each_other(self) -> Settings:
        if self.training_processes > 1 and self.contain_models:
            raise ValueError(
                f"HARDEN_TRAINING_PROCESSES={self.training_processes} needs TCP between the "
                "training's processes, and a contained job has no network (Landlock refuses "
                "TCP; its network namespace has no interface up): set "
                "HARDEN_TRAINING_PROCESSES=1, or HARDEN_CONTAIN_MODELS=false on a worker that "
                "runs trusted models only"
            )
        return self

    @model_validator(mode="after")
    def _device_is_a_device_name(self) -> Settings:
        # Only the form is checked here (the web process has no torch); whether the GPU exists
        # is checked when the worker starts (core.device.pick_device).
        device = self.device
        if device is not None and not re.fullmatch(r"cpu|cuda(:\d{1,3})?", device.strip().lower()):
            raise ValueError(
                f"HARDEN_DEVICE ({device!r}) is not a device: use 'cpu', 'cuda' or 'cuda:N' "
                "(N: the GPU's index, one worker per GPU), or unset it to pick automatically"
            )
        return self

    @property
    def resolved_visibility_timeout_s(self) -> int:
        """The visibility timeout in force: the setting, or the hard time limit plus a margin."""
        if self.visibility_timeout_s is not None:
            return self.visibility_timeout_s
        return self.job_time_limit_s + VISIBILITY_MARGIN_S


def broker_transport_options(settings: Settings) -> dict[str, Any]:
    """Options of the broker transport, shared by the producer (API) and the workers."""
    options: dict[str, Any] = {}
    if settings.broker_url.startswith(("redis://", "rediss://")):
        # Redis redelivers a job whose worker died only after the visibility timeout.
        timeout = settings.resolved_visibility_timeout_s
        options["visibility_timeout"] = timeout
        # Sweep for expired unacked messages a few times per timeout (default: every 100 s), so
        # a dead worker's job is back in the queue soon after the timeout, not minutes later.
        options["unacked_restore_interval"] = max(1, min(60, timeout // 5))
        options["unacked_restore_throttle"] = 1
    return options


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (environment read once)."""
    return Settings()  # type: ignore[call-arg]  # mypy cannot see values from the environment
