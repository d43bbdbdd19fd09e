"""Registered datasets (issue 13): POST /datasets checks and stores a dataset once, jobs name it
dataset:<id> or dataset:sha256:<hex>; owned per API key; not deletable while a job reads it;
remote dataset URLs are checked at submit like webhooks."""

from __future__ import annotations

import hashlib

import pytest

from app.infra.api_keys import ApiKeyStore
from app.infra.store import JobStore
from tests.app.conftest import (
    digits_like_arrays,
    digits_like_npz,
    files_under,
    npz_bytes,
    onnx_model_bytes,
)
from tests.app.web.test_submit import CONFIG, assert_problem, post


def upload(api, auth, data: bytes, **fields: str):
    return api.post("/datasets", files={"dataset": ("digits.npz", data)}, data=fields, headers=auth)


@pytest.fixture
def other(store: JobStore) -> dict[str, str]:
    return {"Authorization": f"Bearer {ApiKeyStore(store.engine).create('bob')}"}


def test_a_dataset_is_registered_once_and_named_by_jobs(api, auth, store, settings):
    data = digits_like_npz()
    response = upload(api, auth, data, name="digits small")
    assert response.status_code == 201, response.text
    dataset = response.json()
    assert response.headers["location"] == f"/datasets/{dataset['id']}"
    assert dataset["sha256"] == hashlib.sha256(data).hexdigest()
    assert dataset["reference"] == f"dataset:{dataset['id']}" and dataset["name"] == "digits small"
    assert dataset["size_bytes"] == len(data) and dataset["format"] == "npz"
    stored = settings.artifact_dir / dataset["id"] / "dataset.npz"
    assert stored.read_bytes() == data and files_under(settings.upload_dir) == []
    # The same file again: the same dataset (200), no second copy.
    again = upload(api, auth, data)
    assert again.status_code == 200 and again.json()["id"] == dataset["id"]
    assert len(files_under(settings.artifact_dir)) == 1

    for reference in (dataset["reference"], f"dataset:sha256:{dataset['sha256']}"):
        job = post(api, auth, onnx_model_bytes(), CONFIG | {"dataset": reference})
        assert job.status_code == 202, job.text
        row = store.get(job.json()["id"])
        assert row is not None and row.dataset_id == dataset["id"]
        assert row.dataset_sha256 == dataset["sha256"] and row.dataset_name is None
        assert [p.name for p in files_under(settings.artifact_dir / row.id)] == ["model"]


def test_list_show_and_delete(api, auth):
    first = upload(api, auth, digits_like_npz()).json()
    other_file = upload(api, auth, _other_npz()).json()
    page = api.get("/datasets?limit=1", headers=auth).json()
    assert page["total"] == 2 and [d["id"] for d in page["items"]] == [other_file["id"]]
    assert page["next"] == "/datasets?limit=1&offset=1"
    assert api.get(page["next"], headers=auth).json()["items"][0]["id"] == first["id"]
    assert api.get(f"/datasets/{first['id']}", headers=auth).json() == first
    assert api.delete(f"/datasets/{first['id']}", headers=auth).status_code == 204
    assert_problem(api.get(f"/datasets/{first['id']}", headers=auth), 404, "not_found")
    assert_problem(api.delete(f"/datasets/{first['id']}", headers=auth), 404, "not_found")
    assert api.get("/datasets", headers=auth).json()["total"] == 1


def test_another_keys_dataset_is_not_found(api, auth, other, settings):
    dataset = upload(api, auth, digits_like_npz()).json()
    for response in (
        api.get(f"/datasets/{dataset['id']}", headers=other),
        api.delete(f"/datasets/{dataset['id']}", headers=other),
    ):
        assert_problem(response, 404, "not_found")
    assert api.get("/datasets", headers=other).json()["total"] == 0
    refused = post(api, other, onnx_model_bytes(), CONFIG | {"dataset": dataset["reference"]})
    body = assert_problem(refused, 422, "invalid_dataset")
    assert "POST /datasets" in body["hint"]
    assert (settings.artifact_dir / dataset["id"] / "dataset.npz").is_file()


def test_a_dataset_read_by_a_queued_job_cannot_be_deleted(api, auth, store, settings):
    dataset = upload(api, auth, digits_like_npz()).json()
    job = post(api, auth, onnx_model_bytes(), CONFIG | {"dataset": dataset["reference"]}).json()
    refused = api.delete(f"/datasets/{dataset['id']}", headers=auth)
    body = assert_problem(refused, 409, "conflict")
    assert body["job_ids"] == [job["id"]] and "cancel" in body["hint"]
    assert (settings.artifact_dir / dataset["id"] / "dataset.npz").is_file()
    # Once the job ended, the dataset can go; the job keeps its record.
    assert api.post(f"/jobs/{job['id']}/cancel", headers=auth).json()["state"] == "cancelled"
    assert api.delete(f"/datasets/{dataset['id']}", headers=auth).status_code == 204
    assert files_under(settings.artifact_dir / dataset["id"]) == []
    assert store.get(job["id"]) is not None


def test_refused_uploads_leave_nothing(api, auth, store, settings):
    bad = upload(api, auth, digits_like_npz(drop="y_test"))
    assert "y_test" in assert_problem(bad, 422, "invalid_dataset")["detail"]
    body = assert_problem(
        upload(api, auth, digits_like_npz(), input_range="[1, 0]"), 422, "invalid_request"
    )
    assert body["errors"][0]["field"] == "form.input_range"
    assert_problem(upload(api, auth, b""), 422, "invalid_dataset")
    assert_problem(upload(api, auth, b"\0" * 70_000), 413, "payload_too_large")
    no_file = api.post("/datasets", data={"name": "x"}, files={}, headers=auth)
    assert_problem(no_file, 400, "bad_request")  # not multipart without a file part
    wrong_part = api.post("/datasets", files={"model": ("m", b"x")}, headers=auth)
    assert "'dataset' (file)" in assert_problem(wrong_part, 400, "bad_request")["hint"]
    assert api.get("/datasets", headers=auth).json()["total"] == 0
    assert files_under(settings.artifact_dir) == [] and files_under(settings.upload_dir) == []


def test_float_pixels_are_checked_against_the_given_input_range(api, auth):
    # digits_like_npz holds floats in [0, 1): inside [-1, 1] too, not inside [2, 3].
    assert upload(api, auth, digits_like_npz(), input_range="[-1, 1]").status_code == 201
    refused = upload(api, auth, _other_npz(), input_range="[2, 3]")
    assert "input_range" in assert_problem(refused, 422, "invalid_dataset")["detail"]


def test_a_pinned_registered_dataset_must_match(api, auth, store):
    dataset = upload(api, auth, digits_like_npz()).json()
    config = CONFIG | {"dataset": dataset["reference"], "dataset_sha256": "0" * 64}
    body = assert_problem(post(api, auth, onnx_model_bytes(), config), 422, "invalid_dataset")
    assert dataset["sha256"] in body["detail"]
    assert store.count_by_state() == {}


def test_remote_urls_are_checked_at_submit(api, auth, store, settings):
    loopback = CONFIG | {"dataset": "https://127.0.0.1:8443/digits.npz"}
    body = assert_problem(post(api, auth, onnx_model_bytes(), loopback), 422, "invalid_dataset")
    assert "not a public address" in body["detail"]
    assert "HARDEN_DATASET_URL_ALLOW_PRIVATE" in body["hint"]
    plain = CONFIG | {"dataset": "http://example.com/digits.npz"}
    body = assert_problem(post(api, auth, onnx_model_bytes(), plain), 422, "invalid_dataset")
    assert "http://" in body["detail"] and "HARDEN_DATASET_URL_ALLOW_HTTP" in body["hint"]
    assert store.count_by_state() == {} and files_under(settings.artifact_dir) == []
    # s3:// is not resolved at submit (the bucket is the worker's to reach); the pin is kept.
    pinned = f"s3://bucket/digits.npz#sha256={'ab' * 32}"
    job = post(api, auth, onnx_model_bytes(), CONFIG | {"dataset": pinned})
    assert job.status_code == 202, job.text
    assert job.json()["dataset_sha256"] == "ab" * 32


def test_private_urls_are_accepted_where_the_operator_allows_them(settings, tmp_path):
    from fastapi.testclient import TestClient

    from app.web.main import create_app

    private = {"dataset_url_allow_private": True, "auth": "open"}
    with TestClient(create_app(settings.model_copy(update=private))) as client:
        assert (
            post(
                client, {}, onnx_model_bytes(), CONFIG | {"dataset": "https://127.0.0.1/d.npz"}
            ).status_code
            == 202
        )
        # Plain http:// needs its own setting.
        plain = CONFIG | {"dataset": "http://127.0.0.1:9/digits.npz"}
        assert_problem(post(client, {}, onnx_model_bytes(), plain), 422, "invalid_dataset")
    both = private | {"dataset_url_allow_http": True}
    with TestClient(create_app(settings.model_copy(update=both))) as client:
        assert post(client, {}, onnx_model_bytes(), plain).status_code == 202


def _other_npz() -> bytes:
    """A valid dataset other than digits_like_npz's (its training images in reverse order)."""
    arrays = digits_like_arrays()
    return npz_bytes(**(arrays | {"x_train": arrays["x_train"][::-1].copy()}))


def test_the_artifact_bucket_is_no_dataset_source(settings, monkeypatch):
    from fastapi.testclient import TestClient

    from app.web.main import create_app

    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    # Refused before anything is stored: the store's endpoint (nothing listens) is never called.
    s3 = {"artifact_store": "s3", "s3_bucket": "mine", "s3_endpoint_url": "http://127.0.0.1:1"}
    with TestClient(create_app(settings.model_copy(update=s3 | {"auth": "open"}))) as client:
        config = CONFIG | {"dataset": "s3://mine/harden/0123/inputs/dataset.npz"}
        body = assert_problem(post(client, {}, onnx_model_bytes(), config), 422, "invalid_dataset")
        assert "artifact store" in body["detail"] and "POST /datasets" in body["hint"]
