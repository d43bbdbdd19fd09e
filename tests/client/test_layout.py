"""HardenClient.download_layout and ``harden download --layout``: the job's model as a Triton
or KServe model repository, unpacked where asked, through the API in-process."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
from google.protobuf import text_format
from harden_client import HardenAPIError, HardenClient
from typer.testing import CliRunner

import cli.service_client
from app.infra.artifacts import LocalStore
from cli.main import app
from tests.app.conftest import onnx_model_bytes
from tests.app.web.test_jobs import finish
from tests.core.deploy.test_serving_layout import ModelConfig


@pytest.fixture
def client(api, key):
    with HardenClient("http://testserver", key, transport=api._transport) as harden:
        yield harden


def test_a_layout_is_unpacked_into_a_model_repository(client, store, settings, tmp_path: Path):
    (tmp_path / "m.onnx").write_bytes(onnx_model_bytes())
    job = client.submit(tmp_path / "m.onnx", dataset="builtin:digits")
    with pytest.raises(HardenAPIError) as not_done:
        client.download_layout(job["id"], tmp_path / "early")
    assert not_done.value.code == "job_not_done"
    finish(store, LocalStore(settings.artifact_dir), tmp_path, job["id"])

    files = client.download_layout(job["id"], tmp_path / "repo", name="digits", version=4)
    assert sorted(p.relative_to(tmp_path / "repo").as_posix() for p in files) == [
        "digits/4/model.onnx",
        "digits/config.pbtxt",
    ]
    assert (tmp_path / "repo/digits/4/model.onnx").read_bytes() == onnx_model_bytes()
    config = text_format.Parse((tmp_path / "repo/digits/config.pbtxt").read_text(), ModelConfig())
    assert config.name == "digits" and config.max_batch_size == 32
    assert not list((tmp_path / "repo").glob(".*partial"))

    # The CLI's --layout is this call.
    runner = CliRunner()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cli.service_client, "_client", lambda url, key: client)
        result = runner.invoke(
            app,
            ["download", job["id"], "--layout", "kserve", "--out", str(tmp_path / "k"),
             "--storage-uri", "s3://bucket/models"],
        )  # fmt: skip
    assert result.exit_code == 0, result.output
    listed = [line.split("\t")[0] for line in result.stdout.splitlines()]
    name = f"harden-{job['id'][:8]}"
    assert sorted(listed) == sorted(
        [f"{name}/config.pbtxt", f"{name}/1/model.onnx", "inference-service.yaml"]
    )
    assert "s3://bucket/models" in (tmp_path / "k/inference-service.yaml").read_text()


def test_an_archive_entry_outside_the_folder_is_not_written(tmp_path: Path) -> None:
    from harden_client import _unpack

    archive = tmp_path / "layout.zip"
    with zipfile.ZipFile(archive, "w") as writing:
        writing.writestr("m/config.pbtxt", 'name: "m"\n')
        writing.writestr("../escaped.txt", "outside")
        writing.writestr("/abs.txt", "absolute")
    written = _unpack(archive, tmp_path / "repo")
    # Only the entry inside the folder: a relative escape and an absolute path are skipped.
    assert [p.relative_to(tmp_path / "repo").as_posix() for p in written] == ["m/config.pbtxt"]
    assert not (tmp_path / "escaped.txt").exists()
