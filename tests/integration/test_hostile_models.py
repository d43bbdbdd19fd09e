"""Hostile models against the production shape (uvicorn, a Celery worker, Redis, PostgreSQL, keys):
file-reading TorchScript and external-data ONNX are refused at upload and never run; a model whose
forward never returns is cancelled within seconds, or stopped by the no-progress watchdog, and the
worker then runs the next job."""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path

import httpx
import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import Tensor, nn

from tests.integration.conftest import Cluster, tiny_torchscript, wait_for
from tests.integration.test_redis_postgres import FAST, create_key

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


class ReadsAndWrites(nn.Module):
    def __init__(self, secret: str, marker: str) -> None:
        super().__init__()
        self.linear = nn.Linear(64, 10)
        self.secret, self.marker = secret, marker

    def forward(self, x: Tensor) -> Tensor:
        torch.from_file(self.marker, True, 16, dtype=torch.uint8).fill_(65)
        leaked = torch.from_file(self.secret, False, 8, dtype=torch.uint8)
        return self.linear(x.flatten(1)) + leaked[:1].float()


class Spins(nn.Module):
    """Allowed operators only; its loop never ends on finite inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(64, 10)

    def forward(self, x: Tensor) -> Tensor:
        turns = 0
        while bool(x.sum() > -1e30):
            turns += 1
        return self.linear(x.flatten(1)) + turns


def _script(module: nn.Module, path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(module), str(path))
    return path


def _onnx_reading(path: Path, location: str) -> Path:
    value = numpy_helper.from_array(np.zeros(4, np.float32), "stolen")
    value.ClearField("raw_data")
    value.data_location = TensorProto.EXTERNAL
    entry = value.external_data.add()
    entry.key, entry.value = "location", location
    graph = helper.make_graph(
        [
            helper.make_node("Constant", [], ["c"], value=value),
            helper.make_node("Flatten", ["x"], ["f"]),
            helper.make_node("Add", ["f", "c"], ["y"]),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 2, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    onnx.save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


@pytest.fixture
def service(redis_cluster: Cluster) -> tuple[Cluster, dict[str, str]]:
    redis_cluster.env["HARDEN_MODEL_STALL_TIMEOUT_S"] = "10"
    redis_cluster.start_api()
    redis_cluster.start_worker("w1")
    return redis_cluster, {"Authorization": f"Bearer {create_key(redis_cluster, 'tenant')}"}


def _submit(cluster: Cluster, headers: dict[str, str], model: Path) -> httpx.Response:
    with model.open("rb") as handle:
        return httpx.post(
            f"{cluster.url}/harden",
            headers=headers,
            files={"model": (model.name, handle)},
            data={"config": '{"dataset": "builtin:digits", "evaluation": {"enabled": false}}'},
            timeout=60,
        )


def _job(cluster: Cluster, headers: dict[str, str], job_id: str) -> dict:
    response = httpx.get(f"{cluster.url}/jobs/{job_id}", headers=headers, timeout=10)
    return dict(response.json())


def test_file_reading_models_are_refused_at_upload(service, tmp_path):
    cluster, headers = service
    secret = tmp_path / "artifacts" / "another-job" / "inputs" / "model"
    secret.parent.mkdir(parents=True)
    secret.write_bytes(b"another tenant's upload")
    marker = tmp_path / "written-by-a-model"
    uploads = {
        _script(ReadsAndWrites(str(secret), str(marker)), tmp_path / "reads.pt"): "aten::",
        _onnx_reading(tmp_path / "reads.onnx", str(secret)): "external file",
    }
    for model, named in uploads.items():
        response = _submit(cluster, headers, model)
        assert response.status_code == 422, response.text
        problem = response.json()
        assert problem["code"] == "unsafe_model" and named in problem["detail"], problem
        assert problem["hint"]
    listed = httpx.get(f"{cluster.url}/jobs", headers=headers, timeout=10).json()
    assert listed["items"] == [] and not marker.exists()


def test_a_looping_model_is_cancelled_or_timed_out_and_the_worker_goes_on(service, tmp_path):
    cluster, headers = service
    spins = _script(Spins(), tmp_path / "spins.pt")

    cancelled = _submit(cluster, headers, spins).json()["id"]
    wait_for(lambda: _job(cluster, headers, cancelled)["state"] == "running", 60, "running")
    time.sleep(1.0)  # inside the endless forward by now
    asked = time.monotonic()
    httpx.post(f"{cluster.url}/jobs/{cancelled}/cancel", headers=headers, timeout=10)
    wait_for(lambda: _job(cluster, headers, cancelled)["state"] == "cancelled", 30, "cancelled")
    assert time.monotonic() - asked < 10

    stalled = _submit(cluster, headers, spins).json()["id"]
    wait_for(lambda: _job(cluster, headers, stalled)["state"] == "failed", 90, "model_timeout")
    assert _job(cluster, headers, stalled)["error"]["code"] == "model_timeout"

    plain = tiny_torchscript(tmp_path / "plain.pt")
    with plain.open("rb") as handle:
        response = httpx.post(
            f"{cluster.url}/harden",
            headers=headers,
            files={"model": ("plain.pt", handle)},
            data={"config": json.dumps(FAST)},
            timeout=60,
        )
    job_id = response.json()["id"]
    wait_for(
        lambda: _job(cluster, headers, job_id)["state"] == "succeeded",
        120,
        "the next job",
        lambda: f"{_job(cluster, headers, job_id)}\n{cluster.log('w1')[-4000:]}",
    )
