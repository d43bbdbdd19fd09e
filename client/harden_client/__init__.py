"""Python client of the harden service, for CI/MLOps pipelines (httpx only: no torch, no server
code imported).

    client = HardenClient("http://127.0.0.1:8000", api_key="hk_...")
    job = client.submit("model.pt", config={"dataset": "builtin:mnist"})
    job = client.wait(job["id"], on_progress=lambda j: print(j["stage"], j["progress"]))
    files = client.download(job["id"], "out/")

    dataset = client.upload_dataset("cifar-subset.npz")  # once; then in any job's config:
    job = client.submit("model.pt", dataset=dataset["reference"])
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
import zipfile
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx

TERMINAL_STATES = ("succeeded", "failed", "cancelled")


class HardenAPIError(Exception):
    """A problem+json answer from the service."""

    def __init__(self, status: int, code: str, detail: str, hint: str = "", body: Any = None):
        super().__init__(f"{status} {code}: {detail}" + (f" ({hint})" if hint else ""))
        self.status = status
        self.code = code
        self.detail = detail
        self.hint = hint
        self.body = body


class JobFailedError(Exception):
    """wait(..., raise_on_failure=True) and the job failed or was cancelled."""

    def __init__(self, job: dict[str, Any]) -> None:
        error = job.get("error") or {}
        super().__init__(
            f"job {job['id']} {job['state']}: {error.get('code')}: {error.get('message')}"
            + (f" ({error['hint']})" if error.get("hint") else "")
        )
        self.job = job


class HardenClient:
    """Submit, follow and download hardening jobs."""

    def __init__(
        self,
        url: str,
        api_key: str | None = None,
        *,
        timeout_s: float = 60.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(
            base_url=url.rstrip("/"), headers=headers, timeout=timeout_s, transport=transport
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> HardenClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _check(self, response: httpx.Response) -> httpx.Response:
        if response.status_code < 400:
            return response
        try:
            body = response.json()
        except ValueError:
            body = {"detail": response.text}
        raise HardenAPIError(
            response.status_code,
            str(body.get("code", "http_error")),
            str(body.get("detail", response.reason_phrase)),
            str(body.get("hint", "") or ""),
            body,
        )

    def submit(
        self,
        model: str | Path,
        *,
        config: dict[str, Any] | None = None,
        dataset: str | None = None,
        dataset_file: str | Path | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """Upload ``model`` (and a dataset file) with the job config; return the job.

        An idempotency key is generated when none is given, so the automatic retry of a
        failed connection never creates a second job."""
        config = dict(config or {})
        if dataset is not None:
            config["dataset"] = dataset
        key = idempotency_key or uuid.uuid4().hex
        with ExitStack() as stack:
            handles = [stack.enter_context(Path(model).open("rb"))]
            files: dict[str, Any] = {"model": (Path(model).name, handles[0])}
            if dataset_file:
                handles.append(stack.enter_context(Path(dataset_file).open("rb")))
                files["dataset"] = (Path(dataset_file).name, handles[1])
            for attempt in range(3):
                try:
                    response = self._http.post(
                        "/harden",
                        files=files,
                        data={"config": json.dumps(config)},
                        headers={"Idempotency-Key": key},
                    )
                    break
                except httpx.TransportError:
                    if attempt == 2:
                        raise
                    for handle in handles:
                        handle.seek(0)
                    time.sleep(1 + attempt)
        return dict(self._check(response).json())

    def upload_dataset(
        self,
        path: str | Path,
        *,
        name: str | None = None,
        input_range: tuple[float, float] | None = None,
    ) -> dict[str, Any]:
        """Register a dataset file once (POST /datasets); jobs then name it by the answer's
        ``reference`` (dataset:<id>). Uploading the same file again answers the same dataset,
        so the automatic retry of a failed connection never registers it twice."""
        fields: dict[str, str] = {}
        if name is not None:
            fields["name"] = name
        if input_range is not None:
            fields["input_range"] = json.dumps(list(input_range))
        with Path(path).open("rb") as handle:
            for attempt in range(3):
                try:
                    response = self._http.post(
                        "/datasets", files={"dataset": (Path(path).name, handle)}, data=fields
                    )
                    break
                except httpx.TransportError:
                    if attempt == 2:
                        raise
                    handle.seek(0)
                    time.sleep(1 + attempt)
        return dict(self._check(response).json())

    def list_datasets(self, *, limit: int = 20, offset: int = 0) -> dict[str, Any]:
        """One page of your registered datasets, newest first."""
        params = {"limit": limit, "offset": offset}
        return dict(self._check(self._http.get("/datasets", params=params)).json())

    def dataset(self, dataset_id: str) -> dict[str, Any]:
        """A registered dataset (``dataset:<id>`` or the bare id)."""
        return dict(self._check(self._http.get(f"/datasets/{_dataset_id(dataset_id)}")).json())

    def delete_dataset(self, dataset_id: str) -> None:
        """Delete a registered dataset (409 while a queued or running job reads it)."""
        self._check(self._http.delete(f"/datasets/{_dataset_id(dataset_id)}"))

    def status(self, job_id: str) -> dict[str, Any]:
        """The job's current JSON."""
        return dict(self._check(self._http.get(f"/jobs/{job_id}")).json())

    def list_jobs(
        self, *, state: str | None = None, limit: int = 20, offset: int = 0
    ) -> dict[str, Any]:
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        if state:
            params["state"] = state
        return dict(self._check(self._http.get("/jobs", params=params)).json())

    def cancel(self, job_id: str) -> dict[str, Any]:
        return dict(self._check(self._http.post(f"/jobs/{job_id}/cancel")).json())

    def delete(self, job_id: str) -> None:
        self._check(self._http.delete(f"/jobs/{job_id}"))

    def wait(
        self,
        job_id: str,
        *,
        on_progress: Callable[[dict[str, Any]], None] | None = None,
        timeout_s: float | None = 4 * 3600.0,
        poll_s: float = 1.0,
        raise_on_failure: bool = False,
    ) -> dict[str, Any]:
        """Poll until the job ends and return it; ``on_progress(job)`` after every poll, with the
        job's ``stage``, ``progress`` (0..1) and ``eta_s`` (seconds left at its measured pace;
        null while queued or loading).
        TimeoutError past ``timeout_s`` (4 hours by default: a default MNIST job with its
        evaluation took 46 minutes on a busy 2-core CPU; None waits for ever). A job that
        succeeded with the evaluation on carries its ``verdict`` (label, headline, clean and
        robust accuracies of both models)."""
        deadline = time.monotonic() + timeout_s if timeout_s is not None else None
        while True:
            job = self.status(job_id)
            if on_progress is not None:
                on_progress(job)
            if job["state"] in TERMINAL_STATES:
                if raise_on_failure and job["state"] != "succeeded":
                    raise JobFailedError(job)
                return job
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"job {job_id} still {job['state']} after {timeout_s} s")
            time.sleep(poll_s)

    def download(
        self,
        job_id: str,
        out_dir: str | Path,
        names: tuple[str, ...] | None = None,
    ) -> dict[str, Path]:
        """Stream the artifacts into ``out_dir``, checking each against its recorded sha256.

        ``names`` defaults to every artifact the job lists (the service names them, so the client
        keeps no copy of the list)."""
        job = self.status(job_id)
        if names is None:
            names = tuple(job.get("artifacts") or ())
            if not names:
                raise HardenAPIError(
                    409,
                    "job_not_done",
                    f"job {job_id} is {job['state']}: only a succeeded job has artifacts",
                    f"wait for it to succeed before downloading: harden status {job_id} shows "
                    "its state (harden submit --wait follows a job; in Python, "
                    "HardenClient.wait)",
                    job,
                )
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {}
        for name in names:
            target = out / name
            partial = out / f".{name}.partial"
            digest = self._stream_to(partial, f"/jobs/{job_id}/{name}")
            expected = (job.get("artifacts", {}).get(name) or {}).get("sha256")
            if expected and digest.hexdigest() != expected:
                partial.unlink(missing_ok=True)
                raise HardenAPIError(
                    200, "checksum_mismatch", f"{name} does not match its sha256", "download again"
                )
            partial.replace(target)
            paths[name] = target
        return paths

    def _stream_to(self, path: Path, url: str, params: dict[str, str | int] | None = None) -> Any:
        """GET ``url`` into ``path`` (a problem+json answer raises); return the body's sha256."""
        digest = hashlib.sha256()
        with self._http.stream("GET", url, params=params) as response:
            if response.status_code >= 400:
                response.read()
                self._check(response)
            with path.open("wb") as handle:
                for chunk in response.iter_bytes():
                    handle.write(chunk)
                    digest.update(chunk)
        return digest

    def download_layout(
        self,
        job_id: str,
        out_dir: str | Path,
        *,
        layout: str = "triton",
        name: str | None = None,
        version: int = 1,
        max_batch_size: int | None = None,
        storage_uri: str | None = None,
    ) -> list[Path]:
        """Unpack the job's model as a serving layout into ``out_dir`` (``GET
        /jobs/{id}/layout.zip``): ``layout`` 'triton' writes a model repository
        (``<name>/config.pbtxt``, ``<name>/<version>/model.onnx``), 'kserve' adds
        ``inference-service.yaml``. Returns the files written."""
        params: dict[str, str | int] = {"layout": layout, "version": version}
        for key, value in (
            ("name", name),
            ("max_batch_size", max_batch_size),
            ("storage_uri", storage_uri),
        ):
            if value is not None:
                params[key] = value
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        partial = out / f".{job_id}-{layout}.zip.partial"
        try:
            self._stream_to(partial, f"/jobs/{job_id}/layout.zip", params)
            return _unpack(partial, out)
        finally:
            partial.unlink(missing_ok=True)


def _unpack(archive_path: Path, out: Path) -> list[Path]:
    """Extract a layout zip into ``out``, skipping any entry that would land outside it."""
    root = out.resolve()
    written = []
    with zipfile.ZipFile(archive_path) as archive:
        for info in archive.infolist():
            target = (root / info.filename).resolve()
            if info.is_dir() or not target.is_relative_to(root):
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(info) as source, target.open("wb") as handle:
                while chunk := source.read(1 << 20):
                    handle.write(chunk)
            written.append(out / info.filename)
    return written


def _dataset_id(reference: str) -> str:
    return reference.removeprefix("dataset:")
