"""A property test of the HTTP API driven by its own OpenAPI document (schemathesis): generated
requests, valid and invalid, to every operation; no answer may be a 5xx or break what the
document declares (status codes, media types, headers, bodies).

The app runs in-process on a real PostgreSQL job store (where a NUL byte in an id was a 500)
and Celery's in-memory broker. ``HARDEN_FUZZ_EXAMPLES`` sets the examples per operation (a few
dozen here; ``bench/api_fuzz.py`` runs thousands).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import positive_data_acceptance

from app.infra.api_keys import ApiKeyStore
from app.infra.migrate import upgrade
from app.infra.settings import Settings
from app.infra.store import JobStore
from app.web.main import create_app

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
EXAMPLES = int(os.environ.get("HARDEN_FUZZ_EXAMPLES", "25"))
DATABASE = f"harden_fuzz_{uuid.uuid4().hex[:12]}"
DATABASE_URL = f"postgresql+psycopg://postgres@127.0.0.1:5432/{DATABASE}"
FOLDER = Path(tempfile.mkdtemp(prefix="harden-fuzz-"))

pytestmark = pytest.mark.integration

# The app connects to its database on the first request, so the document can be read here; the
# fixture below creates the database before any request is sent.
APP = create_app(
    Settings(
        database_url=DATABASE_URL,
        broker_url="memory://",
        artifact_dir=FOLDER / "artifacts",
        upload_dir=FOLDER / "uploads",
        work_dir=FOLDER / "work",
        auth="keys",
        max_upload_bytes=256 * 1024,
        migrate_on_start=False,
    )
)
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)
KEY: dict[str, str] = {}
# Requests sent per operation, and their status codes: printed at the end (``-s``).
SENT: Counter[str] = Counter()


@pytest.fixture(scope="module", autouse=True)
def database() -> Iterator[None]:
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{DATABASE}"')
    upgrade(DATABASE_URL)
    store = JobStore.from_url(DATABASE_URL)
    KEY["fuzz"] = ApiKeyStore(store.engine).create("fuzz")
    store.engine.dispose()
    yield
    print(f"\nschemathesis: {sum(SENT.values())} requests, {EXAMPLES} examples per operation")
    for line, count in sorted(SENT.items()):
        print(f"  {count:6d}  {line}")
    APP.state.services.store.engine.dispose()
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
    shutil.rmtree(FOLDER, ignore_errors=True)


@schema.auth(refresh_interval=None)
class ApiKey:
    """The API key, sent as schemathesis' own auth: its cases that leave the key out or break it
    on purpose (401 expected) stay as generated."""

    def get(self, case: schemathesis.Case, context: schemathesis.AuthContext) -> str:
        # Asked once at collection too, before the database (and the key) exist.
        return KEY.get("fuzz", "hk_not_yet")

    def set(self, case: schemathesis.Case, data: str, context: schemathesis.AuthContext) -> None:
        case.headers["Authorization"] = f"Bearer {data}"


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_no_5xx_and_every_answer_fits_the_document(case) -> None:
    # Every check but one: a schema-valid upload is often no model or dataset at all (random
    # bytes for the 'model' or 'dataset' part), which the document cannot describe; its 422 is
    # the right answer.
    uploads = case.operation.path in ("/harden", "/datasets") and case.method.upper() == "POST"
    excluded = [positive_data_acceptance] if uploads else []
    response = case.call()
    SENT[f"{case.operation.method.upper()} {case.operation.path} -> {response.status_code}"] += 1
    case.validate_response(response, excluded_checks=excluded)
