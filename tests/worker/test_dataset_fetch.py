"""The worker fetches a job's registered or remote dataset itself (issue 13): from the artifact
store, from moto's S3 server and from an HTTP server on 127.0.0.1 (real HTTP, started here),
bounded in size and time, checked against its sha256 pin, cached by sha256, and refused where
the URL's host is not public (at every redirect)."""

from __future__ import annotations

import hashlib
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from app.infra import netguard
from app.infra.dataset_store import DatasetStore
from app.infra.db import Dataset
from app.infra.settings import Settings
from core.contract.fetched_refs import RemoteRef, parse_fetched_reference
from core.errors import DatasetError
from tests.app.conftest import digits_like_npz
from tests.app.infra.test_s3_store import aws_env, s3_endpoint  # noqa: F401  (fixtures)
from tests.worker.conftest import queue_job
from worker.dataset_fetch import CACHE_FOLDER, fetch_remote
from worker.runner import WorkerServices, run_job

DATA = digits_like_npz()
SHA = hashlib.sha256(DATA).hexdigest()


def remote(ref: str) -> RemoteRef:
    parsed = parse_fetched_reference(ref)
    assert isinstance(parsed, RemoteRef)
    return parsed


def cache_of(settings: Settings) -> list[str]:
    folder = Path(settings.work_dir) / CACHE_FOLDER
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


class _Files(BaseHTTPRequestHandler):
    """/data.npz the dataset; /moved redirects to the server's ``redirect_to``; /slow sends
    the headers, then nothing for 3 s; /big claims more bytes than any limit here."""

    def do_GET(self) -> None:
        server = self.server
        if self.path == "/data.npz":
            self._send(200, DATA)
        elif self.path == "/moved":
            self.send_response(302)
            self.send_header("Location", server.redirect_to)  # type: ignore[attr-defined]
            self.end_headers()
        elif self.path == "/slow":
            self.send_response(200)
            self.send_header("Content-Length", str(len(DATA)))
            self.end_headers()
            time.sleep(3)
        elif self.path == "/big":
            self._send(200, b"\0" * 4096)
        else:
            self._send(404, b"no such file")

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def files_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Files)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    port = server.server_address[1]
    server.redirect_to = f"http://127.0.0.2:{port}/data.npz"  # type: ignore[attr-defined]
    yield f"http://127.0.0.1:{port}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def local_http(services: WorkerServices) -> Settings:
    """The operator setting for a file server on loopback: http:// and private hosts allowed."""
    return services.settings.model_copy(
        update={"dataset_url_allow_http": True, "dataset_url_allow_private": True}
    )


def test_an_http_dataset_is_fetched_and_cached_by_its_sha256(files_server, local_http):
    path = fetch_remote(remote(f"{files_server}/data.npz"), None, local_http)
    assert path.read_bytes() == DATA and path.name == SHA
    assert cache_of(local_http) == [SHA]  # no partial file left
    # Pinned and cached: not downloaded again (the server no longer has it at this URL).
    again = fetch_remote(remote(f"{files_server}/gone.npz#sha256={SHA}"), SHA, local_http)
    assert again == path


def test_a_pin_that_does_not_match_fails_and_keeps_nothing(files_server, local_http):
    wrong = "0" * 64
    with pytest.raises(DatasetError, match=f"has sha256 {SHA}, not the pinned {wrong}"):
        fetch_remote(remote(f"{files_server}/data.npz"), wrong, local_http)
    assert cache_of(local_http) == []


def test_size_and_time_are_bounded(files_server, local_http):
    small = local_http.model_copy(update={"dataset_fetch_max_bytes": 1024})
    with pytest.raises(DatasetError, match="HARDEN_DATASET_FETCH_MAX_BYTES") as refused:
        fetch_remote(remote(f"{files_server}/big"), None, small)
    assert refused.value.fields["limit_bytes"] == 1024
    quick = local_http.model_copy(update={"dataset_fetch_timeout_s": 0.5})
    started = time.monotonic()
    with pytest.raises(DatasetError, match="ReadTimeout"):
        fetch_remote(remote(f"{files_server}/slow"), None, quick)
    assert time.monotonic() - started < 2.5  # the server would have stalled for 3 s
    with pytest.raises(DatasetError, match="answered HTTP 404"):
        fetch_remote(remote(f"{files_server}/none.npz"), None, local_http)
    assert cache_of(local_http) == []


def test_loopback_and_private_hosts_are_refused_without_the_operator_setting(
    files_server, services
):
    http_only = services.settings.model_copy(update={"dataset_url_allow_http": True})
    with pytest.raises(DatasetError, match="not a public address"):
        fetch_remote(remote(f"{files_server}/data.npz"), None, http_only)
    with pytest.raises(DatasetError, match="does not fetch"):
        fetch_remote(remote(f"{files_server}/data.npz"), None, services.settings)


def test_a_redirect_to_a_private_address_is_refused(files_server, services, monkeypatch):
    # Pretend 127.0.0.1 is a public host: the file server passes the check, and its redirect to
    # 127.0.0.2 (loopback, i.e. not public) must be refused at the second hop.
    monkeypatch.setattr(netguard, "is_public", lambda ip: str(ip) == "127.0.0.1")
    for name in ("http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    http_only = services.settings.model_copy(update={"dataset_url_allow_http": True})
    assert fetch_remote(remote(f"{files_server}/data.npz"), None, http_only).name == SHA
    with pytest.raises(DatasetError, match="127.0.0.2 is not a public address"):
        fetch_remote(remote(f"{files_server}/moved"), None, http_only)


@pytest.fixture
def s3_dataset(s3_endpoint, aws_env, services) -> tuple[Settings, str]:  # noqa: F811
    import boto3

    bucket = f"datasets-{uuid.uuid4().hex[:12]}"
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    client.create_bucket(Bucket=bucket)
    client.put_object(Bucket=bucket, Key="sets/digits.npz", Body=DATA)
    settings = services.settings.model_copy(update={"dataset_s3_endpoint_url": s3_endpoint})
    return settings, bucket


def test_an_s3_dataset_is_fetched_with_the_environments_credentials(s3_dataset):
    settings, bucket = s3_dataset
    path = fetch_remote(remote(f"s3://{bucket}/sets/digits.npz"), SHA, settings)
    assert path.read_bytes() == DATA and cache_of(settings) == [SHA]
    with pytest.raises(DatasetError, match="does not exist"):
        fetch_remote(remote(f"s3://{bucket}/sets/other.npz"), None, settings)
    with pytest.raises(DatasetError, match="bucket .* does not exist"):
        fetch_remote(remote("s3://no-such-bucket-here/x.npz"), None, settings)
    small = settings.model_copy(update={"dataset_fetch_max_bytes": 100})
    with pytest.raises(DatasetError, match="more than the limit of 100 bytes"):
        fetch_remote(remote(f"s3://{bucket}/sets/digits.npz"), None, small)
    # The service's own artifact bucket is never read for a user.
    artifacts = settings.model_copy(
        update={
            "artifact_store": "s3",
            "s3_bucket": bucket,
            "s3_endpoint_url": settings.dataset_s3_endpoint_url,
        }
    )
    with pytest.raises(DatasetError, match="artifact store"):
        fetch_remote(remote(f"s3://{bucket}/sets/digits.npz"), None, artifacts)


def test_a_job_runs_on_its_s3_dataset(s3_dataset, services):
    settings, bucket = s3_dataset
    services = WorkerServices(settings, services.store, services.artifacts)
    job_id = queue_job(services, {"dataset": f"s3://{bucket}/sets/digits.npz#sha256={SHA}"})
    assert run_job(services, job_id) == "succeeded", services.store.get(job_id).error_message


def _register(services: WorkerServices, tmp_path: Path) -> Dataset:
    dataset_id = uuid.uuid4().hex
    (tmp_path / "upload").write_bytes(DATA)
    services.artifacts.put(dataset_id, "dataset.npz", tmp_path / "upload")
    row = Dataset(
        id=dataset_id,
        owner="alice",
        name="digits",
        sha256=SHA,
        size_bytes=len(DATA),
        file_name="dataset.npz",
    )
    return DatasetStore(services.store.engine).create(row)


def test_a_job_runs_on_its_registered_dataset(services, tmp_path):
    dataset = _register(services, tmp_path)
    reference = f"dataset:{dataset.id}"
    job_id = queue_job(services, {"dataset": reference}, dataset_id=dataset.id, dataset_sha256=SHA)
    assert run_job(services, job_id) == "succeeded", services.store.get(job_id).error_message
    report = (Path(services.settings.artifact_dir) / job_id / "report.json").read_text()
    assert f'"{reference}"' in report
    # The registered file stays; the job's work folder is gone.
    assert (Path(services.settings.artifact_dir) / dataset.id / "dataset.npz").is_file()
    assert not (Path(services.settings.work_dir) / job_id).exists()


def test_a_job_whose_registered_dataset_was_deleted_fails_saying_so(services, tmp_path):
    dataset = _register(services, tmp_path)
    job_id = queue_job(
        services, {"dataset": f"dataset:{dataset.id}"}, dataset_id=dataset.id, dataset_sha256=SHA
    )
    assert DatasetStore(services.store.engine).delete_unused(dataset.id, "alice").deleted is False
    # Deleted in the instant between the job's submission and the check (the race the store's
    # docstring names), or by an operator: the worker fails the job, with the fix.
    services.artifacts.delete_job(dataset.id)
    assert run_job(services, job_id) == "failed"
    job = services.store.get(job_id)
    assert job.error_code == "invalid_dataset" and "was deleted" in job.error_message
    assert "POST /datasets" in job.error_hint
