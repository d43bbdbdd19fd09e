"""In-process API fixtures: SQLite job store, local artifact folder, Celery's in-memory broker."""

from __future__ import annotations

import io
import pickle
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from onnx import TensorProto, helper

from app.infra.settings import Settings
from app.infra.store import JobStore
from app.web.main import create_app


def onnx_model_bytes(features: int = 64, classes: int = 10) -> bytes:
    """A tiny valid ONNX classifier (Flatten + Gemm) for 1x8x8 inputs."""
    rng = np.random.default_rng(0)
    weight = helper.make_tensor(
        "W", TensorProto.FLOAT, [features, classes], rng.normal(size=features * classes).tolist()
    )
    bias = helper.make_tensor("B", TensorProto.FLOAT, [classes], [0.0] * classes)
    graph = helper.make_graph(
        [
            helper.make_node("Flatten", ["x"], ["flat"], axis=1),
            helper.make_node("Gemm", ["flat", "W", "B"], ["logits"]),
        ],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes])],
        initializer=[weight, bias],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    return model.SerializeToString()


def pickle_bytes() -> bytes:
    return pickle.dumps({"state_dict": [1, 2, 3]})


def npz_bytes(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def digits_like_npz(drop: str | None = None) -> bytes:
    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.random((20, 1, 8, 8), dtype=np.float32),
        "y_train": rng.integers(0, 10, 20),
        "x_test": rng.random((10, 1, 8, 8), dtype=np.float32),
        "y_test": rng.integers(0, 10, 10),
    }
    if drop:
        arrays.pop(drop)
    return npz_bytes(**arrays)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        database_url=f"sqlite:///{tmp_path}/harden.db",
        broker_url="memory://",
        artifact_dir=tmp_path / "artifacts",
        upload_dir=tmp_path / "uploads",
        work_dir=tmp_path / "work",
        auth="keys",
        max_upload_bytes=64 * 1024,
        events_poll_s=0.05,
    )


@pytest.fixture
def api(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.fixture
def store(api: TestClient, settings: Settings) -> JobStore:
    return JobStore.from_url(settings.database_url)


@pytest.fixture
def key(store: JobStore) -> str:
    return store.create_api_key("alice")


@pytest.fixture
def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def files_under(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []
