"""``harden run`` with an mlflow section logs to the config's tracking server as the service's
workers do (a real `mlflow server` on loopback); an unreachable one is a warning, exit code 0."""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from tests.core.model_files import write_model
from tests.worker.mlflow_server import free_port
from tests.worker.real_pipeline import TINY_EVALUATION

mlflow = pytest.importorskip("mlflow")
pytestmark = pytest.mark.integration
runner = CliRunner()


def harden_run(tmp_path: Path, section: dict) -> tuple[object, Path]:
    config = tmp_path / "spec.json"
    spec = {"teacher_epochs": 1, "student_epochs": 1, "evaluation": TINY_EVALUATION}
    config.write_text(json.dumps(spec | {"mlflow": section}))
    out = tmp_path / "out"
    model = write_model("torchscript", tmp_path)
    args = ["run", str(model), "--dataset", "builtin:digits", "--out", str(out),
            "--config", str(config), "--device", "cpu"]  # fmt: skip
    return runner.invoke(app, args), out


def test_harden_run_logs_and_registers_the_model(tmp_path: Path, tracking_uri: str) -> None:
    name = f"local-{uuid.uuid4().hex[:8]}"
    section = {"tracking_uri": tracking_uri, "registered_model": name, "alias": "local-build"}
    result, out = harden_run(tmp_path, section)
    assert result.exit_code == 0, result.output
    assert f"models:/{name}/1 (@local-build)" in result.stdout
    client = mlflow.MlflowClient(tracking_uri)
    version = client.get_model_version_by_alias(name, "local-build")
    report = json.loads((out / "report.json").read_text())
    assert version.tags["verdict"] == report["verdict"]["label"]
    assert version.tags["harden_job_id"] == "local"
    run = client.get_run(version.run_id)
    assert client.get_experiment(run.info.experiment_id).name == "harden"  # the default
    logged = Path(client.download_artifacts(run.info.run_id, "report/report.json", str(tmp_path)))
    assert (
        hashlib.sha256(logged.read_bytes()).digest()
        == hashlib.sha256((out / "report.json").read_bytes()).digest()
    )


def test_an_unreachable_server_is_a_warning_and_the_files_stay(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result, out = harden_run(tmp_path, {"tracking_uri": url})
    assert result.exit_code == 0, result.output
    assert f"warning: the MLflow hand-off to {url}/ failed" in result.stderr
    assert {p.name for p in out.iterdir()} >= {"model.onnx", "report.json", "report.html"}
