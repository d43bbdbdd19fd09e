"""The FastAPI application factory: ``uvicorn --factory app.web.main:create_app``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from app.infra import tracing
from app.infra.api_keys import ApiKeyStore
from app.infra.artifacts import make_store
from app.infra.migrate import upgrade
from app.infra.queue import make_producer
from app.infra.settings import Settings, get_settings
from app.infra.store import JobStore
from app.web.deps import Services
from app.web.observability import install as install_metrics_and_logging
from app.web.openapi_document import install_openapi
from app.web.problems import install_problem_handlers
from app.web.routes.datasets import router as datasets_router
from app.web.routes.harden import router as harden_router
from app.web.routes.health import router as health_router
from app.web.routes.jobs import router as jobs_router
from app.web.routes.outputs import router as outputs_router
from app.web.routes.pages import install_pages

DESCRIPTION = """Hardens image classifiers with defensive distillation (Papernot et al., 2016) and
audits how robust the result really is (attacks that see through gradient masking included).

Submit with `POST /harden`, follow `GET /jobs/{id}` or `/jobs/{id}/events`, download
`/jobs/{id}/model.onnx`, `/report.json`, `/report.html`. Errors are `application/problem+json`
with a `code` and a `hint` saying how to fix the request; each operation lists its codes. Any
URL may also answer 405 `method_not_allowed` (with an `Allow` header) and, on a bug, 500
`internal` (logged on the server). In a browser, `/` lists your jobs and submits new ones."""


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; ``settings`` default to the ``HARDEN_*`` environment."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.migrate_on_start:
            upgrade(settings.database_url)
        yield
        app.state.services.store.engine.dispose()

    app = FastAPIOffline(
        title="harden",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    store = JobStore.from_url(settings.database_url)
    app.state.services = Services(
        settings=settings,
        store=store,
        keys=ApiKeyStore(store.engine),  # the same engine: one connection pool
        artifacts=make_store(settings),
        producer=make_producer(settings),
    )
    routers = [health_router, harden_router, jobs_router, outputs_router, datasets_router]
    install_problem_handlers(app, routers)
    for router in routers:
        app.include_router(router)
    install_metrics_and_logging(app, settings)
    provider = tracing.install(settings, "harden-api")  # None unless HARDEN_OTEL_ENDPOINT
    if provider is not None:
        tracing.instrument_app(app, provider)
    install_openapi(app, routers, open_auth=settings.auth == "open")
    install_pages(app)  # GET /: the front door in the browser, linking /docs
    return app
