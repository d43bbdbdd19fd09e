"""Webhook delivery: the final job JSON, signed with HMAC-SHA256 over the exact body bytes.

Receivers verify with ``hmac.compare_digest(header, "sha256=" + hmac_sha256(secret, body))``.
Unless HARDEN_WEBHOOK_ALLOW_PRIVATE is set, the receiver's host must resolve to public addresses
only (app/infra/netguard.py), checked again here because DNS may answer differently than at submit.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging

import httpx

from app.infra.job_resource import job_out
from app.infra.netguard import NonPublicAddressError, UnresolvableHostError, guarded_target
from app.infra.store import JobStore, is_terminal

log = logging.getLogger(__name__)
SIGNATURE_HEADER = "X-Harden-Signature"


# Answers that may change on a later try: timeout, rate limit (and every 5xx).
RETRYABLE_STATUSES = frozenset({408, 425, 429})


class WebhookDeliveryError(Exception):
    """The receiver answered with a non-2xx status, or its name did not resolve: worth
    retrying."""


def sign(secret: str, body: bytes) -> str:
    """The signature header value of ``body``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def deliver_webhook(
    store: JobStore,
    job_id: str,
    secret: str,
    *,
    allow_private: bool = False,
    timeout_s: float = 10.0,
) -> int | None:
    """POST the job; return the receiver's status, None when there is nothing to send (or the
    URL's host is not public and ``allow_private`` is false: no retry would change that)."""
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
    url = httpx.URL(str(job.spec["webhook_url"]))
    try:
        target = guarded_target(url, allow_private=allow_private)
    except NonPublicAddressError as exc:
        log.warning(
            "webhook of job %s not sent: %s (HARDEN_WEBHOOK_ALLOW_PRIVATE is false)", job_id, exc
        )
        return None
    except UnresolvableHostError as exc:
        raise WebhookDeliveryError(str(exc)) from exc  # DNS may answer on a retry
    # A redirect is not followed: its target was never checked.
    with httpx.Client(
        timeout=timeout_s, follow_redirects=False, trust_env=target.trust_env
    ) as client:
        response = client.post(
            target.url,
            content=body,
            headers=headers | target.headers,
            extensions=target.extensions,
        )
    status = response.status_code
    if status >= 500 or status in RETRYABLE_STATUSES:
        raise WebhookDeliveryError(f"webhook answered {status}")
    if status >= 300:
        # A redirect (never followed) or a refusal (bad signature, no such hook) answers the
        # same on every retry: give up now and say so, rather than retry for an hour.
        log.warning("webhook of job %s answered %s: not retried", job_id, status)
    return status
