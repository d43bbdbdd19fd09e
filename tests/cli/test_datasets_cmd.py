"""``harden datasets upload|list|show|delete`` and ``harden submit --dataset dataset:<id>``
against the service on 127.0.0.1 (uvicorn in a thread, real HTTP); a mistake is one ``error:``
line and exit 2 (issue 13)."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from typer.testing import CliRunner

from app.infra.settings import Settings
from app.web.main import create_app
from cli.main import app
from tests.app.conftest import digits_like_npz, onnx_model_bytes

runner = CliRunner()


@pytest.fixture
def service(tmp_path: Path) -> Iterator[str]:
    settings = Settings(
        database_url=f"sqlite:///{tmp_path}/harden.db",
        broker_url="memory://",
        artifact_dir=tmp_path / "artifacts",
        upload_dir=tmp_path / "uploads",
        auth="open",
    )
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="error")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "the test service did not start"
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


def harden(service: str, *args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, [*args, "--url", service])
    return result.exit_code, result.stdout, result.stderr


def assert_one_error_line(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for needle in needles:
        assert needle in lines[0], err


def test_upload_list_show_submit_and_delete(service: str, tmp_path: Path):
    data = tmp_path / "digits.npz"
    data.write_bytes(digits_like_npz())
    code, out, err = harden(service, "datasets", "upload", str(data), "--name", "digits")
    assert code == 0, err
    dataset = json.loads(out)
    reference = dataset["reference"]
    assert dataset["name"] == "digits" and f"--dataset {reference}" in err
    code, out, _ = harden(service, "datasets", "list")
    assert code == 0 and out.split("\t")[0] == reference
    code, out, _ = harden(service, "datasets", "show", reference)
    assert code == 0 and json.loads(out) == dataset

    model = tmp_path / "model.onnx"
    model.write_bytes(onnx_model_bytes())
    code, out, err = harden(service, "submit", str(model), "--dataset", reference)
    assert code == 0, err
    job = json.loads(out)
    assert job["spec"]["dataset"] == reference and job["dataset_sha256"] == dataset["sha256"]
    code, _, err = harden(service, "datasets", "delete", reference)
    assert_one_error_line(code, err, "409", job["id"], "cancel")
    assert harden(service, "cancel", job["id"])[0] == 0
    code, out, _ = harden(service, "datasets", "delete", reference)
    assert code == 0 and reference in out
    code, _, err = harden(service, "datasets", "show", reference)
    assert_one_error_line(code, err, "404", "GET /datasets lists yours")


def test_mistakes_are_one_error_line(service: str, tmp_path: Path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(digits_like_npz(drop="y_train"))
    code, _, err = harden(service, "datasets", "upload", str(bad))
    assert_one_error_line(code, err, "422 invalid_dataset", "y_train", "np.savez")
    code, _, err = harden(service, "datasets", "upload", str(tmp_path))
    assert_one_error_line(code, err, "is a folder", "zip")
    code, _, err = harden(service, "datasets", "upload", str(tmp_path / "none.npz"))
    assert_one_error_line(code, err, "not there")
    data = tmp_path / "digits.npz"
    data.write_bytes(digits_like_npz())
    code, _, err = harden(service, "datasets", "upload", str(data), "--input-range", "1,0")
    assert_one_error_line(code, err, "LOW < HIGH")
    model = tmp_path / "model.onnx"
    model.write_bytes(onnx_model_bytes())
    code, _, err = harden(service, "submit", str(model), "--dataset", f"dataset:{'0' * 32}")
    assert_one_error_line(code, err, "422 invalid_dataset", "harden datasets upload")
    code, _, err = harden(service, "submit", str(model), "--dataset", "ftp://host/d.npz")
    assert_one_error_line(code, err, "'ftp'", "dataset:<id>")
    assert "file://" not in err
    code, out, _ = harden(service, "datasets", "list")
    assert code == 0 and out == ""
