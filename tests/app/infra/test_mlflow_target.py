"""Which MLflow tracking servers a job may name (app/infra/mlflow_target.py): the operator's
own, the hosts it lists, any public host with '*'; never a file path or a private address it did
not list."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from app.infra.mlflow_target import TrackingUriRefused, check_target, resolve_target
from app.infra.settings import Settings
from core.contract.mlflow_settings import MlflowSpec
from core.contract.spec import HardenSpec


def settings(**values: object) -> Settings:
    return Settings(**values)  # type: ignore[arg-type]


def target_of(uri: str | None, service: Settings, **section: object):
    spec = MlflowSpec(tracking_uri=uri, **section) if uri or section else None
    target = resolve_target(spec, service)
    assert target is not None
    check_target(target, service)
    return target


def test_the_service_default_fills_what_the_job_leaves_unset():
    service = settings(mlflow_tracking_uri="sqlite:///var/mlflow.db", mlflow_experiment="team")
    target = target_of(None, service)
    assert (target.tracking_uri, target.experiment, target.registered_model, target.alias) == (
        "sqlite:///var/mlflow.db",
        "team",
        "harden-student",
        "candidate",
    )
    assert not target.from_job
    assert target_of(None, service, registered_model="digits").registered_model == "digits"


def test_no_section_and_no_default_means_no_handoff_and_enabled_false_opts_out():
    assert resolve_target(None, settings()) is None
    own = settings(mlflow_tracking_uri="http://mlflow.internal:5000")
    assert resolve_target(MlflowSpec(enabled=False), own) is None


def test_a_section_without_any_tracking_server_is_refused():
    with pytest.raises(TrackingUriRefused, match="HARDEN_MLFLOW_TRACKING_URI"):
        resolve_target(MlflowSpec(experiment="x"), settings())


@pytest.mark.parametrize(
    "uri",
    [
        "http://127.0.0.1:5000",
        "http://localhost:5000",
        "http://169.254.169.254/latest/meta-data",
        "http://10.0.0.8:5000",
        "https://93.184.216.34",  # public, yet not listed and no '*'
    ],
)
def test_a_job_may_not_name_a_host_the_operator_did_not_list(uri):
    with pytest.raises(TrackingUriRefused, match="not among the hosts"):
        target_of(uri, settings())


def test_listed_hosts_with_or_without_port_and_the_operators_own_host_are_allowed():
    service = settings(
        mlflow_allowed_hosts="mlflow.internal, 127.0.0.1:5000",
        mlflow_tracking_uri="http://10.0.0.9:8080",
    )
    assert target_of("http://mlflow.internal:9999", service).from_job
    assert target_of("http://127.0.0.1:5000/", service).from_job
    assert target_of("http://10.0.0.9:8080", service).from_job
    for refused in ("http://127.0.0.1:5001", "http://10.0.0.9:8081"):
        with pytest.raises(TrackingUriRefused):
            target_of(refused, service)


def test_star_allows_public_hosts_only():
    service = settings(mlflow_allowed_hosts="*")
    assert target_of("https://93.184.216.34", service).from_job  # an IP literal: no DNS lookup
    for private in ("http://127.0.0.1:5000", "http://10.0.0.8", "http://[::1]:5000"):
        with pytest.raises(TrackingUriRefused, match="not a public address|loopback"):
            target_of(private, service)


@pytest.mark.parametrize("uri", ["file:///etc", "sqlite:///tmp/x.db", "databricks", "/var/x"])
def test_a_job_cannot_name_a_local_store(uri):
    with pytest.raises(ValidationError, match="mlflow.tracking_uri"):
        HardenSpec.model_validate({"mlflow": {"tracking_uri": uri}})


@pytest.mark.parametrize("alias", ["latest", "v3", "has space", ""])
def test_an_alias_mlflow_would_refuse_is_refused_in_the_spec(alias):
    with pytest.raises(ValidationError, match="alias"):
        MlflowSpec(alias=alias)
