"""How `harden submit --wait` shows a job's ETA (the job resource's eta_s) beside its bar."""

from __future__ import annotations

from cli.service_client import duration


def test_durations_read_as_people_say_them() -> None:
    assert duration(0) == "0 s" and duration(44.6) == "45 s"
    assert duration(200) == "3 min 20 s" and duration(3599) == "59 min 59 s"
    assert duration(7500) == "2 h 05 min"
