"""Webhook delivery: the final job JSON, signed with HMAC-SHA256 over the exact body bytes.

Receivers verify with ``hmac.compare_digest(header, "sha256=" + hmac_sha256(secret, body))``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging

import httpx

from app.schemas import job_out
from app.store import JobStore, is_terminal

log = logging.getLogger(__name__)
SIGNATURE_HEADER = "X-Harden-Signature"


class WebhookDeliveryError(Exception):
    """The receiver answered with a non-2xx status: worth retrying."""


def sign(secret: str, body: bytes) -> str:
    """The signature header value of ``body``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def deliver_webhook(
    store: JobStore, job_id: str, secret: str, *, timeout_s: float = 10.0
) -> int | None:
    """POST the job; return the receiver's status, None when there is nothing to send."""
    job = store.get(job_id)
    if job is None or not is_terminal(job.state) or not job.spec.get("webhook_url"):
        return None
    body = json.dumps(job_out(job).model_dump(mode="json"), sort_keys=True).encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "harden-webhook/1",
        "X-Harden-Event": f"job.{job.state}",
        "X-Harden-Job": job.id,
    }
    if secret:
        headers[SIGNATURE_HEADER] = sign(secret, body)
    else:
        log.warning("HARDEN_WEBHOOK_SECRET is empty: webhook of job %s sent unsigned", job_id)
    response = httpx.post(
        str(job.spec["webhook_url"]), content=body, headers=headers, timeout=timeout_s
    )
    if response.status_code >= 300:
        raise WebhookDeliveryError(f"webhook answered {response.status_code}")
    return response.status_code
