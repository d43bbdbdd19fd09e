"""Webhook delivery to a real HTTP server on loopback: body, signature, retry signal, and the
refusal of non-public receivers unless the operator allows them."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import onnx
import pytest

from app.infra import netguard
from core.report.schema import Report
from tests.worker.conftest import queue_job
from tests.worker.real_pipeline import TINY_EVALUATION
from worker.runner import run_job
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
            if 300 <= status[0] < 400:
                self.send_header("Location", "/elsewhere")
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
    assert deliver_webhook(services.store, job_id, "s3cret", allow_private=True) == 204
    headers, body = received[0]
    expected = "sha256=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers[SIGNATURE_HEADER], expected)
    job = json.loads(body)
    assert job["id"] == job_id and job["state"] == "cancelled"
    assert headers["X-Harden-Event"] == "job.cancelled"


def test_a_succeeded_jobs_webhook_carries_the_verdict_of_its_report(services, receiver):
    url, received, _ = receiver
    job_id = queue_job(services, {"webhook_url": url, "evaluation": TINY_EVALUATION})
    assert run_job(services, job_id) == "succeeded"
    assert deliver_webhook(services.store, job_id, "s3cret", allow_private=True) == 204
    verdict = json.loads(received[0][1])["verdict"]
    report_path = services.artifacts.local_path(job_id, "report.json")
    report = Report.model_validate_json(report_path.read_text(encoding="utf-8"))
    assert report.verdict is not None
    assert verdict == report.verdict_summary().model_dump(mode="json")
    assert verdict["label"] == report.verdict.label and verdict["headline"]
    assert verdict["clean_accuracy"]["student"] == report.models["student"].clean_accuracy
    assert [(r["norm"], r["epsilon"]) for r in verdict["robust"]] == [("linf", 0.1), ("l2", 1.0)]
    # The job store holds it, as the worker recorded it with the artifacts; model.onnx too.
    assert services.store.get(job_id).verdict == verdict
    model = onnx.load(str(services.artifacts.local_path(job_id, "model.onnx")))
    meta = {p.key: p.value for p in model.metadata_props}
    assert (meta["verdict"], meta["outputs"]) == (verdict["label"], "t_scaled_logits")


def test_error_status_raises_for_a_retry(services, receiver):
    url, received, status = receiver
    status[0] = 503
    job_id = queue_job(services, {"webhook_url": url})
    services.store.request_cancel(job_id)
    with pytest.raises(WebhookDeliveryError):
        deliver_webhook(services.store, job_id, "s3cret", allow_private=True)
    assert len(received) == 1


def test_nothing_is_sent_for_a_running_job(services, receiver):
    url, received, _ = receiver
    job_id = queue_job(services, {"webhook_url": url})
    services.store.mark_running(job_id)
    assert deliver_webhook(services.store, job_id, "s3cret", allow_private=True) is None
    assert received == []


@pytest.fixture
def no_proxy(monkeypatch):
    for name in ("http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


def finished_job(services, url: str) -> str:
    job_id = queue_job(services, {"webhook_url": url})
    services.store.request_cancel(job_id)
    return job_id


def test_redirects_are_not_followed_nor_retried(services, receiver, caplog):
    url, received, status = receiver
    status[0] = 302
    job_id = finished_job(services, url)
    with caplog.at_level(logging.WARNING, logger="worker.webhook"):
        assert deliver_webhook(services.store, job_id, "s", allow_private=True) == 302
    assert [headers["Host"] for headers, _ in received] == [url.split("/")[2]]
    assert f"webhook of job {job_id} answered 302: not retried" in caplog.text


@pytest.mark.parametrize(("answer", "retried"), [(401, False), (404, False), (429, True)])
def test_only_answers_that_may_change_are_retried(services, receiver, answer, retried):
    url, _, status = receiver
    status[0] = answer
    job_id = finished_job(services, url)
    if retried:
        with pytest.raises(WebhookDeliveryError, match=str(answer)):
            deliver_webhook(services.store, job_id, "s", allow_private=True)
    else:
        assert deliver_webhook(services.store, job_id, "s", allow_private=True) == answer


def test_private_receiver_is_refused_unless_allowed(services, receiver, caplog):
    url, received, _ = receiver
    job_id = finished_job(services, url)
    with caplog.at_level(logging.WARNING, logger="worker.webhook"):
        assert deliver_webhook(services.store, job_id, "s3cret") is None
    assert received == []  # refused before any connection; no retry either (no exception)
    assert "HARDEN_WEBHOOK_ALLOW_PRIVATE" in caplog.text and "127.0.0.1" in caplog.text


def fake_dns(monkeypatch, answers: dict[str, list[str]]) -> list[str]:
    """Resolve the names in ``answers`` to their next address each time; others as usual."""
    real = socket.getaddrinfo
    asked: list[str] = []

    def getaddrinfo(host, port, *args, **kwargs):
        if host not in answers:
            return real(host, port, *args, **kwargs)
        asked.append(host)
        if not answers[host]:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        address = answers[host].pop(0) if len(answers[host]) > 1 else answers[host][0]
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port or 80))]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return asked


def test_a_name_rebound_to_a_private_address_after_submit_is_refused(
    services, receiver, monkeypatch
):
    _, received, _ = receiver
    fake_dns(monkeypatch, {"hooks.example.com": ["169.254.169.254"]})
    job_id = finished_job(services, "http://hooks.example.com/harden")
    assert deliver_webhook(services.store, job_id, "s3cret") is None
    assert received == []


def test_a_name_that_does_not_resolve_is_retried(services, monkeypatch):
    fake_dns(monkeypatch, {"gone.example.com": []})
    job_id = finished_job(services, "https://gone.example.com/hook")
    with pytest.raises(WebhookDeliveryError, match="does not resolve"):
        deliver_webhook(services.store, job_id, "s3cret")


def test_delivery_connects_to_the_address_it_checked(services, receiver, monkeypatch, no_proxy):
    """A DNS server answering a public address to the check and another one afterwards (DNS
    rebinding) does not move the connection: it goes to the checked address, by IP."""
    url, received, _ = receiver
    port = int(url.split(":")[2].split("/")[0])
    # The receiver's loopback address stands in for a public one; the name's next answer is
    # an address where nothing listens (TEST-NET-1).
    monkeypatch.setattr(netguard, "is_public", lambda ip: str(ip) == "127.0.0.1")
    asked = fake_dns(monkeypatch, {"hook.example.com": ["127.0.0.1", "192.0.2.1"]})
    job_id = finished_job(services, f"http://hook.example.com:{port}/hook")
    assert deliver_webhook(services.store, job_id, "s3cret", timeout_s=3) == 204
    assert asked == ["hook.example.com"]  # resolved once, by the check
    headers, body = received[0]
    assert headers["Host"] == f"hook.example.com:{port}"
    assert json.loads(body)["id"] == job_id
