"""A job's stages: each timed, each preceded by a check for cancellation (torch-free). Used by
the pipeline for its own stages and by every hardening method for the stages it declares."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from core.errors import JobCancelledError
from core.names import CancelFn


def cancelled(message: str, stage: str) -> JobCancelledError:
    """The error a job cancelled during ``stage`` raises."""
    return JobCancelledError(
        message, hint="nothing was written; submit the job again to rerun it", stage=stage
    )


@contextmanager
def timed_stage(stage: str, should_cancel: CancelFn, timings: dict[str, float]) -> Iterator[None]:
    """Check for cancellation before ``stage`` and record its seconds in ``timings`` once it
    completes (long stages also check every step, e.g. train_epochs)."""
    if should_cancel():
        raise cancelled(f"cancelled before {stage}", stage)
    started = time.perf_counter()
    yield
    timings[stage] = time.perf_counter() - started
