"""harden_client is its own small distribution: httpx is its only dependency and importing it
loads none of the service's code or ML stack."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

CLIENT = Path(__file__).resolve().parents[2] / "client"


def test_the_client_distribution_depends_on_httpx_only():
    project = tomllib.loads((CLIENT / "pyproject.toml").read_text())["project"]
    assert project["name"] == "harden-client"
    assert [dep.split(">")[0].split("=")[0] for dep in project["dependencies"]] == ["httpx"]


def test_importing_the_client_loads_no_service_code_and_no_torch():
    probe = (
        "import sys, harden_client\n"
        "heavy = {'torch', 'numpy', 'pydantic', 'fastapi', 'celery', 'sqlalchemy',"
        " 'core', 'app', 'worker', 'cli'}\n"
        "print(sorted(heavy & {name.split('.')[0] for name in sys.modules}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=CLIENT
    )
    assert out.stdout.strip() == "[]"
