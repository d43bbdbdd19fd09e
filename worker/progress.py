"""Throttled progress writes and cached cancel-flag reads for a running job.

The core calls both every training or attack step (hundreds per second on small models); the
job store sees at most one write and one read per ``interval`` seconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from core.contract.job_plan import overall_progress
from core.contract.methods import Stage


class ProgressReporter:
    """``on_progress(stage, done, total)`` (a :data:`core.names.ProgressFn`) -> overall 0..1
    progress written to the store, over the job's ``stages`` and their weights (the hardening
    method declares its own: core.contract.job_plan.progress_stages, which the job's ETA reads
    the stage's own fraction back with)."""

    def __init__(
        self,
        write: Callable[[str, float], object],
        stages: Sequence[Stage],
        *,
        interval_s: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._write = write
        self._interval = interval_s
        self._clock = clock
        self._stages = tuple(stages)
        self._last_time = -float("inf")
        self._last_stage: str | None = None
        self.progress = 0.0

    def overall(self, stage: str, done: int, total: int) -> float:
        fraction = min(max(done / total, 0.0), 1.0) if total > 0 else 0.0
        # The formula the ETA reads the stage's fraction back with (core.contract.job_plan).
        progress = overall_progress(self._stages, stage, fraction)
        return self.progress if progress is None else progress

    def __call__(self, stage: str, done: int, total: int) -> None:
        # Progress never goes backwards, even if a stage reports out of order.
        self.progress = max(self.progress, self.overall(stage, done, total))
        now = self._clock()
        # A new stage is always written at once: clients show the stage name.
        if stage != self._last_stage or now - self._last_time >= self._interval:
            self._last_stage, self._last_time = stage, now
            self._write(stage, self.progress)


class CancelCheck:
    """``should_cancel()`` (a :data:`core.names.CancelFn`) reading the job's cancel flag at most
    every ``interval`` seconds, and turning true past the deadline (time limits then work in any
    worker pool, solo included)."""

    def __init__(
        self,
        read: Callable[[], bool],
        *,
        interval_s: float = 0.5,
        deadline_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._read = read
        self._interval = interval_s
        self._clock = clock
        self._deadline = clock() + deadline_s if deadline_s is not None else None
        self._last_time = -float("inf")
        self.cancelled = False
        self.timed_out = False

    def __call__(self) -> bool:
        now = self._clock()
        if self._deadline is not None and now >= self._deadline:
            self.timed_out = True
            return True
        if not self.cancelled and now - self._last_time >= self._interval:
            self._last_time = now
            self.cancelled = self._read()
        return self.cancelled
