"""The heartbeat of a running job: a background thread that records, every few seconds, that the
worker running the job is alive.

A worker killed mid-job (SIGKILL, OOM, a lost machine) stops beating; the reaper
(:mod:`worker.reaper`) then queues the job again within ``HARDEN_HEARTBEAT_TIMEOUT_S`` instead of
the hours Redis' visibility timeout takes. The other half is the lease: a worker whose beats stop
counting, because the job was handed to another worker, ended or was deleted, or because the
database could not be reached for half the timeout, stops the job itself (the runner's
``should_cancel`` turns true), so the same job never runs twice at once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from types import TracebackType

log = logging.getLogger(__name__)


class Heartbeat:
    """``with Heartbeat(beat, ...) as heartbeat:`` calls ``beat()`` every ``interval_s`` seconds
    in a daemon thread. ``beat`` returns False when the job is no longer this worker's to run.
    :attr:`lost` says the worker must stop."""

    def __init__(
        self,
        beat: Callable[[], bool],
        *,
        interval_s: float,
        timeout_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._beat = beat
        self._interval = interval_s
        # Half the timeout the reaper waits: the worker gives the job up well before the reaper
        # can hand it to another one.
        self._give_up_after = timeout_s / 2
        self._clock = clock
        self._last_ok = clock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="harden-heartbeat", daemon=True)
        self.superseded = False

    @property
    def lost(self) -> bool:
        """True once the job is no longer this worker's: superseded, or no beat recorded for
        half the heartbeat timeout."""
        return self.superseded or self._clock() - self._last_ok > self._give_up_after

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=max(5.0, 2 * self._interval))

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                alive = self._beat()
            except Exception as exc:
                # The database is unreachable: keep trying; past half the timeout, lost.
                log.warning("could not record the job's heartbeat: %s", exc.__class__.__name__)
                continue
            if not alive:
                self.superseded = True
                return
            self._last_ok = self._clock()
