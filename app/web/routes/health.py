"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from app.infra.queue import broker_reachable
from app.web import api_docs as docs
from app.web.deps import ServicesDep
from app.web.errors import NotReadyError
from app.web.problem_docs import responses
from app.web.schemas import Health, Readiness

router = APIRouter(tags=["health"])


@router.get(
    "/healthz",
    summary="The process is up",
    response_model=Health,
    responses={
        200: {
            "description": "The API process answers (it checks nothing else: see /readyz).",
            "content": docs.json_content(ok=("Up", {"status": "ok"})),
        }
    },
)
def healthz() -> dict[str, str]:
    """Liveness: answers as long as the process serves requests. No authentication."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="The database and the broker are reachable",
    response_model=Readiness,
    responses=responses(
        {
            200: {
                "description": "Ready: the database and the broker both answered.",
                "content": docs.json_content(
                    ready=(
                        "Ready",
                        {"status": "ready", "checks": {"database": True, "broker": True}},
                    )
                ),
            }
        },
        "not_ready",
    ),
)
async def readyz(services: ServicesDep) -> JSONResponse:
    """Readiness: pings the job database and the Celery broker; 503 while either is down, so
    a load balancer sends no traffic to an instance that cannot accept jobs. No authentication.
    """

    def database_ok() -> bool:
        try:
            services.store.ping()
            return True
        except Exception:
            return False

    checks = {
        "database": await run_in_threadpool(database_ok),
        "broker": await run_in_threadpool(broker_reachable, services.producer),
    }
    if all(checks.values()):
        return JSONResponse({"status": "ready", "checks": checks})
    down = ", ".join(name for name, ok in checks.items() if not ok)
    raise NotReadyError(
        f"not ready: {down} unreachable",
        hint="check HARDEN_DATABASE_URL / HARDEN_BROKER_URL and that those services run",
        checks=checks,
    )
