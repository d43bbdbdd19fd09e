"""Artifact storage: uploads (``inputs/``) and outputs of each job under ``<job_id>/``.

``LocalStore`` (a folder, the default) and ``S3Store`` (any S3-compatible bucket, boto3 imported
only when used). Files enter the store already complete: written elsewhere, then moved or
uploaded in one piece, so a reader never sees half a file.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

from app.infra.settings import Settings

# A job's files: its outputs, its inputs, its audit's shard results, and the checkpoints each
# attempt stored.
_NAME = re.compile(r"^(inputs/|audit/|checkpoints/[0-9]{1,6}/)?[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_JOB_ID = re.compile(r"^[0-9a-f]{32}$")
CHUNK = 1024 * 1024


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _check(job_id: str, name: str) -> None:
    # Names come from code, not users, but a path escaping the job folder must be impossible.
    if not _JOB_ID.match(job_id) or not _NAME.match(name) or ".." in name:
        raise ValueError(f"bad artifact key {job_id}/{name}")


class ArtifactStore(Protocol):
    """Where a job's files live."""

    def put(self, job_id: str, name: str, source: Path, *, move: bool = False) -> str:
        """Store ``source`` as ``name`` of the job; return its sha256."""
        ...

    def exists(self, job_id: str, name: str) -> bool: ...

    def local_path(self, job_id: str, name: str) -> Path | None:
        """A path to serve directly, or None when the file is remote."""
        ...

    def iter_bytes(self, job_id: str, name: str) -> Iterator[bytes]: ...

    def fetch(self, job_id: str, name: str, dest: Path) -> Path:
        """Copy the file to ``dest`` (a local path) and return it."""
        ...

    def delete_job(self, job_id: str) -> None:
        """Remove every file of the job (no error when there is none)."""
        ...

    def delete(self, job_id: str, name: str) -> None:
        """Remove one file of the job (no error when it is not there)."""
        ...

    def job_names(self, job_id: str) -> list[str]: ...


class LocalStore:
    """Files under ``root/<job_id>/``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, job_id: str, name: str) -> Path:
        _check(job_id, name)
        return self.root / job_id / name

    def put(self, job_id: str, name: str, source: Path, *, move: bool = False) -> str:
        target = self._path(job_id, name)
        target.parent.mkdir(parents=True, exist_ok=True)
        digest = sha256_file(source)
        temporary = target.with_name(f".{target.name}.partial")
        if move:
            shutil.move(str(source), temporary)
        else:
            shutil.copyfile(source, temporary)
        os.replace(temporary, target)  # atomic: readers see the old file or the whole new one
        return digest

    def exists(self, job_id: str, name: str) -> bool:
        return self._path(job_id, name).is_file()

    def local_path(self, job_id: str, name: str) -> Path | None:
        path = self._path(job_id, name)
        return path if path.is_file() else None

    def iter_bytes(self, job_id: str, name: str) -> Iterator[bytes]:
        with self._path(job_id, name).open("rb") as handle:
            while chunk := handle.read(CHUNK):
                yield chunk

    def fetch(self, job_id: str, name: str, dest: Path) -> Path:
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self._path(job_id, name), dest)
        return dest

    def delete_job(self, job_id: str) -> None:
        _check(job_id, "x")
        shutil.rmtree(self.root / job_id, ignore_errors=True)

    def delete(self, job_id: str, name: str) -> None:
        path = self._path(job_id, name)
        path.unlink(missing_ok=True)
        for folder in path.parents:  # the checkpoints/<attempt>/ folders it leaves empty
            if folder == self.root / job_id:
                break
            with contextlib.suppress(OSError):
                folder.rmdir()

    def job_names(self, job_id: str) -> list[str]:
        _check(job_id, "x")
        folder = self.root / job_id
        if not folder.is_dir():
            return []
        return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


class S3Store:
    """Files under ``s3://bucket/prefix<job_id>/`` (AWS S3, MinIO or any S3-compatible store;
    tests/app/infra/test_s3_store.py runs it against moto's S3 server). Missing files raise
    FileNotFoundError, as in LocalStore; every other S3 error propagates."""

    def __init__(self, bucket: str, prefix: str = "", endpoint_url: str | None = None) -> None:
        try:
            import boto3  # optional dependency: only S3 deployments need it
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise RuntimeError(
                "HARDEN_ARTIFACT_STORE=s3 needs boto3: pip install 'harden[s3]'"
            ) from exc
        self.bucket = bucket
        self.prefix = prefix
        self.client: Any = boto3.client("s3", endpoint_url=endpoint_url)

    def _key(self, job_id: str, name: str) -> str:
        _check(job_id, name)
        return f"{self.prefix}{job_id}/{name}"

    def _job_prefix(self, job_id: str) -> str:
        return self._key(job_id, "x")[:-1]

    @staticmethod
    def _is_missing(exc: Exception) -> bool:
        from botocore.exceptions import ClientError

        if not isinstance(exc, ClientError):
            return False
        return str(exc.response.get("Error", {}).get("Code")) in ("404", "NoSuchKey", "NotFound")

    def put(self, job_id: str, name: str, source: Path, *, move: bool = False) -> str:
        key = self._key(job_id, name)
        digest = sha256_file(source)
        # One object appears whole when the upload (multipart past 8 MiB) completes.
        self.client.upload_file(str(source), self.bucket, key)
        if move:
            source.unlink(missing_ok=True)
        return digest

    def exists(self, job_id: str, name: str) -> bool:
        key = self._key(job_id, name)
        try:
            self.client.head_object(Bucket=self.bucket, Key=key)
        except Exception as exc:
            # Only "no such object" means no; an unreachable or forbidden store must not read
            # as a missing file (a finished job would look incomplete and be redone).
            if self._is_missing(exc):
                return False
            raise
        return True

    def local_path(self, job_id: str, name: str) -> Path | None:
        _check(job_id, name)
        return None

    def iter_bytes(self, job_id: str, name: str) -> Iterator[bytes]:
        key = self._key(job_id, name)
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
        except Exception as exc:
            if self._is_missing(exc):
                raise FileNotFoundError(f"s3://{self.bucket}/{key}") from exc
            raise
        try:
            yield from body.iter_chunks(CHUNK)
        finally:
            body.close()  # a client that went away mid-download leaves no open connection

    def fetch(self, job_id: str, name: str, dest: Path) -> Path:
        key = self._key(job_id, name)
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.client.download_file(self.bucket, key, str(dest))
        except Exception as exc:
            if self._is_missing(exc):
                raise FileNotFoundError(f"s3://{self.bucket}/{key}") from exc
            raise
        return dest

    def delete_job(self, job_id: str) -> None:
        keys = self._job_keys(job_id)
        # Every object under the job's prefix, whatever its name; DeleteObjects takes 1000.
        for start in range(0, len(keys), 1000):
            batch = [{"Key": key} for key in keys[start : start + 1000]]
            result = self.client.delete_objects(
                Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True}
            )
            if result.get("Errors"):
                failed = ", ".join(e.get("Key", "?") for e in result["Errors"][:5])
                raise OSError(f"could not delete {len(result['Errors'])} objects: {failed}")

    def delete(self, job_id: str, name: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(job_id, name))

    def job_names(self, job_id: str) -> list[str]:
        prefix = self._job_prefix(job_id)
        return sorted(key[len(prefix) :] for key in self._job_keys(job_id))

    def _job_keys(self, job_id: str) -> list[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self._job_prefix(job_id)
        )
        return [obj["Key"] for page in pages for obj in page.get("Contents", [])]


def is_artifact_bucket(bucket: str, settings: Settings) -> bool:
    """Whether ``bucket`` holds this service's artifacts (every job's uploads and outputs): no
    user-given s3:// reference may read it."""
    endpoint = settings.dataset_s3_endpoint_url or settings.s3_endpoint_url
    same_store = settings.artifact_store == "s3" and endpoint == settings.s3_endpoint_url
    return same_store and bucket == settings.s3_bucket


def make_store(settings: Settings) -> ArtifactStore:
    """The store the settings ask for."""
    if settings.artifact_store == "s3":
        return S3Store(settings.s3_bucket, settings.s3_prefix, settings.s3_endpoint_url)
    return LocalStore(settings.artifact_dir)
