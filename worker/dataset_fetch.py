"""A job's dataset, fetched by the worker before the run: a registered dataset from the artifact
store, or an ``s3://`` / ``https://`` file (core/contract/fetched_refs.py parses the reference).

Remote files are bounded in size (HARDEN_DATASET_FETCH_MAX_BYTES) and time
(HARDEN_DATASET_FETCH_TIMEOUT_S), checked against their sha256 pin, and kept per worker by
sha256 under ``work_dir/dataset-cache`` (a pinned file already there is not downloaded again).
https:// hosts must be public at every hop, as webhooks' must (app/infra/netguard.py): redirects
are followed by hand, each target checked and connected to at the address checked.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
import uuid
from pathlib import Path
from typing import IO, Any

import httpx
from sqlalchemy import Engine

from app.infra.artifacts import ArtifactStore, is_artifact_bucket, sha256_file
from app.infra.dataset_store import DatasetStore
from app.infra.db import Job
from app.infra.netguard import NonPublicAddressError, UnresolvableHostError, guarded_target
from app.infra.settings import Settings
from core.contract.fetched_refs import (
    RegisteredRef,
    RemoteRef,
    is_fetched_reference,
    parse_fetched_reference,
)
from core.contract.spec import HardenSpec
from core.errors import DatasetError

log = logging.getLogger(__name__)
CACHE_FOLDER = "dataset-cache"
CHUNK = 1024 * 1024
MAX_REDIRECTS = 5
URL_HINT = (
    "use an https:// URL of a public host; for a file server inside the network an operator "
    "sets HARDEN_DATASET_URL_ALLOW_PRIVATE=true"
)


def fetch_job_dataset(
    job: Job,
    spec: HardenSpec,
    *,
    settings: Settings,
    artifacts: ArtifactStore,
    engine: Engine,
    work: Path,
) -> Path | None:
    """The local file of the job's registered or remote dataset; None for other datasets."""
    if job.dataset_name or not is_fetched_reference(spec.dataset):
        return None
    ref = parse_fetched_reference(spec.dataset)
    if isinstance(ref, RegisteredRef):
        return _registered(job, spec.dataset, artifacts, engine, work)
    return fetch_remote(ref, ref.sha256 or spec.dataset_sha256, settings)


def _registered(
    job: Job, reference: str, artifacts: ArtifactStore, engine: Engine, work: Path
) -> Path:
    gone = DatasetError(
        f"the registered dataset {reference} was deleted before the job ran",
        hint="register the file again (POST /datasets) and resubmit the job with its new id",
    )
    dataset = DatasetStore(engine).get(job.dataset_id) if job.dataset_id else None
    if dataset is None:
        raise gone
    try:
        path = artifacts.fetch(dataset.id, dataset.file_name, work / "inputs" / dataset.file_name)
    except FileNotFoundError as exc:
        raise gone from exc
    if job.dataset_sha256 and sha256_file(path) != job.dataset_sha256:
        raise DatasetError(
            f"the stored file of {reference} no longer has the sha256 the job was submitted with",
            hint="the stored file was changed outside the service: register it again, and tell "
            "the operators",
        )
    return path


def fetch_remote(ref: RemoteRef, pin: str | None, settings: Settings) -> Path:
    """Download ``ref`` into the worker's cache (or find it there by its pin); return the
    cached file, named by its sha256."""
    cache = Path(settings.work_dir) / CACHE_FOLDER
    cache.mkdir(parents=True, exist_ok=True)
    if pin is not None and (cache / pin).is_file():
        os.utime(cache / pin)  # recently used: evicted last
        log.info("dataset %s found in the worker's cache", ref.url)
        return cache / pin
    partial = cache / f".{uuid.uuid4().hex}.partial"
    try:
        with partial.open("wb") as handle:
            sink = _BoundedSink(handle, ref.url, settings)
            if ref.scheme == "s3":
                _download_s3(ref, sink, settings)
            else:
                _download_http(ref, sink, settings)
        digest = sink.digest.hexdigest()
        if pin is not None and digest != pin:
            raise DatasetError(
                f"{ref.url} has sha256 {digest}, not the pinned {pin}",
                hint="the file changed since it was pinned: pin its new sha256 (sha256sum FILE) "
                "or restore the file",
            )
        target = cache / digest
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    _evict(cache, keep=target, limit=settings.dataset_cache_bytes)
    return target


class _BoundedSink:
    """Writes the download, hashing it, and stops it past the size or time limit."""

    def __init__(self, handle: IO[bytes], url: str, settings: Settings) -> None:
        self.handle, self.url = handle, url
        self.limit = settings.dataset_fetch_max_bytes
        self.timeout_s = settings.dataset_fetch_timeout_s
        self.deadline = time.monotonic() + self.timeout_s
        self.size = 0
        self.digest = hashlib.sha256()

    def announce(self, length: int | None) -> None:
        if length is not None and length > self.limit:
            raise self._too_large(f"is {length} bytes")

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.limit:
            raise self._too_large("passed the limit while downloading")
        if time.monotonic() > self.deadline:
            raise DatasetError(
                f"downloading {self.url} took longer than {self.timeout_s:g} s",
                hint="use a smaller or closer file, register it with POST /datasets, or ask the "
                "operator to raise HARDEN_DATASET_FETCH_TIMEOUT_S",
            )
        self.digest.update(chunk)
        self.handle.write(chunk)

    def remaining_s(self) -> float:
        return max(0.1, self.deadline - time.monotonic())

    def _too_large(self, what: str) -> DatasetError:
        return DatasetError(
            f"{self.url} {what}: more than the limit of {self.limit} bytes",
            hint="use a smaller dataset, or ask the operator to raise "
            "HARDEN_DATASET_FETCH_MAX_BYTES",
            limit_bytes=self.limit,
        )


def _download_http(ref: RemoteRef, sink: _BoundedSink, settings: Settings) -> None:
    url = httpx.URL(ref.url)
    for _ in range(MAX_REDIRECTS + 1):
        if url.scheme not in ("https", "http") or (
            url.scheme == "http" and not settings.dataset_url_allow_http
        ):
            raise DatasetError(
                f"{ref.url} leads to {url}, which this service does not fetch", hint=URL_HINT
            )
        try:
            target = guarded_target(url, allow_private=settings.dataset_url_allow_private)
        except NonPublicAddressError as exc:
            raise DatasetError(f"{ref.url}: {exc}", hint=URL_HINT) from exc
        except UnresolvableHostError as exc:
            raise DatasetError(
                f"{ref.url}: {exc}", hint="check the host name and that the workers can resolve it"
            ) from exc
        timeout = httpx.Timeout(min(60.0, sink.remaining_s()), connect=10.0)
        try:
            with (
                httpx.Client(
                    timeout=timeout, follow_redirects=False, trust_env=target.trust_env
                ) as client,
                client.stream(
                    "GET", target.url, headers=target.headers, extensions=target.extensions
                ) as response,
            ):
                if response.is_redirect and "location" in response.headers:
                    url = url.join(response.headers["location"])  # checked on the next turn
                    continue
                if response.status_code != 200:
                    raise DatasetError(
                        f"{ref.url} answered HTTP {response.status_code}",
                        hint="check the URL, and that the server gives the file without "
                        "authentication (or use s3:// or POST /datasets)",
                    )
                length = response.headers.get("content-length", "")
                sink.announce(int(length) if length.isdigit() else None)
                for chunk in response.iter_bytes(CHUNK):
                    sink.write(chunk)
                return
        except httpx.HTTPError as exc:
            raise DatasetError(
                f"could not download {ref.url} ({type(exc).__name__}: {exc})",
                hint="check that the server is up and reachable from the workers, then retry",
            ) from exc
    raise DatasetError(
        f"{ref.url} redirects more than {MAX_REDIRECTS} times", hint="give the file's final URL"
    )


def _download_s3(ref: RemoteRef, sink: _BoundedSink, settings: Settings) -> None:
    if is_artifact_bucket(ref.host, settings):
        raise DatasetError(
            f"s3://{ref.host} is this service's artifact store, which jobs do not read from",
            hint="register the dataset with POST /datasets, or name a copy in another bucket",
        )
    try:
        import boto3  # optional dependency: only workers that read s3:// datasets need it
        from botocore.config import Config
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise DatasetError(
            "this worker cannot read s3:// datasets: boto3 is not installed",
            hint="the operator installs harden[s3] on the workers; or use https:// or POST "
            "/datasets",
        ) from exc
    endpoint = settings.dataset_s3_endpoint_url or settings.s3_endpoint_url
    config = Config(connect_timeout=10, read_timeout=60, retries={"max_attempts": 3})
    client: Any = boto3.client("s3", endpoint_url=endpoint, config=config)
    try:
        answer = client.get_object(Bucket=ref.host, Key=ref.path)
        body = answer["Body"]
        try:
            sink.announce(answer.get("ContentLength"))
            for chunk in body.iter_chunks(CHUNK):
                sink.write(chunk)
        finally:
            body.close()
    except NoCredentialsError as exc:
        raise DatasetError(
            f"the workers have no S3 credentials to read {ref.url}",
            hint="the operator gives the workers AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or a "
            "role that may read the bucket",
        ) from exc
    except ClientError as exc:
        raise _s3_refusal(ref, str(exc.response.get("Error", {}).get("Code", ""))) from exc
    except BotoCoreError as exc:
        raise DatasetError(
            f"could not download {ref.url} ({exc})",
            hint="check that the S3 endpoint is reachable from the workers, then retry",
        ) from exc


def _s3_refusal(ref: RemoteRef, code: str) -> DatasetError:
    if code in ("NoSuchKey", "404", "NotFound"):
        return DatasetError(
            f"{ref.url} does not exist", hint="check the key (aws s3 ls s3://bucket/prefix/)"
        )
    if code == "NoSuchBucket":
        return DatasetError(
            f"the bucket of {ref.url} does not exist", hint="check the bucket's name"
        )
    if code in ("AccessDenied", "403", "Forbidden"):
        return DatasetError(
            f"the workers may not read {ref.url} (S3 answered {code})",
            hint="grant s3:GetObject on it to the workers' credentials, or make a copy they may "
            "read",
        )
    return DatasetError(
        f"S3 refused {ref.url} ({code})", hint="check the reference and the bucket's policy"
    )


def _evict(cache: Path, *, keep: Path, limit: int) -> None:
    """Delete the least recently used cached datasets until the cache fits ``limit`` bytes;
    ``keep`` (the job's own) stays whatever its size."""
    files = [p for p in cache.iterdir() if p.is_file() and not p.name.startswith(".")]
    files.sort(key=lambda p: p.stat().st_mtime)
    total = sum(p.stat().st_size for p in files)
    for path in files:
        if total <= limit:
            return
        if path != keep:
            total -= path.stat().st_size
            path.unlink(missing_ok=True)
