"""Settings: the Redis visibility timeout always outlasts the longest job."""

from __future__ import annotations

import os

import pytest
from pydantic import ValidationError

from app.infra.settings import VISIBILITY_MARGIN_S, Settings, broker_transport_options

REDIS = "redis://127.0.0.1:6379/0"


@pytest.fixture(autouse=True)
def _no_harden_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # The developer's shell must not decide what these tests see.
    for name in [n for n in os.environ if n.startswith("HARDEN_")]:
        monkeypatch.delenv(name)


def test_unset_visibility_timeout_is_derived_from_the_hard_time_limit() -> None:
    settings = Settings(broker_url=REDIS)
    assert settings.visibility_timeout_s is None
    derived = settings.job_time_limit_s + VISIBILITY_MARGIN_S
    assert settings.resolved_visibility_timeout_s == derived > settings.job_time_limit_s
    assert broker_transport_options(settings)["visibility_timeout"] == derived


def test_derived_timeout_follows_the_time_limit_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HARDEN_BROKER_URL", REDIS)
    monkeypatch.setenv("HARDEN_JOB_SOFT_TIME_LIMIT_S", "40000")
    monkeypatch.setenv("HARDEN_JOB_TIME_LIMIT_S", "43200")
    options = broker_transport_options(Settings())
    assert options["visibility_timeout"] == 43200 + VISIBILITY_MARGIN_S
    # The sweep for expired messages runs several times per timeout, at most once a minute.
    assert options["unacked_restore_interval"] == 60


def test_explicit_visibility_timeout_longer_than_the_job_is_used() -> None:
    settings = Settings(
        broker_url=REDIS, job_soft_time_limit_s=90, job_time_limit_s=100, visibility_timeout_s=101
    )
    assert settings.resolved_visibility_timeout_s == 101
    options = broker_transport_options(settings)
    assert options["visibility_timeout"] == 101 and options["unacked_restore_interval"] == 20


@pytest.mark.parametrize("timeout", [3600, 21900])
def test_explicit_visibility_timeout_not_longer_than_the_job_is_refused(timeout: int) -> None:
    with pytest.raises(ValidationError) as refused:
        Settings(broker_url=REDIS, visibility_timeout_s=timeout)
    message = str(refused.value)
    assert f"HARDEN_VISIBILITY_TIMEOUT_S ({timeout} s) must exceed" in message
    assert "HARDEN_JOB_TIME_LIMIT_S (21900 s)" in message
    assert "Raise HARDEN_VISIBILITY_TIMEOUT_S above 21900" in message


def test_the_environment_is_checked_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HARDEN_VISIBILITY_TIMEOUT_S", "3600")
    with pytest.raises(ValidationError, match="HARDEN_VISIBILITY_TIMEOUT_S"):
        Settings()
    monkeypatch.setenv("HARDEN_JOB_TIME_LIMIT_S", "3000")
    monkeypatch.setenv("HARDEN_JOB_SOFT_TIME_LIMIT_S", "2900")
    assert Settings().resolved_visibility_timeout_s == 3600


def test_the_embedded_broker_has_no_visibility_timeout() -> None:
    assert broker_transport_options(Settings()) == {}


@pytest.mark.parametrize("soft", [600, 700])
def test_a_soft_time_limit_not_below_the_hard_one_is_refused(soft: int) -> None:
    with pytest.raises(ValidationError, match="HARDEN_JOB_SOFT_TIME_LIMIT_S .* must be below"):
        Settings(job_soft_time_limit_s=soft, job_time_limit_s=600)
    assert Settings(job_soft_time_limit_s=599, job_time_limit_s=600).job_soft_time_limit_s == 599


def test_a_heartbeat_timeout_under_three_intervals_is_refused() -> None:
    # One missed beat of a live worker must not hand its job to the reaper.
    with pytest.raises(ValidationError, match="HARDEN_HEARTBEAT_TIMEOUT_S"):
        Settings(heartbeat_interval_s=10, heartbeat_timeout_s=20)
    assert Settings(heartbeat_interval_s=1, heartbeat_timeout_s=3).heartbeat_timeout_s == 3


def test_device_and_compute_settings_are_read_and_a_bad_one_names_its_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HARDEN_DEVICE", "cuda:1")
    monkeypatch.setenv("HARDEN_TRAINING_PRECISION", "bfloat16")
    monkeypatch.setenv("HARDEN_CHANNELS_LAST", "false")
    settings = Settings()
    assert (settings.device, settings.training_precision) == ("cuda:1", "bfloat16")
    assert not settings.channels_last and settings.cudnn_benchmark
    assert Settings.model_fields["training_precision"].default == "auto"
    monkeypatch.setenv("HARDEN_TRAINING_PRECISION", "float16")  # not offered: needs loss scaling
    with pytest.raises(ValidationError, match="training_precision"):
        Settings()
    monkeypatch.delenv("HARDEN_TRAINING_PRECISION")
    monkeypatch.setenv("HARDEN_DEVICE", "gpu1")
    with pytest.raises(ValidationError, match=r"HARDEN_DEVICE \('gpu1'\) is not a device"):
        Settings()
