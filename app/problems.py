"""Errors as ``application/problem+json`` (RFC 9457): type, title, status, detail, code, hint."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from core.errors import HardenError, InvalidSpecError

log = logging.getLogger(__name__)
PROBLEM_TYPE = "https://harden.dev/problems/"


class ProblemResponse(JSONResponse):
    media_type = "application/problem+json"


def problem(
    status: int, code: str, detail: str, *, hint: str = "", **extra: Any
) -> ProblemResponse:
    """A problem+json response."""
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
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return ProblemResponse(body, status_code=status, headers=headers)


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


def install_problem_handlers(app: FastAPI) -> None:
    """Register the handlers: core/API errors, request validation, HTTP errors, the rest."""

    @app.exception_handler(HardenError)
    async def _harden(_: Request, exc: HardenError) -> ProblemResponse:
        fields = {k: v for k, v in exc.fields.items() if k not in ("code", "hint")}
        return problem(exc.status, exc.code, exc.message, hint=exc.hint, **fields)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> ProblemResponse:
        errors = field_errors(exc)
        listing = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        return problem(
            422,
            "invalid_request",
            f"The request is invalid: {listing}",
            hint="Fix the listed fields; the OpenAPI document at /docs describes each one.",
            errors=errors,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> ProblemResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        hint = "See /docs for the endpoints and methods." if exc.status_code in (404, 405) else ""
        return problem(exc.status_code, code, str(exc.detail), hint=hint)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> ProblemResponse:
        log.exception("unhandled error")
        return problem(
            500,
            "internal",
            "The server failed unexpectedly; the error is logged.",
            hint="Retry later; report it to the operators if it persists.",
        )
