"""``harden submit/status/download/cancel``: mistakes a user can fix get one line and exit 2."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app

runner = CliRunner()


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"  # nothing listens there any more


@pytest.mark.parametrize(
    "command",
    [
        ["status", "abc"],
        ["download", "abc"],
        ["cancel", "abc"],
        ["submit", "MODEL", "--dataset", "builtin:digits"],
    ],
)
def test_an_unreachable_service_is_one_line_not_a_traceback(
    command: list[str], tmp_path: Path
) -> None:
    # Was a 150-line httpx traceback (exit 1) when the service was not started or the URL wrong.
    model = tmp_path / "model.pt"
    model.write_bytes(b"x")
    url = closed_port_url()
    args = [str(model) if a == "MODEL" else a for a in command]
    result = runner.invoke(app, [*args, "--url", url])
    assert result.exit_code == 2, result.output
    assert f"cannot reach the service at {url}" in result.output
    assert "HARDEN_URL" in result.output and "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


@pytest.mark.parametrize(
    ("text", "expected"), [("{bad", "is not valid JSON"), ("[1]", "must hold a JSON object")]
)
def test_a_config_file_that_is_not_a_json_object_is_one_line(
    text: str, expected: str, tmp_path: Path
) -> None:
    (tmp_path / "model.pt").write_bytes(b"x")
    (tmp_path / "spec.json").write_text(text)
    result = runner.invoke(
        app,
        ["submit", str(tmp_path / "model.pt"), "--config", str(tmp_path / "spec.json")],
    )
    assert result.exit_code == 2, result.output
    assert expected in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_a_local_file_as_dataset_points_at_dataset_file(tmp_path: Path) -> None:
    # The service refuses paths; the CLI user needs the option that uploads the file.
    (tmp_path / "model.pt").write_bytes(b"x")
    data = tmp_path / "data.npz"
    data.write_bytes(b"x")
    result = runner.invoke(
        app,
        ["submit", str(tmp_path / "model.pt"), "--dataset", str(data), "--url", closed_port_url()],
    )
    assert result.exit_code == 2, result.output
    assert f"--dataset-file {data}" in result.output


@pytest.mark.parametrize("command", ["submit", "run"])
def test_a_job_without_a_dataset_is_refused_before_anything_runs(
    command: str, tmp_path: Path
) -> None:
    # harden submit digits.pt without --dataset silently used builtin:mnist, failed in the
    # worker, and exited 0.
    model = tmp_path / "model.pt"
    model.write_bytes(b"x")
    extra = ["--url", closed_port_url()] if command == "submit" else ["--out", str(tmp_path / "o")]
    result = runner.invoke(app, [command, str(model), *extra])
    assert result.exit_code == 2, result.output
    for way in ("builtin:mnist", "builtin:digits", "--dataset-file", "dataset:<id>"):
        assert way in result.output
    assert "cannot reach the service" not in result.output  # refused before any request
    assert not (tmp_path / "o").exists()


class RecordingClient:
    """Stands in for HardenClient: records what ``harden submit`` would send."""

    def __init__(self) -> None:
        self.configs: list[dict] = []

    def submit(self, model: Path, *, config: dict, dataset_file: Path | None = None) -> dict:
        self.configs.append(config)
        return {"id": "0" * 32, "state": "queued"}


def test_submit_takes_the_spec_options_of_run_over_its_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # harden submit had no --method (and five hand-written spec options): a user who found
    # --method in `harden run --help` could not submit the same job to the service.
    client = RecordingClient()
    monkeypatch.setattr("cli.service_client._client", lambda url, key: client)
    (tmp_path / "model.pt").write_bytes(b"x")
    config = {"method": "distillation", "seed": 1, "batch_size": 32, "temperature": 10}
    (tmp_path / "spec.json").write_text(json.dumps(config))
    args = ["submit", str(tmp_path / "model.pt"), "--config", str(tmp_path / "spec.json")]
    args += ["--dataset", "builtin:digits", "--method", "adversarial", "--seed", "3"]
    args += ["--temperature", "50", "--optimizer", "sgd"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    [sent] = client.configs
    assert sent["method"] == "adversarial" and sent["seed"] == 3 and sent["optimizer"] == "sgd"
    assert sent["batch_size"] == 32  # from the file: no option given
    assert sent["distillation"] == {"temperature": 50.0} and "temperature" not in sent
    result = runner.invoke(
        app,
        ["submit", str(tmp_path / "model.pt"), "--dataset", "builtin:digits"]
        + ["--method", "adversarial,distillation"],
    )
    assert result.exit_code == 0, result.output
    assert client.configs[-1]["method"] == ["adversarial", "distillation"]


def test_submit_has_every_spec_option_of_run() -> None:
    import typer

    commands = typer.main.get_command(app).commands  # type: ignore[attr-defined]
    options = {name: {p.name for p in commands[name].params} for name in ("run", "submit")}
    from cli.run_options import spec_options

    assert set(spec_options()) <= options["run"]
    assert set(spec_options()) <= options["submit"], set(spec_options()) - options["submit"]
