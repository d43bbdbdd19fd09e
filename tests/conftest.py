"""Fixtures shared across the test folders."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.worker.mlflow_server import mlflow_server


@pytest.fixture(scope="session")
def tracking_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `mlflow server` on loopback (SQLite, served artifacts), one per test session: the
    MLflow hand-off tests of the worker and of `harden run` log to it."""
    with mlflow_server(tmp_path_factory.mktemp("mlflow")) as url:
        yield url
