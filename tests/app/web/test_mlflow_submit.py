"""POST /harden with an mlflow section: a tracking server the service may not call is a 422
naming the field and the setting, with nothing left behind."""

from __future__ import annotations

from fastapi.testclient import TestClient

from app.infra.settings import Settings
from app.web.main import create_app
from tests.app.conftest import onnx_model_bytes
from tests.app.web.test_submit import CONFIG, assert_nothing_left, assert_problem, post


def test_a_tracking_server_the_operator_did_not_allow_is_refused(api, auth, store, settings):
    config = CONFIG | {"mlflow": {"tracking_uri": "http://169.254.169.254:80/"}}
    body = assert_problem(post(api, auth, onnx_model_bytes(), config=config), 422, "invalid_spec")
    assert [e["field"] for e in body["errors"]] == ["config.mlflow.tracking_uri"]
    assert body["errors"][0]["type"] == "mlflow_not_allowed"
    assert "HARDEN_MLFLOW_ALLOWED_HOSTS" in body["hint"]
    assert_nothing_left(store, settings)


def test_an_mlflow_section_without_a_tracking_server_is_refused(api, auth, store, settings):
    config = CONFIG | {"mlflow": {"registered_model": "digits"}}
    body = assert_problem(post(api, auth, onnx_model_bytes(), config=config), 422, "invalid_spec")
    assert "HARDEN_MLFLOW_TRACKING_URI" in body["detail"]
    assert_nothing_left(store, settings)


def test_an_allowed_tracking_server_is_accepted_and_kept_in_the_spec(settings: Settings):
    allowed = settings.model_copy(
        update={"auth": "open", "mlflow_allowed_hosts": "mlflow.internal:5000"}
    )
    section = {"tracking_uri": "http://mlflow.internal:5000/", "registered_model": "digits"}
    with TestClient(create_app(allowed)) as client:
        response = post(client, {}, onnx_model_bytes(), config=CONFIG | {"mlflow": section})
    assert response.status_code == 202, response.text
    assert response.json()["spec"]["mlflow"] == section | {
        "enabled": True,
        "experiment": None,
        "alias": "candidate",
    }
