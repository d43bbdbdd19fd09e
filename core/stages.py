"""A job's stages: each timed, each preceded by a check for cancellation (torch-free). Used by
the pipeline for its own stages and by every hardening method for the stages it declares."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token

from core.errors import JobCancelledError
from core.names import CancelFn


def cancelled(message: str, stage: str) -> JobCancelledError:
    """The error a job cancelled during ``stage`` raises."""
    return JobCancelledError(
        message, hint="nothing was written; submit the job again to rerun it", stage=stage
    )


StageTime = tuple[str, int, int]
"""A stage that completed: its name, wall-clock start and end (nanoseconds since the epoch)."""

_recording: ContextVar[list[StageTime] | None] = ContextVar("harden_stage_times", default=None)


def record_stages_into(times: list[StageTime]) -> Token[list[StageTime] | None]:
    """From now on, every stage timed in this context (the pipeline's and its methods') is
    appended to ``times`` with its wall-clock start and end, until :func:`stop_recording` with
    the token returned: the worker makes the job's trace spans from them (app/infra/tracing.py),
    as the confined child that runs the stages exports nothing."""
    return _recording.set(times)


def stop_recording(token: Token[list[StageTime] | None]) -> None:
    _recording.reset(token)


@contextmanager
def timed_stage(stage: str, should_cancel: CancelFn, timings: dict[str, float]) -> Iterator[None]:
    """Check for cancellation before ``stage`` and record its seconds in ``timings`` once it
    completes (long stages also check every step, e.g. train_epochs)."""
    if should_cancel():
        raise cancelled(f"cancelled before {stage}", stage)
    started, started_ns = time.perf_counter(), time.time_ns()
    yield
    timings[stage] = time.perf_counter() - started
    times = _recording.get()
    if times is not None:
        times.append((stage, started_ns, time.time_ns()))
