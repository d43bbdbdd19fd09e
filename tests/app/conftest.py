"""In-process API fixtures: SQLite job store, local artifact folder, Celery's in-memory broker."""

from __future__ import annotations

import io
import pickle
import threading
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient
from onnx import TensorProto, helper

from app.infra.api_keys import ApiKeyStore
from app.infra.settings import Settings
from app.infra.store import JobStore
from app.web.main import create_app


def onnx_model_bytes(side: int = 8, classes: int = 10, channels: int = 1) -> bytes:
    """A tiny valid ONNX classifier (Flatten + Gemm) for channels x side x side inputs (1x8x8:
    builtin:digits; side 28: builtin:mnist)."""
    features = channels * side * side
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
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", channels, side, side])],
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
        contain_models=False,  # run_job in the test process (tests/worker/conftest.py says why)
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
    return ApiKeyStore(store.engine).create("alice")


@pytest.fixture
def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@contextmanager
def served(app: FastAPI) -> Iterator[str]:
    """``app`` behind a real uvicorn server (its access log included) on a free port."""
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None, lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(500):
        if server.started:
            break
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def files_under(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []


def npy_bytes(array: np.ndarray, *, header_shape: tuple[int, ...] | None = None) -> bytes:
    """The .npy file of ``array``; ``header_shape`` makes its header lie about the data."""
    buffer = io.BytesIO()
    header = np.lib.format.header_data_from_array_1_0(array)
    if header_shape is not None:
        header["shape"] = header_shape
    np.lib.format.write_array_header_1_0(buffer, header)
    buffer.write(np.ascontiguousarray(array).tobytes())
    return buffer.getvalue()


def npz_of_members(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name + ".npy", data)
    return buffer.getvalue()


def digits_like_arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "x_train": rng.random((20, 1, 8, 8), dtype=np.float32),
        "y_train": np.arange(20) % 10,
        "x_test": rng.random((10, 1, 8, 8), dtype=np.float32),
        "y_test": np.arange(10),
    }


def hostile_npz() -> dict[str, bytes]:
    """.npz datasets the service must refuse at upload (422), by what is wrong with them."""
    good = digits_like_arrays()

    def variant(**changes: np.ndarray) -> bytes:
        return npz_bytes(**(good | changes))

    nan_images = good["x_train"].copy()
    nan_images[3, 0, 4, 4] = np.nan
    inf_images = good["x_test"].copy()
    inf_images[0, 0, 0, 0] = np.inf
    members = {name: npy_bytes(array) for name, array in good.items()}
    return {
        "npz: NaN pixel": variant(x_train=nan_images),
        "npz: infinite pixel": variant(x_test=inf_images),
        "npz: pixels outside input_range": variant(x_train=good["x_train"] * 300),
        "npz: negative label": variant(y_train=good["y_train"] - 1),
        "npz: test label never trained": variant(y_test=np.full(10, 12)),
        "npz: label past any class count": variant(y_train=good["y_train"] * 10**9),
        "npz: fractional float labels": variant(y_train=good["y_train"] + 0.5),
        "npz: NaN label": variant(y_test=np.full(10, np.nan)),
        "npz: one class only": variant(y_train=np.zeros(20, dtype=np.int64)),
        "npz: uint16 images": variant(x_train=(good["x_train"] * 60000).astype(np.uint16)),
        "npz: no channel axis": variant(x_train=np.zeros((20, 5, 8, 8), np.float32)),
        "npz: train and test shapes differ": variant(x_test=np.zeros((10, 1, 9, 9), np.float32)),
        "npz: labels one-hot": variant(y_train=np.eye(10)[good["y_train"]]),
        "npz: fewer labels than images": variant(y_train=good["y_train"][:15]),
        "npz: empty test split": variant(
            x_test=np.zeros((0, 1, 8, 8), np.float32), y_test=np.zeros(0, np.int64)
        ),
        # The labels agree with the lie: only the bytes after the header can tell.
        "npz: header claims more images than stored": npz_of_members(
            members
            | {
                "x_train": npy_bytes(good["x_train"], header_shape=(40, 1, 8, 8)),
                "y_train": npy_bytes(np.arange(40) % 10),
            }
        ),
        "npz: header claims fewer images than stored": npz_of_members(
            members
            | {
                "x_train": npy_bytes(good["x_train"], header_shape=(10, 1, 8, 8)),
                "y_train": npy_bytes(np.arange(10)),
            }
        ),
        "npz: header claims more labels than stored": npz_of_members(
            members | {"y_test": npy_bytes(good["y_test"], header_shape=(1000,))}
        ),
    }
