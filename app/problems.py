"""Errors as ``application/problem+json`` (RFC 9457): type, title, status, detail, code, hint."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.errors import InternalError, InvalidRequestError, MethodNotAllowedError, NotFoundError
from core.errors import HardenError, InvalidSpecError

log = logging.getLogger(__name__)
PROBLEM_TYPE = "https://harden.dev/problems/"


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


def install_problem_handlers(app: FastAPI) -> None:
    """Register the handlers: core/API errors, request validation, HTTP errors, the rest."""

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
    async def _http(_: Request, exc: StarletteHTTPException) -> ProblemResponse:
        codes = {404: NotFoundError.code, 405: MethodNotAllowedError.code}
        code = codes.get(exc.status_code, "http_error")
        hint = "See /docs for the endpoints and methods." if exc.status_code in codes else ""
        # Starlette's headers carry what the status needs, e.g. Allow on a 405 (RFC 9110).
        return problem(exc.status_code, code, str(exc.detail), hint=hint, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> ProblemResponse:
        log.exception("unhandled error")
        return error_problem(
            InternalError(
                "The server failed unexpectedly; the error is logged.",
                hint="Retry later; report it to the operators if it persists.",
            )
        )
