"""One trace per job through real processes: uvicorn and a Celery worker on Redis + PostgreSQL,
exporting over OTLP/HTTP (HARDEN_OTEL_ENDPOINT) to a collector stand-in on loopback that decodes
what it gets with OpenTelemetry's own protobuf types. The trace runs from POST /harden through
the task's publish and run to each pipeline stage, with the job id on every span."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
from harden_client import HardenClient
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from app.infra.tracing import JOB_ID
from tests.integration.conftest import Cluster, tiny_torchscript, wait_for
from tests.integration.test_redis_postgres import FAST, create_key

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


@pytest.fixture
def collector() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """An OTLP/HTTP traces receiver on loopback: every span it got, flattened."""
    spans: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            body = self.rfile.read(int(self.headers["Content-Length"]))
            request = ExportTraceServiceRequest.FromString(body)
            for resource in request.resource_spans:
                service = next(
                    a.value.string_value
                    for a in resource.resource.attributes
                    if a.key == "service.name"
                )
                for scope in resource.scope_spans:
                    for span in scope.spans:
                        spans.append({
                            "service": service, "name": span.name, "trace": span.trace_id.hex(),
                            "id": span.span_id.hex(), "parent": span.parent_span_id.hex(),
                            "start": span.start_time_unix_nano, "end": span.end_time_unix_nano,
                            "attributes": {a.key: a.value.string_value for a in span.attributes},
                        })  # fmt: skip
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}", spans
    server.shutdown()


def test_a_job_is_one_trace_from_the_request_to_each_stage(
    redis_cluster: Cluster, tmp_path: Path, collector: tuple[str, list[dict[str, Any]]]
) -> None:
    endpoint, spans = collector
    redis_cluster.env |= {"HARDEN_OTEL_ENDPOINT": endpoint, "OTEL_BSP_SCHEDULE_DELAY": "100"}
    redis_cluster.start_api()
    redis_cluster.start_worker("w1")
    key = create_key(redis_cluster, "ci")
    with HardenClient(redis_cluster.url, key) as client:
        job = client.submit(tiny_torchscript(tmp_path / "model.pt"), config=FAST)
        done = client.wait(job["id"], timeout_s=180)
    assert done["state"] == "succeeded", redis_cluster.log("w1")
    wait_for(
        lambda: any(s["name"] == "stage report" for s in spans), 30, "the stage spans",
        lambda: f"{spans}\n{redis_cluster.log('w1')}",
    )  # fmt: skip
    request = next(s for s in spans if s["name"] == "POST /harden")
    trace = [s for s in spans if s["trace"] == request["trace"]]
    by_id = {s["id"]: s for s in trace}
    # Every span of the job's trace carries its id; both processes exported into the one trace.
    assert all(s["attributes"].get(JOB_ID) == job["id"] for s in trace), trace
    assert {s["service"] for s in trace} == {"harden-api", "harden-worker"}

    def ancestors(span: dict[str, Any]) -> list[str]:
        names = []
        while span["parent"] in by_id:
            span = by_id[span["parent"]]
            names.append(span["name"])
        return names

    publish = next(s for s in trace if s["name"] == "apply_async/harden.run_job")
    run = next(s for s in trace if s["name"] == "run/harden.run_job")
    assert ancestors(publish) == ["POST /harden"]
    assert ancestors(run)[-1] == "POST /harden" and run["service"] == "harden-worker"
    stages = sorted((s for s in trace if s["name"].startswith("stage ")), key=lambda s: s["start"])
    # The stages the confined child ran, in order, each a child of the task's run span.
    names = [s["name"].removeprefix("stage ") for s in stages]
    assert names[0] == "load" and names[-1] == "report" and "export" in names, names
    assert all(s["parent"] == run["id"] for s in stages)
    assert all(run["start"] <= s["start"] <= s["end"] <= run["end"] for s in stages)
    assert all(a["end"] <= b["start"] for a, b in zip(stages, stages[1:], strict=False))
