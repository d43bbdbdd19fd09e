"""JSON-lines logging with the job id on every line of a job (API and workers).

Imports neither FastAPI nor Celery at import time, so the worker uses it without the web stack.
"""

from __future__ import annotations

import contextvars
import logging
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

#: The job the current task works on; the worker task sets it (``job_context``) so that every
#: log line written while the job runs, by any module, carries the job id.
current_job_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "harden_job_id", default=None
)


class JobIdFilter(logging.Filter):
    """Adds ``job_id`` (or None) from :data:`current_job_id` to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        # Never overwrite an id given explicitly through ``extra={"job_id": ...}``.
        if getattr(record, "job_id", None) is None:
            record.job_id = current_job_id.get()
        return True


@contextmanager
def job_context(job_id: str) -> Iterator[None]:
    """Tag every log line written inside the block with ``job_id``."""
    token = current_job_id.set(job_id)
    try:
        yield
    finally:
        current_job_id.reset(token)


def json_formatter() -> logging.Formatter:
    """One JSON object per line: time, level, logger, message, job_id, plus any ``extra``."""
    return JsonFormatter(
        "%(asctime)s %(levelname)s %(name)s %(message)s %(job_id)s",
        rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        # uvicorn adds a copy of each message with terminal colour codes: noise in a log store.
        reserved_attrs=[*RESERVED_ATTRS, "color_message"],
    )


def configure_json_logging(level: int | str = logging.INFO) -> logging.Handler:
    """Send all logging (root logger) to stderr as JSON lines with the job id on each line.

    Idempotent: calling it again replaces the handler it installed before. uvicorn's and
    Celery's own loggers propagate to the root, so they come out as JSON too.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_harden_json", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(json_formatter())
    # The filter sits on the handler, not a logger, so records from every logger get the id.
    handler.addFilter(JobIdFilter())
    handler._harden_json = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "celery"):
        # Their default handlers would print the same line a second time, not as JSON.
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    return handler


# What a client following a job asks for again and again: the job list, a job, its event stream.
_JOB_POLL = re.compile(r"/jobs(/[^/?]+(/events)?)?/?(\?.*)?")


class QuietJobPolls(logging.Filter):
    """uvicorn's access line of a successful ``GET /jobs``, ``/jobs/{id}`` or
    ``/jobs/{id}/events``, at DEBUG instead of INFO.

    A client following a job polls about every second (``harden submit --wait`` every 0.5 s),
    and at INFO those lines buried the submissions, cancels, deletes, downloads and errors,
    which stay at INFO. A demoted line is still written when DEBUG is on: uvicorn's
    ``--log-level debug`` or ``HARDEN_LOG_LEVEL=DEBUG``.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        # uvicorn's access record: '%s - "%s %s HTTP/%s" %d' % (client, method, path, http, status)
        args = record.args
        if record.levelno != logging.INFO or not isinstance(args, tuple) or len(args) != 5:
            return True
        method, path, status = args[1], args[2], args[4]
        if method != "GET" or not isinstance(status, int) or status >= 400:
            return True
        if not _JOB_POLL.fullmatch(str(path)):
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        wanted = logging.getLogger(record.name).level == logging.DEBUG
        return wanted or logging.getLogger().isEnabledFor(logging.DEBUG)


def quiet_job_polls() -> None:
    """Install :class:`QuietJobPolls` on uvicorn's access logger (once however often called)."""
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(existing, QuietJobPolls) for existing in access.filters):
        access.addFilter(QuietJobPolls())


def connect_worker_logging(settings: Any) -> Callable[..., None] | None:
    """Make Celery workers log JSON lines (per ``settings.log_json`` / ``log_level``).

    Connects to Celery's ``setup_logging`` signal: with a receiver there, Celery leaves the
    logging configuration to us. Returns the receiver (None with plain-text logs).
    """
    if not settings.log_json:
        return None
    from celery.signals import setup_logging

    level = str(settings.log_level).upper()

    def receiver(**_: Any) -> None:
        configure_json_logging(level)

    setup_logging.connect(receiver, weak=False)
    return receiver
