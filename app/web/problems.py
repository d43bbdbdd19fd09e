"""Errors as ``application/problem+json`` (RFC 9457): type, title, status, detail, code, hint."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from http import HTTPStatus
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import BaseRoute, Match, Route

from app.infra.db import DATABASE_UNREACHABLE
from app.web.errors import (
    DatabaseUnavailableError,
    InternalError,
    InvalidRequestError,
    MethodNotAllowedError,
    NotFoundError,
)
from core.errors import HardenError, InvalidSpecError

log = logging.getLogger(__name__)
PROBLEM_TYPE = "https://harden.dev/problems/"
DATABASE_DOWN_ERROR = DatabaseUnavailableError(
    "the job database is unreachable; nothing was changed",
    hint="retry in a moment (a POST /harden with the same Idempotency-Key); GET /readyz says "
    "which dependency is down",
)


class ProblemResponse(JSONResponse):
    media_type = "application/problem+json"


def problem_body(status: int, code: str, detail: str, *, hint: str = "", **extra: Any) -> dict:
    """The problem+json document (also what the OpenAPI examples are built from)."""
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE + code,
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "code": code,
    }
    if hint:
        body["hint"] = hint
    body.update({k: v for k, v in extra.items() if v is not None})
    return body


def problem(
    status: int,
    code: str,
    detail: str,
    *,
    hint: str = "",
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> ProblemResponse:
    """A problem+json response."""
    body = problem_body(status, code, detail, hint=hint, **extra)
    all_headers = dict(headers or {})
    if status == 401:
        all_headers["WWW-Authenticate"] = "Bearer"
    return ProblemResponse(body, status_code=status, headers=all_headers or None)


def error_problem(exc: HardenError) -> ProblemResponse:
    """The response for one of the service's errors."""
    fields = {k: v for k, v in exc.fields.items() if k not in ("code", "hint")}
    return problem(exc.status, exc.code, exc.message, hint=exc.hint, **fields)


def field_errors(exc: ValidationError | RequestValidationError, prefix: str = "") -> list[dict]:
    """Pydantic errors as [{field, message, type}], fields dotted (``config.temperature``)."""
    out = []
    for err in exc.errors():
        location = [str(p) for p in err.get("loc", ()) if p not in ("body",)]
        field = ".".join(([prefix] if prefix else []) + location) or prefix or "request"
        out.append({"field": field, "message": err.get("msg", ""), "type": err.get("type", "")})
    return out


def spec_error(exc: ValidationError) -> InvalidSpecError:
    """A config that does not validate against HardenSpec, as a core error listing the fields."""
    errors = field_errors(exc, "config")
    listing = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
    return InvalidSpecError(
        f"The job config is invalid: {listing}",
        hint="Fix the listed fields of the 'config' JSON; GET /spec/schema shows every field, "
        "its type and its allowed range.",
        errors=errors,
    )


def allowed_methods(request: Request, routes: Iterable[BaseRoute]) -> list[str]:
    """The methods of every route at the request's path. Starlette's 405 names those of the
    first route only, though GET and DELETE /jobs/{id} are two routes (RFC 9110 wants all)."""
    methods: set[str] = set()
    for route in routes:
        if isinstance(route, Route) and route.methods:
            match, _ = route.matches(request.scope)
            if match != Match.NONE:
                methods |= route.methods
    return sorted(methods)


def install_problem_handlers(app: FastAPI, routers: Sequence[APIRouter] = ()) -> None:
    """Register the handlers: core/API errors, request validation, HTTP errors, the rest.
    ``routers`` are searched for the methods a 405 lists in ``Allow``."""

    @app.exception_handler(HardenError)
    async def _harden(_: Request, exc: HardenError) -> ProblemResponse:
        return error_problem(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> ProblemResponse:
        errors = field_errors(exc)
        listing = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        return error_problem(
            InvalidRequestError(
                f"The request is invalid: {listing}",
                hint="Fix the listed fields; the OpenAPI document at /docs describes each one.",
                errors=errors,
            )
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> ProblemResponse:
        status, detail = exc.status_code, str(exc.detail)
        headers = dict(exc.headers or {})  # what the status needs, e.g. Allow on a 405
        hint = ""
        generic = detail == HTTPStatus(status).phrase
        if status == 404:
            detail = f"nothing at {request.url.path}" if generic else detail
            hint = "check the URL; /docs lists the endpoints"
        elif status == 405:
            routes = [route for router in routers for route in router.routes]
            starlette_allow = headers.pop("Allow", "")  # Starlette's spelling
            allowed = allowed_methods(request, routes) or starlette_allow.split(", ")
            headers["Allow"] = ", ".join(allowed)
            detail = f"{request.method} is not allowed on {request.url.path}" if generic else detail
            hint = f"use {' or '.join(allowed)}; /docs lists the endpoints and their methods"
        codes = {404: NotFoundError.code, 405: MethodNotAllowedError.code}
        return problem(status, codes.get(status, "http_error"), detail, hint=hint, headers=headers)

    async def _database_down(_: Request, exc: Exception) -> ProblemResponse:
        log.warning("the job database is unreachable: %s", exc.__class__.__name__)
        return error_problem(DATABASE_DOWN_ERROR)

    for error_class in DATABASE_UNREACHABLE:
        app.add_exception_handler(error_class, _database_down)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> ProblemResponse:
        log.exception("unhandled error")
        return error_problem(
            InternalError(
                "The server failed unexpectedly; the error is logged.",
                hint="Retry later; report it to the operators if it persists.",
            )
        )
