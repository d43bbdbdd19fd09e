"""Alembic environment: online migrations only, URL from the caller or HARDEN_DATABASE_URL."""

from __future__ import annotations

import logging.config

from alembic import context

from app.infra.db import Base, make_engine
from app.infra.settings import get_settings

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logging", True):
    logging.config.fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata


def _url() -> str:
    # An explicit URL (app.infra.migrate) wins, then the environment, then alembic.ini's fallback.
    url = config.attributes.get("url")
    if url:
        return str(url)
    import os

    if os.environ.get("HARDEN_DATABASE_URL"):
        return get_settings().database_url
    return str(config.get_main_option("sqlalchemy.url"))


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = make_engine(_url())
    with engine.connect() as conn:
        context.configure(
            connection=conn,
            target_metadata=target_metadata,
            render_as_batch=conn.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline migrations are not supported: run against a database")
run_migrations_online()
