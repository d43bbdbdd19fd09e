"""GET /jobs/{id}/layout.zip: a succeeded job's model.onnx as a Triton or KServe model repository,
built from the stored file; refused before the job succeeded and for names Triton cannot take."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import onnxruntime
import yaml
from google.protobuf import text_format

from app.infra.artifacts import LocalStore
from tests.app.conftest import onnx_model_bytes
from tests.app.web.test_jobs import finish, submit
from tests.app.web.test_submit import assert_problem
from tests.core.deploy.test_serving_layout import ModelConfig


def test_a_succeeded_job_downloads_as_a_triton_repository(
    api, auth, store, settings, tmp_path: Path
) -> None:
    job = submit(api, auth)
    url = f"/jobs/{job['id']}/layout.zip"
    assert_problem(api.get(url, headers=auth), 409, "job_not_done")
    finish(store, LocalStore(settings.artifact_dir), tmp_path, job["id"])

    response = api.get(f"{url}?name=digits&version=2&max_batch_size=8", headers=auth)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        assert sorted(archive.namelist()) == ["digits/2/model.onnx", "digits/config.pbtxt"]
        archive.extractall(tmp_path / "repository")
        config = text_format.Parse(archive.read("digits/config.pbtxt").decode(), ModelConfig())
    assert (config.name, config.max_batch_size) == ("digits", 8)
    assert [list(t.dims) for t in config.input] == [[1, 8, 8]]
    model_file = tmp_path / "repository" / "digits" / "2" / "model.onnx"
    assert model_file.read_bytes() == onnx_model_bytes()
    session = onnxruntime.InferenceSession(str(model_file), providers=["CPUExecutionProvider"])
    batch = np.zeros((3, *config.input[0].dims), dtype=np.float32)
    (logits,) = session.run([config.output[0].name], {config.input[0].name: batch})
    assert logits.shape == (3, *config.output[0].dims)
    # The temporary folder is gone once the zip was sent.
    assert not list(Path(settings.artifact_dir).parent.glob("harden-layout-*"))

    kserve = api.get(f"{url}?layout=kserve", headers=auth)
    with zipfile.ZipFile(io.BytesIO(kserve.content)) as archive:
        name = f"harden-{job['id'][:8]}"
        assert f"{name}/1/model.onnx" in archive.namelist()
        manifest = yaml.safe_load(archive.read("inference-service.yaml"))
    assert manifest["spec"]["predictor"]["model"]["protocolVersion"] == "v2"

    for query in ("name=../x", "version=0", "max_batch_size=0", "layout=tensorflow"):
        assert_problem(api.get(f"{url}?{query}", headers=auth), 422, "invalid_request")
