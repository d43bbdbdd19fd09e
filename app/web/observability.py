"""Prometheus metrics behind ``GET /metrics`` (JSON-lines logging is in :mod:`app.infra.logs`).

Where each number comes from, and why it is correct with many processes:

- HTTP latency and upload sizes are observed in the API process by an ASGI middleware.
- Jobs by state, queue depth and stage durations are *read from the job store at scrape time* by
  the collector in :mod:`app.web.job_metrics` (why: see there).

The page holds service-wide totals only: no job id, owner, key or dataset is ever a label. With
``HARDEN_AUTH=keys`` it still needs an API key (Prometheus sends one: ``authorization`` in its
scrape config), since how busy the service is and what it is asked is the operator's business;
``HARDEN_METRICS_OPEN=true`` serves it without one, for a scrape port tenants cannot reach.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from app.infra.api_keys import ApiKeyStore
from app.infra.db import JobState
from app.infra.logs import configure_json_logging, quiet_job_polls
from app.infra.settings import Settings
from app.infra.store import JobStore
from app.web.errors import AuthError
from app.web.job_metrics import (
    JobsByState,
    JobStoreCollector,
    StageTimings,
    stage_timings_from_store,
)

if TYPE_CHECKING:
    from fastapi import FastAPI
    from starlette.requests import Request

#: Seconds; API calls are milliseconds, uploads and downloads of large models take seconds.
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
#: Bytes, 1 KiB .. 1 GiB by powers of 4: model files range from kilobytes to gigabytes.
UPLOAD_BUCKETS = tuple(float(1024 * 4**i) for i in range(11))
UNMATCHED_ROUTE = "<unmatched>"


class Metrics:
    """The API process's metrics, in their own registry (several apps per process in tests)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.http_latency = Histogram(
            "harden_http_request_duration_seconds",
            "HTTP request latency, by route template, method and status.",
            ["method", "route", "status"],
            buckets=HTTP_BUCKETS,
            registry=self.registry,
        )
        self.upload_size = Histogram(
            "harden_upload_size_bytes",
            "Size of request bodies uploaded to the API (multipart or raw), by route template.",
            ["route"],
            buckets=UPLOAD_BUCKETS,
            registry=self.registry,
        )

    def render(self) -> bytes:
        """The registry in the Prometheus text format."""
        return generate_latest(self.registry)


_UPLOAD_TYPES = ("multipart/form-data", "application/octet-stream")


def _route_template(scope: Mapping[str, Any]) -> str:
    # The router stores the matched route in the scope; its template ("/jobs/{job_id}") keeps
    # the label set small, where the raw path would make one series per job id.
    route = scope.get("route")
    template = getattr(route, "path_format", None) or getattr(route, "path", None)
    return str(template) if template else UNMATCHED_ROUTE


def _header(scope: Mapping[str, Any], name: bytes) -> str:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return ""


class HttpMetricsMiddleware:
    """Pure ASGI middleware: latency of every request and the size of every upload body.

    Pure ASGI (not ``BaseHTTPMiddleware``) so streamed responses (SSE, downloads) are not
    buffered and request bodies are counted as they arrive, whatever their length header says.
    """

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client gets if the app raises before answering
        received = 0
        is_upload = _header(scope, b"content-type").lower().startswith(_UPLOAD_TYPES)

        async def counting_receive() -> Any:
            nonlocal received
            message = await receive()
            if message.get("type") == "http.request":
                received += len(message.get("body", b""))
            return message

        async def status_send(message: Mapping[str, Any]) -> None:
            nonlocal status
            if message.get("type") == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, counting_receive if is_upload else receive, status_send)
        finally:
            route = _route_template(scope)
            self.metrics.http_latency.labels(scope.get("method", ""), route, str(status)).observe(
                time.perf_counter() - started
            )
            if is_upload and received:
                self.metrics.upload_size.labels(route).observe(received)


def install_observability(
    app: FastAPI,
    *,
    jobs_by_state: JobsByState | None = None,
    stage_timings: StageTimings | None = None,
    known_states: Iterable[str] = (),
    queued_states: Iterable[str] = ("queued",),
    path: str = "/metrics",
    authorize: Callable[[Request], None] | None = None,
) -> Metrics:
    """Add the HTTP metrics middleware and ``GET /metrics`` to ``app``; returns its metrics.

    ``jobs_by_state`` and ``stage_timings`` read the job store (see :class:`JobStoreCollector`);
    the app factory passes functions bound to its store. ``authorize`` raises (AuthError) for a
    request that may not read the page.
    """
    from starlette.responses import Response

    metrics = Metrics()
    if jobs_by_state is not None or stage_timings is not None:
        metrics.registry.register(
            JobStoreCollector(
                jobs_by_state,
                stage_timings,
                queued_states=queued_states,
                known_states=known_states,
            )
        )
    app.add_middleware(HttpMetricsMiddleware, metrics=metrics)

    async def metrics_endpoint(request: Request) -> Response:
        # The collector queries the database synchronously; run the render in a thread so a
        # slow scrape does not stall the event loop.
        from starlette.concurrency import run_in_threadpool

        if authorize is not None:
            await run_in_threadpool(authorize, request)  # a key lookup: a database query
        body = await run_in_threadpool(metrics.render)
        # The classic text format (0.0.4): every Prometheus version and scraper reads it.
        return Response(body, media_type=CONTENT_TYPE_PLAIN_0_0_4)

    app.add_route(path, metrics_endpoint, methods=["GET"], include_in_schema=False)
    app.state.metrics = metrics
    return metrics


def install(app: FastAPI, settings: Settings) -> Metrics:
    """Everything deployment-side for the API: logging per the settings (job polls' access lines
    at DEBUG), ``GET /metrics``, HTTP metrics and the job-store collector bound to
    ``app.state.services.store``."""
    if settings.log_json:
        configure_json_logging(settings.log_level.upper())
    quiet_job_polls()
    store: JobStore = app.state.services.store
    needs_key = settings.auth == "keys" and not settings.metrics_open
    return install_observability(
        app,
        jobs_by_state=store.count_by_state,
        stage_timings=stage_timings_from_store(store),
        known_states=[state.value for state in JobState],
        queued_states=[JobState.queued.value],
        authorize=_api_key_check(app.state.services.keys) if needs_key else None,
    )


def _api_key_check(keys: ApiKeyStore) -> Callable[[Request], None]:
    """Refuses (401) a scrape without a valid API key."""

    def authorize(request: Request) -> None:
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise AuthError(
                "GET /metrics needs an API key (HARDEN_AUTH=keys)",
                hint="create one for Prometheus ('harden keys create --name prometheus') and set "
                "it as the scrape's bearer credentials (docs/deploy.md, Metrics); or set "
                "HARDEN_METRICS_OPEN=true where tenants cannot reach the scrape port",
            )
        if keys.owner(key.strip()) is None:
            raise AuthError(
                "the API key is not valid (unknown or revoked)",
                hint="check the key in the scrape config, or create a new one",
            )

    return authorize
