"""The OpenAPI document: FastAPI's, with what its generator cannot know put right."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.encoders import jsonable_encoder
from fastapi.routing import APIRoute

from app.web.api_docs import JOB_PAGE, RUNNING, SUCCEEDED
from app.web.problem_docs import PROBLEM_REF
from app.web.schemas import Problem


def install_openapi(app: FastAPI, routers: Sequence[APIRouter], *, open_auth: bool) -> None:
    """Generate the document once, then correct what FastAPI cannot know:

    * the Problem schema, which routes reference from ``application/problem+json`` (FastAPI
      only registers models it puts under ``application/json``);
    * FastAPI's own 422 (``HTTPValidationError``), which it adds to every route with parameters
      although this app answers validation errors as problem+json; routes where a 422 can
      happen declare it with :func:`app.web.problem_docs.error_responses`;
    * the nulls of the examples, which FastAPI's generator drops (it serialises the document
      with ``exclude_none``), leaving examples that lack required nullable fields;
    * in open mode (``open_auth``), no API key: the document of such a service asks for none
      and lists no 401.

    ``routers`` are the routers the app includes (as they are, with no further prefix): their
    routes' declared examples are put back.
    """
    generate = app.openapi
    corrected: list[dict[str, Any]] = []

    def openapi() -> dict[str, Any]:
        document = generate()  # FastAPI's, cached until the routes change
        if not corrected or corrected[0] is not document:
            _drop_default_validation_errors(document)
            _add_problem_schema(document)
            _restore_examples(document, routers)
            if open_auth:
                _drop_authentication(document)
            corrected[:] = [document]
        return document

    app.openapi = openapi  # type: ignore[method-assign]


def _drop_default_validation_errors(document: dict[str, Any]) -> None:
    default_ref = "#/components/schemas/HTTPValidationError"
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            response = operation.get("responses", {}).get("422")
            if response and default_ref in json.dumps(response):
                del operation["responses"]["422"]
    schemas = document.get("components", {}).get("schemas", {})
    if default_ref not in json.dumps(document.get("paths", {})):
        schemas.pop("HTTPValidationError", None)
        schemas.pop("ValidationError", None)


def _drop_authentication(document: dict[str, Any]) -> None:
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            operation.pop("security", None)
            operation.get("responses", {}).pop("401", None)
    document.get("components", {}).pop("securitySchemes", None)


def _add_problem_schema(document: dict[str, Any]) -> None:
    schema = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    schemas.update(schema.pop("$defs", {}))
    schemas[PROBLEM_REF.rsplit("/", 1)[-1]] = schema


def _restore_examples(document: dict[str, Any], routers: Sequence[APIRouter]) -> None:
    routes = [route for router in routers for route in router.routes]
    for route in routes:
        if not isinstance(route, APIRoute) or not route.include_in_schema:
            continue
        for method in route.methods or ():
            operation = document["paths"][route.path_format][method.lower()]
            for status, declared in route.responses.items():
                for media_type, content in declared.get("content", {}).items():
                    target = operation["responses"][str(status)]["content"][media_type]
                    for key in ("example", "examples"):
                        if key in content:
                            target[key] = jsonable_encoder(content[key])
    schemas = document["components"]["schemas"]
    schemas["JobOut"]["examples"] = [RUNNING, SUCCEEDED]
    schemas["JobList"]["examples"] = [JOB_PAGE]
