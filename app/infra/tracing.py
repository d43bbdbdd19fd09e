"""OpenTelemetry traces: one trace per job, from ``POST /harden`` through the Celery task to each
stage of the pipeline, with the job id on every span.

Off unless ``HARDEN_OTEL_ENDPOINT`` is set (an OTLP/HTTP collector, e.g.
``http://otel-collector:4318``): then each process (the API, each worker) installs a tracer
provider that exports its spans over OTLP/HTTP in batches. Off, nothing is installed: the
OpenTelemetry API's default provider makes no spans, and the SDK and its exporter are not even
imported.

The libraries do the work: the FastAPI instrumentation makes the request's server span, the
Celery instrumentation the publish span in the API and the task's run span in the worker, linked
through the message's headers (W3C trace context and baggage). What is ours:

* the job id rides as baggage (``harden.job_id``), set where the API has made the job, so it
  travels to the worker with the trace context, and :class:`JobIdOnEverySpan` copies it onto
  every span started under it;
* the pipeline's stages run in a confined child (worker/contained.py) that has no network, so the
  child records each stage's wall-clock start and end (core.stages.StageTimings) and the worker
  makes their spans from those times once the child is done (:func:`record_stages`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from opentelemetry import baggage, context, trace

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider

    from app.infra.settings import Settings

log = logging.getLogger(__name__)

JOB_ID = "harden.job_id"
TRACER_NAME = "harden"
OTLP_TRACES_PATH = "/v1/traces"

_installed: dict[str, TracerProvider] = {}  # by process id and service: once per process


def traces_url(endpoint: str) -> str:
    """The OTLP/HTTP traces URL of a collector endpoint (``http://host:4318`` or the full URL)."""
    endpoint = endpoint.rstrip("/")
    return endpoint if endpoint.endswith(OTLP_TRACES_PATH) else endpoint + OTLP_TRACES_PATH


def job_id_processor() -> SpanProcessor:
    """A span processor that puts the context's ``harden.job_id`` baggage on each new span."""
    from opentelemetry.sdk.trace import SpanProcessor

    class JobIdOnEverySpan(SpanProcessor):
        def on_start(self, span: Span, parent_context: context.Context | None = None) -> None:
            job_id = baggage.get_baggage(JOB_ID, parent_context)
            if job_id is not None:
                span.set_attribute(JOB_ID, str(job_id))

        def on_end(self, span: ReadableSpan) -> None:
            pass

    return JobIdOnEverySpan()


def make_provider(service: str, exporter: Any = None, *, endpoint: str | None = None) -> Any:
    """A tracer provider for ``service`` exporting to ``exporter`` (tests: OTel's in-memory one,
    synchronously) or over OTLP/HTTP to ``endpoint`` in batches."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(job_id_processor())
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        assert endpoint is not None
        # The BatchSpanProcessor restarts its export thread in a forked child (os.register_at_fork),
        # so a provider made in Celery's main process serves its prefork pool processes too.
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(traces_url(endpoint))))
    return provider


def install(settings: Settings, service: str) -> TracerProvider | None:
    """This process's tracer provider when ``HARDEN_OTEL_ENDPOINT`` is set (made once, made the
    global one, Celery instrumented with it), else None and nothing done."""
    if not settings.otel_endpoint:
        return None
    key = f"{os.getpid()}:{service}"
    if key not in _installed:
        provider = make_provider(service, endpoint=settings.otel_endpoint)
        trace.set_tracer_provider(provider)
        instrument_celery(provider)
        _installed[key] = provider
        log.info("traces exported over OTLP/HTTP to %s", traces_url(settings.otel_endpoint))
    return _installed[key]


def instrument_celery(provider: Any) -> None:
    """Celery's publish and run spans, linked through the message headers (once per process)."""
    from opentelemetry.instrumentation.celery import CeleryInstrumentor

    instrumentor = CeleryInstrumentor()
    if not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument(tracer_provider=provider)


def instrument_app(app: Any, provider: Any) -> None:
    """The API's server span per request. ASGI's own send/receive spans are left out: they are
    made after the request's handler returned, outside the job's context."""
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    FastAPIInstrumentor.instrument_app(
        app, tracer_provider=provider, exclude_spans=["receive", "send"]
    )


@contextmanager
def job_context(job_id: str) -> Iterator[None]:
    """Everything traced inside (the publish of the job's task, the current span) carries the job
    id; the id travels on to the worker as baggage."""
    trace.get_current_span().set_attribute(JOB_ID, job_id)
    token = context.attach(baggage.set_baggage(JOB_ID, job_id))
    try:
        yield
    finally:
        context.detach(token)


def tracer() -> trace.Tracer:
    return trace.get_tracer(TRACER_NAME)


def record_stages(stages: Sequence[tuple[str, int, int]], provider: Any = None) -> None:
    """A span per pipeline stage, as children of the current span, from the wall-clock times
    (nanoseconds since the epoch) the confined child recorded: (stage, start, end). ``provider``:
    the global one unless given (tests)."""
    if not trace.get_current_span().is_recording():
        return  # tracing off: nothing to make
    stage_tracer = tracer() if provider is None else provider.get_tracer(TRACER_NAME)
    for stage, start_ns, end_ns in stages:
        span = stage_tracer.start_span(f"stage {stage}", start_time=start_ns)
        span.set_attribute("harden.stage", stage)
        span.end(end_time=end_ns)
