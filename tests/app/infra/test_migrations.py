"""The Alembic migrations create exactly the ORM's schema, on SQLite and on PostgreSQL."""

from __future__ import annotations

import uuid
from pathlib import Path

import psycopg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from app.infra.db import Base, make_engine
from app.infra.migrate import upgrade

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"


def assert_schema_matches(url: str) -> None:
    upgrade(url)
    upgrade(url)  # a second start finds nothing to do
    engine = make_engine(url)
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
        assert {"jobs", "api_keys", "alembic_version"} <= set(inspect(conn).get_table_names())
    engine.dispose()


def test_sqlite(tmp_path: Path):
    assert_schema_matches(f"sqlite:///{tmp_path}/nested/dir/harden.db")


@pytest.mark.integration
def test_postgresql():
    name = f"harden_mig_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        assert_schema_matches(f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}")
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
