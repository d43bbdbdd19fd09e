"""Which MLflow server a job is handed to, and whether the service may call it (SSRF policy).

A job's ``mlflow.tracking_uri`` comes from the user, yet the worker calls it from inside the
operator's network, and MLflow's client sends the worker's own credentials
(MLFLOW_TRACKING_TOKEN, MLFLOW_TRACKING_USERNAME/PASSWORD) to whatever server it is given. So a
job may name only a host its operator listed in HARDEN_MLFLOW_ALLOWED_HOSTS, or the host of the
service's own HARDEN_MLFLOW_TRACKING_URI; the entry ``*`` also admits any host whose addresses are
all public (the webhook guard, app/infra/netguard.py). The API checks at submit (422) and the
worker again before it logs, since settings and DNS answers may change in between. The operator's
own URI is trusted as configured (any scheme MLflow takes).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from app.infra.netguard import NonPublicAddressError, UnresolvableHostError, public_addresses
from app.infra.settings import Settings
from core.contract.mlflow_settings import MlflowSpec

ANY_PUBLIC_HOST = "*"
HINT = (
    "name a tracking server the operator allows (HARDEN_MLFLOW_ALLOWED_HOSTS), or leave "
    "mlflow.tracking_uri unset to use the service's own (HARDEN_MLFLOW_TRACKING_URI)"
)


class TrackingUriRefused(ValueError):
    """The job's tracking URI names a host the service may not call."""


@dataclass(frozen=True)
class MlflowTarget:
    """Where and under which names a job's results go."""

    tracking_uri: str
    experiment: str
    registered_model: str
    alias: str
    # The URI came from the job (checked against the policy), not from the operator's settings.
    from_job: bool


def resolve_target(section: MlflowSpec | None, settings: Settings) -> MlflowTarget | None:
    """The job's MLflow target, its unset fields from the settings; None when the job is not
    handed over (no section and no service default, or ``enabled`` false)."""
    if section is not None and not section.enabled:
        return None
    job_uri = str(section.tracking_uri) if section and section.tracking_uri else None
    uri = job_uri or settings.mlflow_tracking_uri
    if not uri:
        if section is None:
            return None
        raise TrackingUriRefused(
            "the job's mlflow section names no tracking_uri and the service has no default "
            "tracking server (HARDEN_MLFLOW_TRACKING_URI)"
        )
    section = section or MlflowSpec()
    return MlflowTarget(
        tracking_uri=uri,
        experiment=section.experiment or settings.mlflow_experiment,
        registered_model=section.registered_model or settings.mlflow_registered_model,
        alias=section.alias,
        from_job=job_uri is not None,
    )


def check_target(target: MlflowTarget, settings: Settings) -> None:
    """Raise TrackingUriRefused unless the service may call ``target`` (module docstring)."""
    if not target.from_job:
        return
    parts = urlsplit(target.tracking_uri)
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("http", "https") or not host:
        raise TrackingUriRefused(
            f"{target.tracking_uri!r} is not an http(s) URL with a host: the service logs to "
            "MLflow tracking servers over HTTP only"
        )
    port = parts.port or (443 if parts.scheme == "https" else 80)
    allowed = _allowed_hosts(settings)
    if host in allowed or f"{host}:{port}" in allowed:
        return
    if ANY_PUBLIC_HOST not in allowed:
        raise TrackingUriRefused(
            f"the tracking server {host}:{port} is not among the hosts this service may log to"
        )
    try:
        public_addresses(host, port)
    except (NonPublicAddressError, UnresolvableHostError) as exc:
        raise TrackingUriRefused(f"the tracking server is refused: {exc}") from exc


def _allowed_hosts(settings: Settings) -> set[str]:
    """HARDEN_MLFLOW_ALLOWED_HOSTS, plus the host (and host:port) of the service's own URI."""
    entries = {e.strip().lower() for e in settings.mlflow_allowed_hosts.split(",") if e.strip()}
    own = urlsplit(settings.mlflow_tracking_uri or "")
    if own.scheme in ("http", "https") and own.hostname:
        port = own.port or (443 if own.scheme == "https" else 80)
        entries.add(f"{own.hostname.lower()}:{port}")
    return entries
