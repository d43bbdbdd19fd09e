"""The artifact stores against the same properties: LocalStore on a folder, S3Store on moto's
S3 server (real HTTP on 127.0.0.1, the same boto3 calls as against AWS or MinIO)."""

from __future__ import annotations

import hashlib
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.infra.artifacts import CHUNK, ArtifactStore, LocalStore, S3Store, make_store
from app.infra.settings import Settings
from core.names import ARTIFACT_NAMES

BUCKET = "harden-test"


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server, one per module (starting it takes a moment)."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # Fake credentials, and no real AWS configuration file of the developer's read by boto3.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def s3_settings(s3_endpoint: str, aws_env: None, tmp_path: Path) -> Settings:
    import boto3

    # A bucket per test: the server lives for the whole module.
    bucket = f"{BUCKET}-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=bucket)
    return Settings(
        artifact_store="s3",
        s3_bucket=bucket,
        s3_prefix="harden/",
        s3_endpoint_url=s3_endpoint,
        artifact_dir=tmp_path / "unused",
    )


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ArtifactStore:
    """Each store as app/ and worker/ get it: from the settings, through make_store."""
    if request.param == "s3":
        settings: Settings = request.getfixturevalue("s3_settings")
    else:
        settings = Settings(artifact_dir=tmp_path / "artifacts")
    made = make_store(settings)
    assert isinstance(made, S3Store if request.param == "s3" else LocalStore)
    return made


def new_job() -> str:
    return uuid.uuid4().hex


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def read_all(store: ArtifactStore, job_id: str, name: str) -> bytes:
    return b"".join(store.iter_bytes(job_id, name))


def test_put_returns_the_sha256_and_the_bytes_come_back(store, tmp_path: Path) -> None:
    job_id = new_job()
    data = b"onnx bytes \x00\x01" * 100
    source = write(tmp_path / "model.onnx", data)
    assert store.put(job_id, "model.onnx", source) == hashlib.sha256(data).hexdigest()
    assert source.read_bytes() == data  # a copy: the source stays
    assert store.exists(job_id, "model.onnx")
    assert read_all(store, job_id, "model.onnx") == data
    fetched = store.fetch(job_id, "model.onnx", tmp_path / "down" / "deep" / "model.onnx")
    assert fetched == tmp_path / "down" / "deep" / "model.onnx"
    assert fetched.read_bytes() == data


def test_put_with_move_consumes_the_source(store, tmp_path: Path) -> None:
    job_id = new_job()
    source = write(tmp_path / "upload", b"model")
    store.put(job_id, "inputs/model", source, move=True)
    assert not source.exists()
    assert read_all(store, job_id, "inputs/model") == b"model"


def test_put_replaces_a_file_whole(store, tmp_path: Path) -> None:
    job_id = new_job()
    store.put(job_id, "report.json", write(tmp_path / "a", b"first, longer version"))
    digest = store.put(job_id, "report.json", write(tmp_path / "b", b"second"))
    assert digest == hashlib.sha256(b"second").hexdigest()
    assert read_all(store, job_id, "report.json") == b"second"
    assert store.job_names(job_id) == ["report.json"]


def test_large_files_stream_in_chunks_and_round_trip(store, tmp_path: Path) -> None:
    job_id = new_job()
    # Past boto3's multipart threshold (8 MiB), and several stream chunks.
    data = (hashlib.sha256(b"seed").digest() * (9 * 1024 * 1024 // 32 + 7))[: 9 * 1024 * 1024 + 5]
    digest = store.put(job_id, "model.onnx", write(tmp_path / "big", data))
    assert digest == hashlib.sha256(data).hexdigest()
    chunks = list(store.iter_bytes(job_id, "model.onnx"))
    assert len(chunks) >= 2 and all(len(c) <= CHUNK for c in chunks)
    assert b"".join(chunks) == data
    assert store.fetch(job_id, "model.onnx", tmp_path / "big-back").read_bytes() == data


def test_missing_files(store, tmp_path: Path) -> None:
    job_id = new_job()
    assert not store.exists(job_id, "model.onnx")
    assert store.job_names(job_id) == []
    with pytest.raises(FileNotFoundError):
        store.fetch(job_id, "model.onnx", tmp_path / "x")
    with pytest.raises(FileNotFoundError):
        read_all(store, job_id, "model.onnx")
    store.delete_job(job_id)  # nothing to delete is not an error


def test_job_names_and_delete_job_cover_one_job_only(store, tmp_path: Path) -> None:
    job_id, other = new_job(), new_job()
    for name in ("inputs/model", "inputs/dataset.npz", "model.onnx", "report.json"):
        store.put(job_id, name, write(tmp_path / name, name.encode()))
    store.put(other, "inputs/model", write(tmp_path / "other", b"other"))
    assert store.job_names(job_id) == [
        "inputs/dataset.npz",
        "inputs/model",
        "model.onnx",
        "report.json",
    ]
    store.delete_job(job_id)
    assert store.job_names(job_id) == []
    assert not store.exists(job_id, "inputs/model")
    assert store.job_names(other) == ["inputs/model"]
    assert read_all(store, other, "inputs/model") == b"other"


def test_checkpoints_and_shard_results_are_stored_and_deleted_one_by_one(
    store, tmp_path: Path
) -> None:
    """What resuming and spreading an audit keep per job (worker/runner.py, worker/shards.py):
    checkpoints under their attempt, shard results under audit/; each deleted alone."""
    job_id = new_job()
    names = ["checkpoints/2/train-00-teacher.safetensors", "audit/audit-3.safetensors"]
    for name in names:
        store.put(job_id, name, write(tmp_path / name.replace("/", "-"), name.encode()))
        assert read_all(store, job_id, name) == name.encode()
    store.put(job_id, "model.onnx", write(tmp_path / "m", b"m"))
    store.delete(job_id, names[0])
    store.delete(job_id, names[0])  # gone already: no error
    assert store.job_names(job_id) == [names[1], "model.onnx"]
    store.delete(job_id, names[1])
    assert store.job_names(job_id) == ["model.onnx"]


def test_a_job_whose_id_prefixes_another_keeps_its_files(store, tmp_path: Path) -> None:
    # Keys are <prefix><job id>/<name>: listing one job must not reach into another's.
    job_id = new_job()
    store.put(job_id, "model.onnx", write(tmp_path / "m", b"m"))
    assert store.job_names(job_id[:-1] + ("0" if job_id[-1] != "0" else "1")) == []


@pytest.mark.parametrize(
    ("job_id", "name"),
    [
        ("../" + "a" * 29, "model.onnx"),
        ("A" * 32, "model.onnx"),
        (uuid.uuid4().hex, "../secrets"),
        (uuid.uuid4().hex, "inputs/../../x"),
        (uuid.uuid4().hex, "/etc/passwd"),
        (uuid.uuid4().hex, "checkpoints/../../x"),
        (uuid.uuid4().hex, "checkpoints/x/train-00-teacher.safetensors"),
        (uuid.uuid4().hex, "audit/../report.json"),
    ],
)
def test_keys_outside_a_job_are_impossible(store, tmp_path: Path, job_id: str, name: str) -> None:
    source = write(tmp_path / "s", b"s")
    with pytest.raises(ValueError, match="bad artifact key"):
        store.put(job_id, name, source)
    with pytest.raises(ValueError, match="bad artifact key"):
        store.exists(job_id, name)


def test_only_the_local_store_serves_files_by_path(store, tmp_path: Path) -> None:
    job_id = new_job()
    store.put(job_id, "report.html", write(tmp_path / "r", b"<html></html>"))
    path = store.local_path(job_id, "report.html")
    if isinstance(store, LocalStore):
        assert path is not None and path.read_bytes() == b"<html></html>"
    else:
        assert path is None
    assert store.local_path(job_id, "model.onnx") is None


def test_s3_keys_live_under_the_prefix(s3_settings: Settings, tmp_path: Path) -> None:
    import boto3

    store = make_store(s3_settings)
    job_id = new_job()
    store.put(job_id, "inputs/model", write(tmp_path / "m", b"m"))
    client = boto3.client("s3", endpoint_url=s3_settings.s3_endpoint_url)
    listed = client.list_objects_v2(Bucket=s3_settings.s3_bucket)["Contents"]
    assert [obj["Key"] for obj in listed] == [f"harden/{job_id}/inputs/model"]


def test_s3_errors_other_than_a_missing_file_are_not_hidden(
    s3_settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from botocore.exceptions import ClientError, EndpointConnectionError

    # An unreachable store is an error, not "no such file": a finished job would otherwise
    # look incomplete to the worker and be run again.
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    with socket.socket() as sock:  # a port where nothing listens
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    down = make_store(s3_settings.model_copy(update={"s3_endpoint_url": closed}))
    with pytest.raises(EndpointConnectionError):
        down.exists(new_job(), "model.onnx")
    no_bucket = make_store(s3_settings.model_copy(update={"s3_bucket": "no-such-bucket"}))
    with pytest.raises(ClientError, match="NoSuchBucket"):
        no_bucket.job_names(new_job())


def test_the_service_on_s3_submit_run_download_delete(s3_settings: Settings, tmp_path: Path):
    """The API and the worker code paths on S3: the upload lands in the bucket, the runner
    fetches it, runs the real pipeline on it and stores its outputs, downloads stream from S3
    (no local path), and DELETE empties the job's prefix."""
    import onnx
    from fastapi.testclient import TestClient

    from app.infra.store import JobStore
    from app.web.main import create_app
    from tests.app.conftest import onnx_model_bytes
    from tests.app.web.test_submit import post
    from tests.worker.real_pipeline import RecordingPipeline
    from worker.runner import WorkerServices, run_job

    settings = s3_settings.model_copy(
        update={
            "database_url": f"sqlite:///{tmp_path}/harden.db",
            "broker_url": "memory://",
            "upload_dir": tmp_path / "uploads",
            "work_dir": tmp_path / "work",
            "auth": "open",
            "progress_interval_s": 0.0,
            "contain_models": False,  # the recording pipeline runs in this process
        }
    )
    with TestClient(create_app(settings)) as api:
        submitted = post(api, {}, onnx_model_bytes())
        assert submitted.status_code == 202, submitted.text
        job_id = submitted.json()["id"]
        files = make_store(settings)
        assert files.job_names(job_id) == ["inputs/model"]

        worker = WorkerServices(settings, JobStore.from_url(settings.database_url), files)
        pipeline = RecordingPipeline()
        assert run_job(worker, job_id, pipeline=pipeline) == "succeeded"
        assert pipeline.calls[0].model == onnx_model_bytes()  # fetched from the bucket
        assert files.job_names(job_id) == sorted(["inputs/model", *ARTIFACT_NAMES])

        # The bytes the pipeline wrote come back from the bucket: the same digest in the job,
        # in the report the pipeline wrote, and of the download.
        written = pipeline.results[0].report.export.sha256
        assert worker.store.get(job_id).artifacts["model.onnx"] == written
        assert api.get(f"/jobs/{job_id}/report.json").json()["export"]["sha256"] == written
        download = api.get(f"/jobs/{job_id}/model.onnx")
        assert download.status_code == 200
        digest = hashlib.sha256(download.content).hexdigest()
        assert digest == written and download.headers["etag"] == f'"{digest}"'
        onnx.checker.check_model(onnx.load_from_string(download.content))
        assert download.headers["content-disposition"] == 'attachment; filename="model.onnx"'
        cached = api.get(f"/jobs/{job_id}/model.onnx", headers={"If-None-Match": f'"{digest}"'})
        assert cached.status_code == 304

        assert api.delete(f"/jobs/{job_id}").status_code == 204
        assert files.job_names(job_id) == []
        assert api.get(f"/jobs/{job_id}").status_code == 404
