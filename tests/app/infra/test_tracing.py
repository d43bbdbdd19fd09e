"""Traces (app/infra/tracing.py) with OpenTelemetry's own in-memory exporter: the job id on every
span started under a job's context, the stage spans made from the confined child's times, and
nothing at all when HARDEN_OTEL_ENDPOINT is unset. The whole path through real processes (API,
Celery, worker, OTLP) is tests/integration/test_tracing.py."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from app.infra import tracing
from app.infra.settings import Settings

ROOT = Path(__file__).resolve().parents[3]


def test_every_span_under_a_job_carries_its_id_and_stages_become_child_spans() -> None:
    exporter = InMemorySpanExporter()
    provider = tracing.make_provider("harden-test", exporter)
    tracer = provider.get_tracer("test")
    start = time.time_ns()
    stages = [("load", start, start + 2_000_000), ("export", start + 3_000_000, start + 9_000_000)]
    with tracer.start_as_current_span("POST /harden") as request, tracing.job_context("0123abcd"):
        with tracer.start_as_current_span("publish"):
            pass
        with tracer.start_as_current_span("run"):
            tracing.record_stages(stages, provider)
    with tracer.start_as_current_span("GET /healthz"):
        pass
    spans = {span.name: span for span in exporter.get_finished_spans()}
    assert set(spans) == {"POST /harden", "publish", "run", "stage load", "stage export",
                          "GET /healthz"}  # fmt: skip
    # The request span gets the id when the job is made (it started before), the rest at start.
    for name in ("POST /harden", "publish", "run", "stage load", "stage export"):
        assert spans[name].attributes[tracing.JOB_ID] == "0123abcd", name
    assert tracing.JOB_ID not in spans["GET /healthz"].attributes
    run = spans["run"].context.span_id
    for (stage, begin, end), name in zip(stages, ("stage load", "stage export"), strict=True):
        span = spans[name]
        assert span.parent is not None and span.parent.span_id == run
        assert (span.start_time, span.end_time) == (begin, end)
        assert span.attributes["harden.stage"] == stage
        assert span.context.trace_id == request.get_span_context().trace_id


def test_off_unless_an_endpoint_is_set() -> None:
    assert tracing.install(Settings(otel_endpoint=None), "harden-test") is None
    # No provider was installed: spans are the API's non-recording ones, stage spans not made.
    assert not isinstance(trace.get_tracer_provider(), TracerProvider)
    with tracing.tracer().start_as_current_span("anything") as span:
        assert not span.is_recording()
        tracing.record_stages([("load", 1, 2)])


def test_the_api_imports_no_tracing_sdk_when_off(tmp_path: Path) -> None:
    # No cost when off: the API process never loads the SDK, the exporter or an instrumentation.
    code = (
        "import sys; from app.infra.settings import Settings; from app.web.main import create_app; "
        f"create_app(Settings(database_url='sqlite:///{tmp_path}/db.sqlite', "
        f"artifact_dir='{tmp_path}/a', upload_dir='{tmp_path}/u')); "
        "loaded = [m for m in sys.modules if m.startswith(('opentelemetry.sdk', "
        "'opentelemetry.exporter', 'opentelemetry.instrumentation'))]; print(loaded)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert result.stdout.strip().splitlines()[-1] == "[]", result.stderr


def test_the_traces_url_of_an_endpoint() -> None:
    assert tracing.traces_url("http://c:4318") == "http://c:4318/v1/traces"
    assert tracing.traces_url("http://c:4318/") == "http://c:4318/v1/traces"
    assert tracing.traces_url("http://c:4318/v1/traces") == "http://c:4318/v1/traces"
