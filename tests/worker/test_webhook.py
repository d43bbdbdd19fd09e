"""Webhook delivery to a real HTTP server on loopback: body, signature, retry signal."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from tests.worker.conftest import queue_job
from worker.webhook import SIGNATURE_HEADER, WebhookDeliveryError, deliver_webhook


@pytest.fixture
def receiver():
    received: list[tuple[dict, bytes]] = []
    status = [204]

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((dict(self.headers), body))
            self.send_response(status[0])
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/hook", received, status
    server.shutdown()


def test_final_job_is_posted_with_a_valid_signature(services, receiver):
    url, received, _ = receiver
    job_id = queue_job(services, {"webhook_url": url})
    services.store.request_cancel(job_id)
    assert deliver_webhook(services.store, job_id, "s3cret") == 204
    headers, body = received[0]
    expected = "sha256=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers[SIGNATURE_HEADER], expected)
    job = json.loads(body)
    assert job["id"] == job_id and job["state"] == "cancelled"
    assert headers["X-Harden-Event"] == "job.cancelled"


def test_error_status_raises_for_a_retry(services, receiver):
    url, received, status = receiver
    status[0] = 503
    job_id = queue_job(services, {"webhook_url": url})
    services.store.request_cancel(job_id)
    with pytest.raises(WebhookDeliveryError):
        deliver_webhook(services.store, job_id, "s3cret")
    assert len(received) == 1


def test_nothing_is_sent_for_a_running_job(services, receiver):
    url, received, _ = receiver
    job_id = queue_job(services, {"webhook_url": url})
    services.store.mark_running(job_id)
    assert deliver_webhook(services.store, job_id, "s3cret") is None
    assert received == []
