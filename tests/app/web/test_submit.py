"""POST /harden: accepted jobs, idempotency, and every refused request leaving nothing behind."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.infra.api_keys import ApiKeyStore
from app.infra.settings import Settings
from app.infra.store import JobStore
from core.contract.library_names import EXPORT_HINT, dataset_name_refusal
from core.contract.spec import FLAT_DISTILLATION_FIELDS
from tests.app.conftest import (
    digits_like_npz,
    files_under,
    hostile_npz,
    onnx_model_bytes,
    pickle_bytes,
)
from tests.core.archive_files import hostile_archives, image_folder_tar_gz, zip_claiming

CONFIG = {"dataset": "builtin:digits", "student_epochs": 1, "evaluation": {"enabled": False}}


def post(
    api: TestClient,
    headers: dict[str, str],
    model: bytes,
    config: object = CONFIG,
    dataset: bytes | None = None,
    extra_headers: dict[str, str] | None = None,
):
    files = {"model": ("model.onnx", model)}
    if dataset is not None:
        files["dataset"] = ("data.npz", dataset)
    data = {"config": config if isinstance(config, str) else json.dumps(config)}
    return api.post("/harden", files=files, data=data, headers=headers | (extra_headers or {}))


def assert_nothing_left(store: JobStore, settings: Settings) -> None:
    assert store.count_by_state() == {}
    assert files_under(settings.artifact_dir) == []
    assert files_under(settings.upload_dir) == []


def assert_problem(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == status and body["code"] == code
    assert body["detail"] and body["title"] and body["type"].endswith(code)
    return body


def test_accepted_job_is_queued_with_location_and_stored_inputs(api, auth, store, settings):
    response = post(api, auth, onnx_model_bytes())
    assert response.status_code == 202, response.text
    job = response.json()
    assert response.headers["location"] == f"/jobs/{job['id']}"
    assert job["state"] == "queued" and job["progress"] == 0 and job["attempts"] == 0
    assert job["model_format"] == "onnx"
    assert (
        job["spec"]["dataset"] == "builtin:digits"
        and job["spec"]["distillation"]["student_epochs"] == 1
    )
    stored = store.get(job["id"])
    assert stored is not None and stored.owner == "alice"
    assert [p.name for p in files_under(settings.artifact_dir / job["id"])] == ["model"]
    assert files_under(settings.upload_dir) == []
    assert api.get(f"/jobs/{job['id']}", headers=auth).json()["id"] == job["id"]


def test_dataset_upload_sets_reference_to_upload(api, auth, settings):
    response = post(api, auth, onnx_model_bytes(), dataset=digits_like_npz())
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["spec"]["dataset"] == "upload" and job["dataset_sha256"]
    names = sorted(p.name for p in files_under(settings.artifact_dir / job["id"]))
    assert names == ["dataset.npz", "model"]


@pytest.mark.parametrize(
    ("model", "config", "dataset", "says"),
    [
        # 3-channel 12x12 inputs against 1x8x8 digits: named at once, with both shapes.
        (onnx_model_bytes(12, channels=3), CONFIG, None, "takes 3x12x12 per image"),
        # 8x8 inputs against builtin:mnist's 1x28x28.
        (onnx_model_bytes(), CONFIG | {"dataset": "builtin:mnist"}, None, "images are 1x28x28"),
        # 100 outputs for an uploaded dataset of 10 classes.
        (
            onnx_model_bytes(classes=100),
            {"student_epochs": 1},
            "npz",
            "has 100 values per image; the dataset has 10 classes",
        ),
    ],
)
def test_an_onnx_model_that_cannot_fit_its_dataset_is_refused_at_submit(
    api, auth, store, settings, model, config, dataset, says
):
    npz = digits_like_npz() if dataset else None
    body = assert_problem(post(api, auth, model, config, npz), 422, "model_dataset_mismatch")
    assert says in body["detail"] and body.get("hint")
    assert_nothing_left(store, settings)


def test_idempotency_key_returns_the_same_job(api, auth, store):
    first = post(api, auth, onnx_model_bytes(), extra_headers={"Idempotency-Key": "abc"})
    again = post(api, auth, onnx_model_bytes(), extra_headers={"Idempotency-Key": "abc"})
    assert first.status_code == 202 and again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["location"] == first.headers["location"]
    assert store.list_jobs("alice")[1] == 1


def test_idempotency_key_reused_for_another_request_is_a_conflict(api, auth, store):
    post(api, auth, onnx_model_bytes(), extra_headers={"Idempotency-Key": "k1"})
    other = post(
        api,
        auth,
        onnx_model_bytes(),
        config=CONFIG | {"temperature": 20},
        extra_headers={"Idempotency-Key": "k1"},
    )
    assert_problem(other, 409, "idempotency_conflict")
    assert store.list_jobs("alice")[1] == 1


def test_corrupt_model_is_refused(api, auth, store, settings):
    body = assert_problem(post(api, auth, b"\x00\x01garbage" * 50), 422, "unsupported_model")
    assert body.get("hint")
    assert_nothing_left(store, settings)


def test_pickle_model_is_refused_as_unsafe(api, auth, store, settings):
    body = assert_problem(post(api, auth, pickle_bytes()), 422, "unsafe_model")
    assert "pickle" in (body["detail"] + body.get("hint", "")).lower()
    assert_nothing_left(store, settings)


def test_npz_missing_x_test_is_refused(api, auth, store, settings):
    response = post(api, auth, onnx_model_bytes(), dataset=digits_like_npz(drop="x_test"))
    body = assert_problem(response, 422, "invalid_dataset")
    assert "x_test" in body["detail"] and "np.savez" in body["hint"]
    assert_nothing_left(store, settings)


def test_zip_bomb_dataset_is_refused_from_its_listing(api, auth, store, settings):
    # Claims 3 GiB unpacked (past the 2 GiB bound) in a ~200-byte upload: refused from the zip
    # listing, before anything is inflated, queued or stored.
    bomb = zip_claiming(3 * 1024**3)
    body = assert_problem(post(api, auth, onnx_model_bytes(), dataset=bomb), 422, "invalid_dataset")
    assert "unpacks to more than" in body["detail"] and body["hint"]
    assert_nothing_left(store, settings)


def test_unknown_builtin_dataset_is_refused(api, auth, store, settings):
    response = post(api, auth, onnx_model_bytes(), config={"dataset": "builtin:imagenet"})
    body = assert_problem(response, 422, "invalid_spec")
    assert body["errors"][0]["field"] == "config.dataset"
    assert "builtin:mnist" in body["detail"]
    assert_nothing_left(store, settings)


@pytest.mark.parametrize("config", [{}, {"distillation": {"student_epochs": 5}}])
def test_a_job_without_a_dataset_is_refused_with_the_ways_to_name_one(
    api, auth, store, settings, config
):
    # Was a 202 with builtin:mnist silently, and a failure in the worker for a non-MNIST model.
    response = post(api, auth, onnx_model_bytes(), config=config)
    body = assert_problem(response, 422, "invalid_dataset")
    assert "names no dataset" in body["detail"]
    for way in ("builtin:mnist", "builtin:digits", "dataset=@data.npz", "dataset:<id>"):
        assert way in body["hint"]
    assert_nothing_left(store, settings)


def test_server_paths_as_dataset_are_refused(api, auth, store, settings):
    response = post(api, auth, onnx_model_bytes(), config={"dataset": "/etc/passwd"})
    assert_problem(response, 422, "invalid_dataset")
    assert_nothing_left(store, settings)


@pytest.mark.parametrize(
    ("dataset", "detail"),
    [
        ("torchvision:MNIST", "do not download datasets by library name"),
        ("hf://datasets/ylecun/mnist", "do not download datasets by library name"),
        ("CIFAR10", "do not download datasets by name"),
        ("mnist", "did you mean builtin:mnist?"),
    ],
)
def test_a_dataset_named_by_library_is_refused_with_the_export_fix(
    api, auth, store, settings, dataset, detail
):
    # Was "the service does not read dataset paths": true, but no help to a torchvision user.
    response = post(api, auth, onnx_model_bytes(), config=CONFIG | {"dataset": dataset})
    body = assert_problem(response, 422, "invalid_dataset")
    assert detail in body["detail"] and "dataset paths" not in body["detail"]
    assert body["hint"].endswith(EXPORT_HINT) and "harden datasets upload" in body["hint"]
    refusal = dataset_name_refusal(dataset)
    assert refusal is not None and body["hint"] == refusal.hint  # the words harden run prints
    assert_nothing_left(store, settings)


def test_unknown_config_field_is_refused(api, auth, store, settings):
    response = post(api, auth, onnx_model_bytes(), config=CONFIG | {"temprature": 50})
    body = assert_problem(response, 422, "invalid_spec")
    assert [e["field"] for e in body["errors"]] == ["config.temprature"]
    assert_nothing_left(store, settings)


def test_out_of_range_value_is_refused(api, auth, store, settings):
    response = post(api, auth, onnx_model_bytes(), config=CONFIG | {"temperature": 0.5})
    body = assert_problem(response, 422, "invalid_spec")
    # A top-level distillation setting (the form before its section) is read in the section.
    assert body["errors"][0]["field"] == "config.distillation.temperature"
    assert "greater than or equal to 1" in body["errors"][0]["message"]
    assert_nothing_left(store, settings)


@pytest.mark.parametrize(
    "config",
    [
        {"method": "madry"},
        {"method": []},
        {"method": ["adversarial", "adversarial"]},
        {"method": "trades", "robust": {"trades_beta": 0}},
        {"method": "adversarial", "robust": {"epsilon": -0.1}},
    ],
    ids=["unknown", "empty", "twice", "beta", "epsilon"],
)
def test_a_bad_hardening_method_is_refused_at_submit(api, auth, store, settings, config):
    response = post(api, auth, onnx_model_bytes(), config=CONFIG | config)
    body = assert_problem(response, 422, "invalid_spec")
    assert body["errors"][0]["field"].startswith(("config.method", "config.robust"))
    assert_nothing_left(store, settings)


def test_several_hardening_methods_are_accepted(api, auth, store):
    config = CONFIG | {"method": ["adversarial", "distillation"], "robust": {"fast": True}}
    response = post(api, auth, onnx_model_bytes(), config=config)
    assert response.status_code == 202, response.text


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("temperature", "NaN"),
        ("temperature", "Infinity"),
        ("learning_rate", "NaN"),
        ("input_range", "[0, Infinity]"),
        ("normalization", '{"mean": [NaN], "std": [1]}'),
        ("normalization", '{"mean": [0.5], "std": [Infinity]}'),
    ],
)
def test_non_finite_numbers_are_refused(api, auth, store, settings, field, value):
    # Python's json reads NaN and Infinity; they passed the spec (input_range [0, Infinity], a
    # NaN mean) and the job failed in the worker, or got a misleading "<= 1000" message.
    config = json.dumps(CONFIG)[:-1] + f', "{field}": {value}}}'
    body = assert_problem(post(api, auth, onnx_model_bytes(), config=config), 422, "invalid_spec")
    assert body["errors"][0]["field"].startswith(_where(field))
    assert "finite" in body["detail"]
    assert_nothing_left(store, settings)


def _where(field: str) -> str:
    """Where the API says a config field is: a distillation setting given at the top level
    (the form before its section) is read in the section."""
    return (
        f"config.distillation.{field}" if field in FLAT_DISTILLATION_FIELDS else f"config.{field}"
    )


@pytest.mark.parametrize("field", ["architecture", "student_architecture"])
def test_unknown_zoo_architecture_is_refused(api, auth, store, settings, field):
    # Was queued; the worker failed it later (student_architecture after training the teacher).
    response = post(api, auth, onnx_model_bytes(), config=CONFIG | {field: "resnet1000"})
    body = assert_problem(response, 422, "invalid_spec")
    assert body["errors"][0]["field"] == _where(field)
    assert "papernot_mnist" in body["detail"]
    assert_nothing_left(store, settings)


def test_safetensors_without_architecture_is_refused(api, auth, store, settings):
    # Weights without code: was queued, and the worker failed it.
    safetensors = pytest.importorskip("safetensors.numpy")
    import numpy as np

    weights = safetensors.save({"1.weight": np.zeros((10, 64), np.float32)})
    body = assert_problem(post(api, auth, weights), 422, "unsupported_model")
    assert body["format"] == "safetensors" and "architecture" in body["hint"]
    assert "papernot_mnist" in body["hint"]
    assert_nothing_left(store, settings)
    accepted = post(api, auth, weights, config=CONFIG | {"architecture": "mlp"})
    assert accepted.status_code == 202, accepted.text
    assert accepted.json()["model_format"] == "safetensors"


def test_config_that_is_not_json_is_refused(api, auth, store, settings):
    body = assert_problem(
        post(api, auth, onnx_model_bytes(), config="{temperature:"), 422, "invalid_spec"
    )
    assert "JSON" in body["detail"]
    assert_nothing_left(store, settings)


@pytest.mark.parametrize("depth", [5_000, 200_000])
def test_a_deeply_nested_config_is_422_not_500(api, auth, store, settings, depth):
    # json.loads raised RecursionError, which the catch-all handler answered with a 500.
    config = '{"dataset": "builtin:digits", "evaluation": ' + "[" * depth + "]" * depth + "}"
    body = assert_problem(post(api, auth, onnx_model_bytes(), config=config), 422, "invalid_spec")
    assert "nested too deeply" in body["detail"] and "/spec/schema" in body["hint"]
    assert_nothing_left(store, settings)


def test_a_config_saved_with_a_byte_order_mark_is_accepted(api, auth):
    # What Windows editors write in front of a spec.json sent with curl -F config=<spec.json.
    response = post(api, auth, onnx_model_bytes(), config="\ufeff" + json.dumps(CONFIG))
    assert response.status_code == 202, response.text
    assert response.json()["spec"]["dataset"] == "builtin:digits"


def test_oversized_upload_is_refused_and_partial_file_removed(api, auth, store, settings):
    big = onnx_model_bytes() + b"\x00" * (settings.max_upload_bytes + 1)
    body = assert_problem(post(api, auth, big), 413, "payload_too_large")
    assert "HARDEN_MAX_UPLOAD_BYTES" in body["hint"]
    assert_nothing_left(store, settings)


def test_missing_model_part_is_refused(api, auth, store, settings):
    response = api.post(
        "/harden",
        data={"config": json.dumps(CONFIG)},
        headers=auth,
        files={"dataset": ("d.npz", digits_like_npz())},
    )
    assert_problem(response, 422, "unsupported_model")
    assert_nothing_left(store, settings)


def test_missing_key_is_401(api, store, settings):
    body = assert_problem(post(api, {}, onnx_model_bytes()), 401, "unauthorized")
    assert "harden keys create" in body["hint"]
    assert_nothing_left(store, settings)


def test_wrong_key_is_401(api, key, store, settings):
    response = post(api, {"Authorization": "Bearer hk_not-a-key"}, onnx_model_bytes())
    assert_problem(response, 401, "unauthorized")
    assert response.headers["www-authenticate"] == "Bearer"
    assert_nothing_left(store, settings)


def test_revoked_key_is_401(api, auth, store):
    ApiKeyStore(store.engine).revoke("alice")
    assert_problem(api.get("/jobs", headers=auth), 401, "unauthorized")


def test_other_callers_job_is_404(api, auth, store):
    job = post(api, auth, onnx_model_bytes()).json()
    bob = {"Authorization": f"Bearer {ApiKeyStore(store.engine).create('bob')}"}
    for method, path in [
        ("GET", ""),
        ("POST", "/cancel"),
        ("DELETE", ""),
        ("GET", "/events"),
        ("GET", "/model.onnx"),
    ]:
        response = api.request(method, f"/jobs/{job['id']}{path}", headers=bob)
        assert_problem(response, 404, "not_found")
    assert api.get("/jobs", headers=bob).json()["total"] == 0
    assert store.get(job["id"]).state == "queued"


def test_open_mode_needs_no_key_and_owner_is_anonymous(settings: Settings):
    from app.web.main import create_app

    settings = settings.model_copy(update={"auth": "open"})
    with TestClient(create_app(settings)) as client:
        response = post(client, {}, onnx_model_bytes())
        assert response.status_code == 202
        assert JobStore.from_url(settings.database_url).get(response.json()["id"]).owner == (
            "anonymous"
        )


@pytest.mark.parametrize("content_type", ["application/json", "text/plain"])
def test_non_multipart_body_is_refused(api, auth, content_type):
    response = api.post("/harden", content=b"{}", headers=auth | {"content-type": content_type})
    assert_problem(response, 400, "bad_request")


def test_unreachable_broker_is_503_and_the_job_is_rolled_back(tmp_path: Path):
    from app.web.main import create_app

    settings = Settings(
        database_url=f"sqlite:///{tmp_path}/h.db",
        broker_url="redis://127.0.0.1:1/0",
        artifact_dir=tmp_path / "a",
        upload_dir=tmp_path / "u",
        auth="open",
    )
    with TestClient(create_app(settings)) as client:
        body = assert_problem(post(client, {}, onnx_model_bytes()), 503, "unavailable")
        assert "Idempotency-Key" in body["hint"]
    assert_nothing_left(JobStore.from_url(settings.database_url), settings)


def test_malformed_or_truncated_multipart_is_400(api, auth, store, settings):
    boundary = "xyz"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="model"; filename="m"\r\n\r\n'
    ).encode()
    truncated = head + onnx_model_bytes()  # no closing boundary: the upload was cut off
    garbage = b"this is not multipart at all\r\n\r\n"
    for body in (truncated, garbage):
        response = api.post(
            "/harden",
            content=body,
            headers=auth | {"content-type": f"multipart/form-data; boundary={boundary}"},
        )
        assert_problem(response, 400, "bad_request")
    assert_nothing_left(store, settings)


NON_PUBLIC_WEBHOOKS = [
    "http://127.0.0.1:9/x",
    "http://169.254.169.254/latest",  # cloud metadata
    "http://[::1]/",
    "http://localhost/",
]


@pytest.mark.parametrize("url", NON_PUBLIC_WEBHOOKS)
def test_webhook_to_a_non_public_address_is_refused(api, auth, store, settings, url):
    response = post(api, auth, onnx_model_bytes(), config=CONFIG | {"webhook_url": url})
    body = assert_problem(response, 422, "invalid_spec")
    assert [e["field"] for e in body["errors"]] == ["config.webhook_url"]
    assert "public https URL" in body["hint"]
    assert "HARDEN_WEBHOOK_ALLOW_PRIVATE=true" in body["hint"]
    assert_nothing_left(store, settings)


def test_webhook_name_resolving_to_a_private_address_is_refused(
    api, auth, store, settings, monkeypatch
):
    def getaddrinfo(host, port, *args, **kwargs):
        assert host == "hooks.example.com"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.7", port))]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    config = CONFIG | {"webhook_url": "https://hooks.example.com/harden"}
    body = assert_problem(post(api, auth, onnx_model_bytes(), config=config), 422, "invalid_spec")
    assert "hooks.example.com resolves to 10.0.0.7" in body["detail"]
    assert_nothing_left(store, settings)


def test_public_webhook_is_accepted(api, auth):
    # An IP literal: checked without any DNS lookup.
    config = CONFIG | {"webhook_url": "https://93.184.216.34/hook"}
    response = post(api, auth, onnx_model_bytes(), config=config)
    assert response.status_code == 202, response.text
    assert response.json()["spec"]["webhook_url"] == "https://93.184.216.34/hook"


def test_private_webhook_is_accepted_when_the_operator_allows_it(settings: Settings):
    from app.web.main import create_app

    allowed = settings.model_copy(update={"auth": "open", "webhook_allow_private": True})
    with TestClient(create_app(allowed)) as client:
        for url in NON_PUBLIC_WEBHOOKS:
            response = post(client, {}, onnx_model_bytes(), config=CONFIG | {"webhook_url": url})
            assert response.status_code == 202, response.text


HOSTILE_DATASETS = hostile_npz() | hostile_archives()


@pytest.mark.parametrize("case", sorted(HOSTILE_DATASETS))
def test_a_dataset_the_worker_would_refuse_is_refused_at_upload(case, api, auth, store, settings):
    response = post(api, auth, onnx_model_bytes(), dataset=HOSTILE_DATASETS[case])
    body = assert_problem(response, 422, "invalid_dataset")
    assert body["hint"], body
    assert_nothing_left(store, settings)


def test_a_well_formed_image_folder_archive_is_accepted(api, auth, store):
    response = post(api, auth, onnx_model_bytes(), dataset=image_folder_tar_gz())
    assert response.status_code == 202, response.text
    assert store.get(response.json()["id"]).dataset_name == "dataset.tar.gz"


def test_attacks_named_many_times_run_once_each(api, auth):
    attacks = ["fgsm_ce"] * 50_000 + ["cw_l2", "fgsm_ce"]
    config = CONFIG | {"evaluation": {"attacks": attacks}}
    response = post(api, auth, onnx_model_bytes(), config)
    assert response.status_code == 202, response.text
    assert response.json()["spec"]["evaluation"]["attacks"] == ["fgsm_ce", "cw_l2"]


def test_an_evaluation_past_the_limit_is_refused_naming_it(api, auth, store, settings):
    config = CONFIG | {"evaluation": {"samples": 10_000, "pgd_steps": 1000}}
    body = assert_problem(post(api, auth, onnx_model_bytes(), config), 422, "invalid_spec")
    assert "HARDEN_MAX_EVALUATION_STEPS" in body["detail"] and "100,000,000" in body["detail"]
    assert body["limit_steps"] == settings.max_evaluation_steps < body["steps"]
    assert body["errors"][0]["field"] == "config.evaluation" and "pgd_steps" in body["hint"]
    assert_nothing_left(store, settings)
    # The evaluation switched off costs nothing, whatever its budgets say.
    off = CONFIG | {"evaluation": {"enabled": False, "samples": 10_000, "pgd_steps": 1000}}
    assert post(api, auth, onnx_model_bytes(), off).status_code == 202
