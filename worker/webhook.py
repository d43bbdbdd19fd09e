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
import urllib.request
from typing import Any

import httpx

from app.infra.job_resource import job_out
from app.infra.netguard import NonPublicAddressError, UnresolvableHostError, public_addresses
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


def _env_proxy_applies(url: httpx.URL) -> bool:
    """Whether httpx would send ``url`` through a proxy from HTTP(S)_PROXY / ALL_PROXY."""
    proxies = urllib.request.getproxies()
    if not (proxies.get(url.scheme) or proxies.get("all")):
        return False
    return not urllib.request.proxy_bypass(url.host)


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
    target, trust_env = url, True
    extensions: dict[str, Any] = {}
    if not allow_private:
        try:
            addresses = public_addresses(url.host, url.port)
        except NonPublicAddressError as exc:
            log.warning(
                "webhook of job %s not sent: %s (HARDEN_WEBHOOK_ALLOW_PRIVATE is false)",
                job_id,
                exc,
            )
            return None
        except UnresolvableHostError as exc:
            raise WebhookDeliveryError(str(exc)) from exc  # DNS may answer on a retry
        if not _env_proxy_applies(url):
            # Connect to the address just checked: letting httpx resolve the name again would
            # let a DNS server that alternates its answers pass the check and then point the
            # connection elsewhere. The name still goes in Host and in TLS (SNI, certificate).
            target, trust_env = url.copy_with(host=str(addresses[0])), False
            headers["Host"] = url.netloc.decode("ascii")
            if url.scheme == "https":
                extensions["sni_hostname"] = url.host
    # A redirect is not followed: its target was never checked.
    with httpx.Client(timeout=timeout_s, follow_redirects=False, trust_env=trust_env) as client:
        response = client.post(target, content=body, headers=headers, extensions=extensions)
    status = response.status_code
    if status >= 500 or status in RETRYABLE_STATUSES:
        raise WebhookDeliveryError(f"webhook answered {status}")
    if status >= 300:
        # A redirect (never followed) or a refusal (bad signature, no such hook) answers the
        # same on every retry: give up now and say so, rather than retry for an hour.
        log.warning("webhook of job %s answered %s: not retried", job_id, status)
    return status
