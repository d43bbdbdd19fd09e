"""Service commands: serve, worker, db, keys (operators); the client commands (submit, status,
jobs, download, cancel) live in :mod:`cli.service_client`. Web and queue code is imported
inside each command, so ``harden run`` never loads it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import typer

from cli.datasets_cmd import datasets_app
from cli.gate import EXIT_CODES_HELP
from cli.run_options import with_spec_options
from cli.service_client import cancel, download, jobs, status, submit

keys_app = typer.Typer(no_args_is_help=True, help="Manage API keys (operators).")
db_app = typer.Typer(no_args_is_help=True, help="Manage the job database (operators).")


def register(app: typer.Typer) -> None:
    """Add the service commands to ``app``."""
    app.command()(serve)
    app.command()(worker)
    app.command(epilog=EXIT_CODES_HELP)(with_spec_options(submit))
    app.command()(status)
    app.command()(jobs)
    app.command()(download)
    app.command()(cancel)
    app.add_typer(datasets_app, name="datasets")
    app.add_typer(keys_app, name="keys")
    app.add_typer(db_app, name="db")


# --- operators ------------------------------------------------------------------------------
def serve(
    embedded: bool = typer.Option(
        False,
        "--embedded",
        help="Also run a worker here, on a broker that needs no server (SQLite), open auth "
        "unless HARDEN_AUTH says otherwise: the whole service on one machine.",
    ),
    host: str = typer.Option("127.0.0.1", help="Interface to listen on."),
    port: int = typer.Option(8000, help="Port to listen on."),
    workers: int = typer.Option(1, help="uvicorn worker processes (not with --embedded)."),
) -> None:
    """Run the HTTP API (migrating the database first)."""
    import uvicorn

    if embedded:
        # Embedded defaults apply only where the operator set nothing.
        os.environ.setdefault("HARDEN_AUTH", "open")
        Path("var").mkdir(exist_ok=True)
    from app.infra.migrate import upgrade
    from app.infra.settings import get_settings

    settings = get_settings()
    upgrade(settings.database_url)
    if embedded:
        _requeue_interrupted_jobs(settings)
        # uvicorn catches SIGTERM, shuts down, puts back the handler it found and raises the
        # signal again: with the default action the process died right there, before the
        # finally below stopped the worker, which lived on, orphaned, taking jobs (a restart
        # then ran two workers on one broker). Turned into SystemExit, the finally runs.
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
    if settings.auth == "open":
        typer.echo("harden: open mode (no API keys); all jobs belong to 'anonymous'", err=True)
        if host not in ("127.0.0.1", "localhost", "::1"):
            typer.echo(
                f"warning: open mode on {host}: anyone who can reach it can submit and read jobs; "
                "set HARDEN_AUTH=keys and create keys with 'harden keys create'",
                err=True,
            )
    worker_process = None
    try:
        worker_process = _start_embedded_worker() if embedded else None
        uvicorn.run(
            "app.web.main:create_app",
            factory=True,
            host=host,
            port=port,
            workers=1 if embedded else workers,
            # Deployment wiring: on SIGTERM stop accepting, let open requests finish for up to
            # 30 s (then close what is left, e.g. /events streams; clients reconnect), within
            # docker-compose.yml's 40 s stop_grace_period.
            timeout_graceful_shutdown=30,
        )
    finally:
        if worker_process is not None:
            worker_process.send_signal(signal.SIGTERM)
            try:
                worker_process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker_process.kill()


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def _requeue_interrupted_jobs(settings: Any) -> None:
    # Redis redelivers a dead worker's job after the visibility timeout; kombu's SQLite broker
    # does not (a fetched message stays hidden for good). Embedded mode has exactly one worker,
    # started below, so a job still 'running' now was interrupted (the machine or the process
    # was killed): queue it again. The runner counts the attempt and gives up past
    # HARDEN_MAX_ATTEMPTS; completed artifacts of the dead attempt are not redone.
    from app.infra.queue import enqueue_job, make_producer
    from app.infra.store import JobStore

    store = JobStore.from_url(settings.database_url)
    interrupted = store.ids_in_state("running")
    if not interrupted:
        return
    producer = make_producer(settings)
    for job_id in interrupted:
        # Back to queued: the dead worker's heartbeat may look fresh after a quick restart, and
        # the runner takes over a running job only once its heartbeat is stale.
        store.requeue_stalled(job_id, None)
        enqueue_job(producer, job_id, settings.queue)
    typer.echo(f"harden: queued {len(interrupted)} interrupted job(s) again", err=True)


def _start_embedded_worker() -> subprocess.Popen[bytes]:
    # A separate process, as in production: the API stays free of torch.
    return subprocess.Popen(
        [sys.executable, "-m", "cli.main", "worker", "--concurrency", "1", "--pool", "solo"],
        env=os.environ.copy(),
    )


def worker(
    concurrency: int = typer.Option(1, help="Jobs at once; keep 1 per GPU."),
    pool: str = typer.Option("prefork", help="Celery pool: prefork (time limits) or solo."),
    loglevel: str = typer.Option("INFO", help="Log level."),
    hostname: str | None = typer.Option(None, help="Celery node name (default: celery@host)."),
) -> None:
    """Run a Celery worker that hardens queued jobs (one job per GPU: concurrency 1)."""
    from app.infra.migrate import upgrade
    from app.infra.settings import get_settings
    from worker.celery_app import celery_app

    settings = get_settings()
    _check_device(settings.device)
    upgrade(settings.database_url)
    argv = [
        "worker",
        f"--concurrency={concurrency}",
        f"--pool={pool}",
        f"--loglevel={loglevel}",
        f"--queues={settings.queue}",
        "--without-gossip",
        "--without-mingle",
    ]
    if hostname:
        argv.append(f"--hostname={hostname}")
    celery_app.worker_main(argv)


def _check_device(device: str | None) -> None:
    """Stop a worker told a device this machine lacks before it takes any job."""
    from core.device import pick_device
    from core.errors import DeviceError

    try:
        resolved = pick_device(device)
    except DeviceError as error:
        typer.echo(f"harden worker: HARDEN_DEVICE: {error}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"harden worker: jobs run on {resolved}", err=True)


@db_app.command("upgrade")
def db_upgrade(
    revision: str = typer.Argument("head", help="The Alembic revision to upgrade to."),
) -> None:
    """Apply the Alembic migrations to HARDEN_DATABASE_URL."""
    from app.infra.migrate import upgrade
    from app.infra.settings import get_settings

    upgrade(get_settings().database_url, revision)
    typer.echo(f"database at {revision}")


@keys_app.command("create")
def keys_create(name: str = typer.Option(..., "--name", help="Who the key is for.")) -> None:
    """Create an API key and print it (once: only its sha256 is stored). With HARDEN_AUTH=open
    the key is made, for when keys are turned on, with a warning that nothing checks it yet."""
    from sqlalchemy.exc import IntegrityError

    from app.infra.settings import get_settings

    try:
        key = _keys().create(name)
    except IntegrityError:
        typer.echo(f"a key named {name!r} exists already; pick another name", err=True)
        raise typer.Exit(1) from None
    typer.echo(key)
    if get_settings().auth == "open":
        # Not refused: making keys before switching a service to keys mode is how one switches.
        typer.echo(
            f"warning: HARDEN_AUTH=open: the service checks no key, so {name!r} protects "
            "nothing yet (every caller is 'anonymous' and sees every job); restart the service "
            "with HARDEN_AUTH=keys to require keys",
            err=True,
        )


@keys_app.command("revoke")
def keys_revoke(
    name: str = typer.Option(..., "--name", help="The key's name, as 'harden keys list' shows it."),
) -> None:
    """Revoke the key called NAME."""
    if not _keys().revoke(name):
        typer.echo(f"no active key named {name!r}", err=True)
        raise typer.Exit(1)
    typer.echo(f"revoked {name}")


@keys_app.command("list")
def keys_list() -> None:
    """List the keys (names and dates; the keys themselves are not stored)."""
    for key in _keys().all_keys():
        revoked = f" revoked {key.revoked_at:%Y-%m-%d}" if key.revoked_at else ""
        typer.echo(f"{key.name}\tcreated {key.created_at:%Y-%m-%d}{revoked}")


def _keys() -> Any:
    from app.infra.api_keys import ApiKeyStore
    from app.infra.db import make_engine
    from app.infra.migrate import upgrade
    from app.infra.settings import get_settings

    settings = get_settings()
    upgrade(settings.database_url)
    return ApiKeyStore(make_engine(settings.database_url))
