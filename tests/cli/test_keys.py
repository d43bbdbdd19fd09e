"""``harden keys``: a key made while the service runs open is said to be unchecked."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from app.infra.settings import get_settings
from cli.main import app

runner = CliRunner()


@pytest.fixture
def environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    monkeypatch.setenv("HARDEN_DATABASE_URL", f"sqlite:///{tmp_path}/harden.db")
    get_settings.cache_clear()
    yield monkeypatch
    get_settings.cache_clear()


@pytest.mark.parametrize("auth", ["open", "keys"])
def test_a_key_made_in_open_mode_comes_with_a_warning(
    auth: str, environment: pytest.MonkeyPatch
) -> None:
    # With HARDEN_AUTH=open the key was printed as if it protected something: the service
    # checks no key at all there.
    environment.setenv("HARDEN_AUTH", auth)
    result = runner.invoke(app, ["keys", "create", "--name", "ci"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().startswith("hk_")  # stdout is the key alone: $(...) still works
    warned = "HARDEN_AUTH=open" in result.stderr and "HARDEN_AUTH=keys" in result.stderr
    assert warned == (auth == "open"), result.stderr
    listed = runner.invoke(app, ["keys", "list"])
    assert listed.stdout.startswith("ci\t")  # made in both modes, for when keys are turned on
