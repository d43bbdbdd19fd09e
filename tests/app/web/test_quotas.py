"""What one API key may ask of the service at submit: at most HARDEN_MAX_ACTIVE_JOBS_PER_KEY jobs
queued or running (429), and no training past HARDEN_MAX_TRAINING_STEPS (422), both refused
before anything is stored. The race of concurrent submits is in tests/app/infra/test_store_quota.py.
"""

from __future__ import annotations

from fastapi.testclient import TestClient

from app.infra.api_keys import ApiKeyStore
from app.infra.store import JobStore
from tests.app.conftest import files_under, onnx_model_bytes
from tests.app.web.test_submit import CONFIG, assert_nothing_left, post


def fill_quota(api: TestClient, auth: dict[str, str], limit: int) -> list[str]:
    """``limit`` jobs of this key, all queued (the in-memory broker has no worker)."""
    ids = []
    for _ in range(limit):
        response = post(api, auth, onnx_model_bytes())
        assert response.status_code == 202, response.text
        ids.append(response.json()["id"])
    return ids


def test_a_key_past_its_active_jobs_gets_429_naming_the_limit(api, auth, store, settings):
    assert settings.max_active_jobs_per_key == 4  # the default
    ids = fill_quota(api, auth, 4)
    refused = post(api, auth, onnx_model_bytes())
    assert refused.status_code == 429
    assert refused.headers["content-type"].startswith("application/problem+json")
    body = refused.json()
    assert body["code"] == "too_many_active_jobs"
    assert body["limit"] == 4 and body["active"] == 4
    assert "HARDEN_MAX_ACTIVE_JOBS_PER_KEY" in body["detail"]
    assert "cancel" in body["hint"] and "wait" in body["hint"]
    # Nothing of the refused request was kept.
    assert store.list_jobs(store.get(ids[0]).owner)[1] == 4
    assert len({p.parent.parent for p in files_under(settings.artifact_dir)}) == 4
    assert files_under(settings.upload_dir) == []


def test_cancelling_or_ending_a_job_frees_its_place(api, auth, store, settings):
    ids = fill_quota(api, auth, settings.max_active_jobs_per_key)
    assert api.post(f"/jobs/{ids[0]}/cancel", headers=auth).status_code == 200
    assert post(api, auth, onnx_model_bytes()).status_code == 202
    assert store.mark_running(ids[1]) == 1  # running still counts
    assert post(api, auth, onnx_model_bytes()).status_code == 429
    assert store.mark_succeeded(ids[1], {})
    assert post(api, auth, onnx_model_bytes()).status_code == 202


def test_the_quota_is_per_key(api, auth, store, settings):
    fill_quota(api, auth, settings.max_active_jobs_per_key)
    other = {"Authorization": f"Bearer {ApiKeyStore(store.engine).create('bob')}"}
    assert post(api, other, onnx_model_bytes()).status_code == 202
    assert post(api, auth, onnx_model_bytes()).status_code == 429


def test_a_retry_of_an_accepted_job_is_not_refused_by_the_quota(api, auth, settings):
    key = {"Idempotency-Key": "first"}
    first = post(api, auth, onnx_model_bytes(), extra_headers=key)
    fill_quota(api, auth, settings.max_active_jobs_per_key - 1)
    retried = post(api, auth, onnx_model_bytes(), extra_headers=key)
    assert retried.status_code == 200 and retried.json()["id"] == first.json()["id"]


def test_the_limit_is_a_setting(settings, tmp_path):
    from app.web.main import create_app

    one = settings.model_copy(update={"max_active_jobs_per_key": 1, "auth": "open"})
    with TestClient(create_app(one)) as api:
        assert post(api, {}, onnx_model_bytes()).status_code == 202
        refused = post(api, {}, onnx_model_bytes())
    assert refused.status_code == 429 and refused.json()["limit"] == 1


# --- the training-cost bound ---------------------------------------------------------------------
LONG = {"teacher_epochs": 500, "student_epochs": 500, "batch_size": 1}


def test_500_plus_500_epochs_at_batch_size_1_are_refused_naming_the_limit(api, auth, settings):
    store = JobStore.from_url(settings.database_url)
    refused = post(api, auth, onnx_model_bytes(), CONFIG | LONG | {"dataset": "builtin:mnist"})
    assert refused.status_code == 422, refused.text
    body = refused.json()
    assert body["code"] == "invalid_spec"
    assert body["limit_steps"] == settings.max_training_steps == 1_000_000
    assert body["steps"] > body["limit_steps"]
    assert "HARDEN_MAX_TRAINING_STEPS" in body["detail"]
    assert "4,000 training images at batch size 1" in body["detail"]
    assert "batch_size" in body["hint"] and "student_epochs" in body["hint"]
    assert body["errors"][0]["type"] == "training_too_large"
    assert_nothing_left(store, settings)


def test_the_training_bound_charges_the_dataset_and_the_methods(api, auth, settings):
    # The same epochs on the smaller builtin, at a batch size that makes few steps: accepted.
    assert (
        post(api, auth, onnx_model_bytes(), CONFIG | LONG | {"batch_size": 256}).status_code == 202
    )
    # A dataset the service cannot size at submit is charged as 4,000 images, and says so.
    remote = CONFIG | LONG | {"dataset": "https://example.com/d.npz"}
    body = post(api, auth, onnx_model_bytes(), remote).json()
    assert body["errors"][0]["type"] == "training_too_large", body
    assert "unknown size, charged as 4,000" in body["detail"]
    # Adversarial training pays its attack's steps on every batch.
    robust = CONFIG | {"method": "adversarial", "robust": {"epochs": 500, "steps": 10}}
    assert post(api, auth, onnx_model_bytes(), robust).status_code == 202  # 66,000 steps
    robust = robust | {"robust": {"epochs": 500, "steps": 100}, "batch_size": 32}
    body = post(api, auth, onnx_model_bytes(), robust).json()
    assert body["errors"][0]["type"] == "training_too_large", body
    assert "adversarial.training 2,272,500" in body["detail"]  # 45 batches x 500 epochs x 101


def test_the_default_job_is_far_within_the_bound(api, auth, settings):
    # Every setting at its default; a dataset is required (the builtin the README starts with).
    assert post(api, auth, onnx_model_bytes(28), {"dataset": "builtin:mnist"}).status_code == 202
