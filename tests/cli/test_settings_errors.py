"""A bad HARDEN_* setting stops `harden serve` / `harden worker` with one line per problem."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.parametrize(
    ("command", "environment", "expected"),
    [
        (
            "serve",
            {"HARDEN_JOB_SOFT_TIME_LIMIT_S": "700", "HARDEN_JOB_TIME_LIMIT_S": "600"},
            "HARDEN_JOB_SOFT_TIME_LIMIT_S (700 s) must be below HARDEN_JOB_TIME_LIMIT_S",
        ),
        ("worker", {"HARDEN_MAX_ATTEMPTS": "0"}, "HARDEN_MAX_ATTEMPTS: Input should be greater"),
        ("worker", {"HARDEN_DEVICE": "gpu0"}, "HARDEN_DEVICE ('gpu0') is not a device"),
        # A well-formed device this machine lacks (no CI machine has 100 GPUs): the worker stops
        # before it takes a job, instead of failing every job or running them on cuda:0.
        ("worker", {"HARDEN_DEVICE": "cuda:99"}, "HARDEN_DEVICE: device 'cuda:99' was asked"),
    ],
)
def test_an_invalid_setting_exits_2_naming_it_without_a_traceback(
    command: str, environment: dict[str, str], expected: str, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HARDEN_")} | environment
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    result = subprocess.run(
        [sys.executable, "-m", "cli.main", command],
        cwd=tmp_path,  # the default var/ folders would be made here
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert expected in result.stderr
    assert "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []  # nothing created before the settings were checked
