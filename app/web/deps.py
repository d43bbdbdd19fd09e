"""What the routes depend on: the service objects and the caller's identity."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from celery import Celery
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.infra.api_keys import ApiKeyStore
from app.infra.artifacts import ArtifactStore
from app.infra.settings import Settings
from app.infra.store import JobStore
from app.web.errors import AuthError

ANONYMOUS = "anonymous"
_bearer = HTTPBearer(
    auto_error=False,
    description="An API key from `harden keys create --name NAME` (not needed in open mode).",
)


@dataclass
class Services:
    """The service objects one app instance works with."""

    settings: Settings
    store: JobStore
    keys: ApiKeyStore
    artifacts: ArtifactStore
    producer: Celery


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]
_Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def current_owner(credentials: _Credentials, services: ServicesDep) -> str:
    """The owner of the calling key; 'anonymous' in open mode. 401 otherwise."""
    if services.settings.auth == "open":
        return ANONYMOUS
    if credentials is None or not credentials.credentials:
        raise AuthError(
            "this endpoint needs an API key",
            hint="send 'Authorization: Bearer <key>'; an operator creates keys with "
            "'harden keys create --name NAME'",
        )
    owner = services.keys.owner(credentials.credentials)
    if owner is None:
        raise AuthError(
            "the API key is not valid (unknown or revoked)",
            hint="check the key for typos, or ask an operator for a new one",
        )
    return owner


OwnerDep = Annotated[str, Depends(current_owner)]
