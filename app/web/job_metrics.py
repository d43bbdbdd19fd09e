"""Job-store metrics, read at scrape time: jobs by state, queue depth, stage durations.

Workers run on other machines (and Celery runs each task in a child process), so an in-process
histogram in a worker would be invisible to the API and lost with each child; prometheus-client's
multiprocess mode only shares a directory on one host. The job store is already the source of
truth for job state and per-stage timings (the worker writes them there), so any API replica
exports the same, cluster-wide numbers, with no extra moving part. Queue depth is the number of
jobs the store holds as queued: correct for every broker (the embedded one has no Redis list).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime, timedelta

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from app.infra.store import JobStore

log = logging.getLogger(__name__)

#: Seconds; a stage lasts from under a second (load) to hours (teacher training on CPU).
STAGE_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 21600.0)

JobsByState = Callable[[], Mapping[str, int]]
StageTimings = Callable[[], Iterable[Mapping[str, float]]]


class JobStoreCollector(Collector):
    """Exports job-store numbers at scrape time: jobs by state, queue depth, stage durations.

    ``jobs_by_state()`` returns ``{state: count}``. ``stage_timings()`` returns one
    ``{stage: seconds}`` mapping per job *not returned before* (incremental, so a scrape reads
    only the jobs finished since the previous one); the collector adds them to its running
    histogram. A new API process starts from a full read, so every replica exports the same
    totals, and they only grow (jobs are expired by retention, not deleted), as a Prometheus
    histogram must.
    """

    def __init__(
        self,
        jobs_by_state: JobsByState | None = None,
        stage_timings: StageTimings | None = None,
        *,
        queued_states: Iterable[str] = ("queued",),
        known_states: Iterable[str] = (),
        stage_buckets: Iterable[float] = STAGE_BUCKETS,
    ) -> None:
        self._jobs_by_state = jobs_by_state
        self._stage_timings = stage_timings
        self._queued_states = tuple(queued_states)
        self._known_states = tuple(known_states)
        self._stage_buckets = tuple(sorted(stage_buckets))
        self._errors = 0
        # stage -> (cumulative count per bucket bound, sum, count); guarded by the lock
        # because two scrapes may run at once in the thread pool.
        self._stages: dict[str, tuple[list[int], float, int]] = {}
        self._lock = threading.Lock()

    def describe(self) -> list[Metric]:
        # Registering must not query the database; an empty describe() makes the registry
        # skip collect() at registration time.
        return []

    def collect(self) -> Iterator[Metric]:
        if self._jobs_by_state is not None:
            try:
                counts = dict(self._jobs_by_state())
            except Exception:
                # A database hiccup must not turn the whole /metrics page into a 500.
                self._errors += 1
                log.warning("metrics: could not count jobs by state", exc_info=True)
            else:
                yield from self._state_metrics(counts)
        if self._stage_timings is not None:
            with self._lock:
                try:
                    self._add_timings(self._stage_timings())
                except Exception:
                    self._errors += 1
                    log.warning("metrics: could not read stage timings", exc_info=True)
                # Still exported after a failed read: the totals so far remain true.
                yield self._stage_histogram()
        # Lets an alert fire when the job-store numbers silently stop coming.
        yield CounterMetricFamily(
            "harden_metrics_store_errors",
            "Scrapes whose job-store query failed.",
            value=float(self._errors),
        )

    def _state_metrics(self, counts: dict[str, int]) -> Iterator[Metric]:
        jobs = GaugeMetricFamily(
            "harden_jobs", "Jobs in the job store, by state.", labels=["state"]
        )
        # States with no job are exported as 0 so that dashboards see them appear and vanish.
        for state in sorted(set(self._known_states) | set(counts)):
            jobs.add_metric([state], float(counts.get(state, 0)))
        yield jobs
        yield GaugeMetricFamily(
            "harden_queue_depth",
            "Jobs waiting for a worker (queued in the job store).",
            value=float(sum(counts.get(state, 0) for state in self._queued_states)),
        )

    def _add_timings(self, timings: Iterable[Mapping[str, float]]) -> None:
        for job_timings in timings:
            for stage, seconds in job_timings.items():
                counts, total, n = self._stages.get(stage, ([0] * len(self._stage_buckets), 0.0, 0))
                value = float(seconds)
                for i, bound in enumerate(self._stage_buckets):
                    if value <= bound:
                        counts[i] += 1
                self._stages[stage] = (counts, total + value, n + 1)

    def _stage_histogram(self) -> Metric:
        family = HistogramMetricFamily(
            "harden_stage_duration_seconds",
            "Seconds each pipeline stage took, over the succeeded jobs of the job store.",
            labels=["stage"],
        )
        for stage in sorted(self._stages):
            counts, total, n = self._stages[stage]
            buckets = [
                (_bucket_label(bound), float(count))
                for bound, count in zip(self._stage_buckets, counts, strict=True)
            ]
            buckets.append(("+Inf", float(n)))
            family.add_metric([stage], buckets, sum_value=total)
        return family


def _bucket_label(bound: float) -> str:
    # Same spelling as prometheus-client's own histograms ("1.0", "300.0").
    return repr(float(bound))


def stage_timings_from_store(
    store: JobStore, *, overlap: timedelta = timedelta(minutes=10)
) -> StageTimings:
    """Incremental ``stage_timings`` over the per-stage seconds the worker stores on each
    succeeded job (``jobs.timings_s``).

    Each call returns the timings of jobs finished since the previous call: it reads rows
    with ``finished_at`` past the last one seen minus ``overlap`` (the workers' clocks and
    commits may lag each other by that much) and skips the ids already counted.
    """
    watermark: datetime | None = None
    counted: dict[str, datetime] = {}  # ids inside the overlap window, already returned

    def read_new() -> list[Mapping[str, float]]:
        nonlocal watermark
        rows = store.finished_job_timings(None if watermark is None else watermark - overlap)
        new: list[Mapping[str, float]] = [r.seconds for r in rows if r.job_id not in counted]
        for row in rows:
            counted[row.job_id] = row.finished_at
            watermark = row.finished_at if watermark is None else max(watermark, row.finished_at)
        if watermark is not None:
            for job_id in [j for j, f in counted.items() if f < watermark - overlap]:
                del counted[job_id]
        return new

    return read_new
