"""Liveness, readiness and the job-spec schema."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from app.deps import Services, get_services
from app.problems import problem
from app.queue import broker_reachable
from core.spec import spec_json_schema

router = APIRouter()


@router.get("/healthz", summary="The process is up", tags=["health"])
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="The database and the broker are reachable",
    responses={503: {"description": "A dependency is down (problem+json lists which)."}},
    tags=["health"],
)
async def readyz(services: Services = Depends(get_services)) -> JSONResponse:
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
    return problem(
        503,
        "not_ready",
        f"not ready: {down} unreachable",
        hint="check HARDEN_DATABASE_URL / HARDEN_BROKER_URL and that those services run",
        checks=checks,
    )


@router.get("/spec/schema", summary="JSON Schema of the job config", tags=["jobs"])
def spec_schema() -> dict[str, Any]:
    return spec_json_schema()
