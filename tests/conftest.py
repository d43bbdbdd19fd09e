"""Fixtures shared across the test folders."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.worker.mlflow_server import MlflowServer

_MLFLOW: list[tuple[MlflowServer, Path]] = []


def pytest_collection_finish(session: pytest.Session) -> None:
    # Start the MLflow server now, in the background, when a collected test will use it: its
    # start overlaps the tests that run before the first of those.
    if any("tracking_uri" in getattr(item, "fixturenames", ()) for item in session.items):
        _start_mlflow()


def pytest_sessionfinish(session: pytest.Session) -> None:
    while _MLFLOW:
        server, folder = _MLFLOW.pop()
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def tracking_uri() -> Iterator[str]:
    """A real `mlflow server` on loopback (SQLite, served artifacts), one per test session: the
    MLflow hand-off tests of the worker and of `harden run` log to it."""
    if not _MLFLOW:  # not foreseen at collection (e.g. requested dynamically)
        _start_mlflow()
    yield _MLFLOW[0][0].wait_up()


def _start_mlflow() -> None:
    folder = Path(tempfile.mkdtemp(prefix="harden-mlflow-"))
    _MLFLOW.append((MlflowServer(folder), folder))
