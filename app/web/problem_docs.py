"""The errors each route can answer, documented from one table (app.web.problem_examples).

Routes pick entries by name; :func:`error_responses` turns them into OpenAPI responses, one per
status, with the codes listed in the description and each entry as a named
``application/problem+json`` example.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from typing import Any

from app.web.problem_examples import EXAMPLES

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_REF = "#/components/schemas/Problem"


# The opening sentence of each status' description; the codes follow it.
_LEADS = {
    400: "The body is not a well-formed upload.",
    401: "No valid API key (only when the service runs with HARDEN_AUTH=keys).",
    404: "Nothing of the caller's at this URL.",
    409: "The request conflicts with the state of a job (or of the jobs reading a dataset) or "
    "an earlier request.",
    413: "An upload is over its size limit; it was refused while streaming and nothing was kept.",
    422: "The request is refused before anything is stored or queued.",
    429: "The API key has as many jobs queued or running as the service allows at once; "
    "nothing was stored.",
    503: "A dependency of the service is down; retry later.",
}

# Every route that checks a key reads the job database, which may be down.
AUTH = ("no_api_key", "unknown_api_key", "database_unreachable")
Responses = dict[int | str, dict[str, Any]]


def responses(success: Mapping[int | str, dict[str, Any]], *errors: str) -> Responses:
    """A route's ``responses=``: its success responses as given, and its errors by name."""
    documented: Responses = dict(success)
    return documented | error_responses(*errors)


def error_responses(*names: str) -> Responses:
    """OpenAPI responses for the named ``EXAMPLES``: one per status, its description listing
    each code and when it happens, every entry a named problem+json example."""
    by_status: dict[int, list[str]] = defaultdict(list)
    for name in names:
        by_status[EXAMPLES[name].status].append(name)
    return {status: _response(status, chosen) for status, chosen in sorted(by_status.items())}


def _response(status: int, names: list[str]) -> dict[str, Any]:
    whens: dict[str, list[str]] = defaultdict(list)
    for name in names:
        whens[EXAMPLES[name].error.code].append(EXAMPLES[name].when)
    codes = "\n".join(f"- `{code}`: {'; '.join(text)}" for code, text in whens.items())
    lead = _LEADS.get(status, "Refused.")
    return {
        "description": f"{lead} The body is a Problem; `code` is one of:\n\n{codes}\n\n"
        "`hint` says how to fix the request.",
        "content": {
            PROBLEM_MEDIA_TYPE: {
                "schema": {"$ref": PROBLEM_REF},
                "examples": {
                    name: {"summary": EXAMPLES[name].when, "value": EXAMPLES[name].body()}
                    for name in names
                },
            }
        },
    }
