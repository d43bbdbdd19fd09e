"""The MLflow hand-off against a real `mlflow server` on loopback: a succeeded job's run, its
parameters, metrics and files, the registered ONNX model with its signature, alias and tags;
a failing server leaves a warning and the job's files intact."""

from __future__ import annotations

import hashlib
import json
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
import pytest

from app.infra.job_resource import job_out
from core.names import (
    ARTIFACT_NAMES,
    MODEL_CARD,
    MODEL_ONNX,
    REPORT_HTML,
    REPORT_JSON,
    REPORT_SARIF,
)
from tests.worker.conftest import queue_job
from tests.worker.mlflow_server import free_port
from tests.worker.real_pipeline import TINY_EVALUATION
from worker.runner import WorkerServices, run_job

mlflow = pytest.importorskip("mlflow")
# tracking_uri: the session's `mlflow server` (tests/conftest.py).
pytestmark = pytest.mark.integration


def allow(services: WorkerServices, **settings: Any) -> None:
    services.settings = services.settings.model_copy(update={"mlflow_max_retries": 0} | settings)


def stored(services: WorkerServices, job_id: str, name: str, tmp_path: Path) -> bytes:
    return services.artifacts.fetch(job_id, name, tmp_path / "fetched" / job_id / name).read_bytes()


def test_a_succeeded_job_is_logged_and_its_model_registered(
    services: WorkerServices, tracking_uri: str, tmp_path: Path
) -> None:
    name, experiment = f"digits-{uuid.uuid4().hex[:8]}", f"ci-{uuid.uuid4().hex[:8]}"
    host_port = tracking_uri.removeprefix("http://")
    allow(services, mlflow_allowed_hosts=host_port)
    section = {"tracking_uri": tracking_uri, "experiment": experiment, "registered_model": name}
    job_id = queue_job(services, {"evaluation": TINY_EVALUATION, "mlflow": section})

    assert run_job(services, job_id) == "succeeded"

    job = services.store.get(job_id)
    resource = job_out(job).mlflow
    assert resource is not None and resource.warning is None, resource
    assert resource.model_uri == f"models:/{name}/{resource.model_version}"
    report = json.loads(stored(services, job_id, REPORT_JSON, tmp_path))
    client = mlflow.MlflowClient(tracking_uri)
    run = client.get_run(resource.run_id)
    assert run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).name == experiment
    # Parameters: the resolved spec, flattened.
    params = run.data.params
    temperature = report["spec"]["distillation"]["temperature"]
    assert params["distillation.temperature"] == json.dumps(temperature)
    assert params["evaluation.pgd_steps"] == "3"
    assert json.loads(params["evaluation.attacks"]) == TINY_EVALUATION["attacks"]
    assert not any(key.startswith("mlflow") for key in params)
    # Metrics: the report's numbers, per model, attack and budget.
    metrics = run.data.metrics
    for model in ("uploaded", "student"):
        clean = report["models"][model]["clean_accuracy"]
        assert metrics[f"clean_accuracy/{model}"] == pytest.approx(clean)
        for attack in report["evaluation"]["models"][model]["attacks"]:
            for point in attack["points"]:
                key = f"robust_accuracy/{model}/{attack['attack']}/eps_{point['epsilon']:g}"
                assert metrics[key] == pytest.approx(point["robust_accuracy"])
    assert metrics["robust_accuracy/student/pgd_linf_margin/eps_0.1"] >= 0
    assert set(report["timings_s"]) <= {k.removeprefix("time_s/") for k in metrics}
    # report.json, report.html, the model card and the SARIF log, byte for byte the job's own.
    logged = Path(client.download_artifacts(run.info.run_id, "report", str(tmp_path / "dl")))
    for artifact in (REPORT_JSON, REPORT_HTML, MODEL_CARD, REPORT_SARIF):
        digest = hashlib.sha256((logged / artifact).read_bytes()).hexdigest()
        assert digest == job.artifacts[artifact]
    # The registered version: alias and tags, no deprecated stage.
    label = report["verdict"]["label"]
    version = client.get_model_version_by_alias(name, "candidate")
    assert version.version == resource.model_version
    assert version.tags == {"verdict": label, "method": "distillation", "harden_job_id": job_id}
    assert version.current_stage in ("None", None)
    assert run.data.tags["harden.verdict"] == label
    # The ONNX model with its signature, computing what the job's model.onnx computes.
    mlflow.set_tracking_uri(tracking_uri)
    info = mlflow.models.get_model_info(f"models:/{name}@candidate")
    assert "onnx" in info.flavors
    (signature_input,) = info.signature.inputs.inputs
    assert signature_input.shape == (-1, 1, 8, 8)
    registered = mlflow.onnx.load_model(f"models:/{name}@candidate")
    batch = np.random.default_rng(0).random((4, 1, 8, 8), dtype=np.float32)
    ours = onnxruntime.InferenceSession(stored(services, job_id, MODEL_ONNX, tmp_path))
    theirs = onnxruntime.InferenceSession(registered.SerializeToString())
    feed = {signature_input.name: batch}
    np.testing.assert_allclose(theirs.run(None, feed)[0], ours.run(None, feed)[0], rtol=1e-6)

    # A second job through the service's default server: a new version, the alias moves to it.
    allow(services, mlflow_tracking_uri=tracking_uri, mlflow_registered_model=name)
    second = queue_job(services, {"evaluation": {"enabled": False}})
    assert run_job(services, second) == "succeeded"
    record = job_out(services.store.get(second)).mlflow
    assert record is not None and record.warning is None
    assert int(record.model_version) == int(resource.model_version) + 1
    moved = client.get_model_version_by_alias(name, "candidate")
    assert (moved.version, moved.tags["verdict"]) == (record.model_version, "not audited")
    assert record.experiment == "harden"


class _Failing(BaseHTTPRequestHandler):
    def _answer(self) -> None:
        self.send_response(503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_POST = do_PATCH = do_DELETE = _answer

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def failing_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Failing)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("server", ["refused", "503"])
def test_a_failing_mlflow_server_leaves_a_warning_and_the_files(
    services: WorkerServices, server: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if server == "refused":
        url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    else:
        url = request.getfixturevalue("failing_server")
    allow(services, mlflow_allowed_hosts="127.0.0.1")
    job_id = queue_job(services, {"mlflow": {"tracking_uri": url}})

    assert run_job(services, job_id) == "succeeded"

    job = services.store.get(job_id)
    resource = job_out(job)
    assert resource.mlflow is not None and resource.mlflow.run_id is None
    assert url in resource.mlflow.warning and "stored and downloadable" in resource.mlflow.warning
    for name in ARTIFACT_NAMES:
        content = stored(services, job_id, name, tmp_path)
        assert hashlib.sha256(content).hexdigest() == job.artifacts[name]
        assert resource.artifacts[name].sha256 == job.artifacts[name]


def test_a_tracking_server_no_longer_allowed_is_not_called(services: WorkerServices) -> None:
    # Accepted at submit, then the operator took the host off the list before the job ran.
    job_id = queue_job(services, {"mlflow": {"tracking_uri": "http://10.1.2.3:5000"}})

    assert run_job(services, job_id) == "succeeded"

    record = job_out(services.store.get(job_id)).mlflow
    assert record is not None and record.run_id is None
    assert "not attempted" in record.warning and "10.1.2.3:5000" in record.warning
    assert "HARDEN_MLFLOW_ALLOWED_HOSTS" in record.warning


def test_a_job_without_mlflow_is_not_handed_over(services: WorkerServices) -> None:
    job_id = queue_job(services)
    assert run_job(services, job_id) == "succeeded"
    assert job_out(services.store.get(job_id)).mlflow is None


def test_certified_accuracies_become_metrics_per_model_and_radius() -> None:
    from core.contract.certification import Certification, CertifiedAt, ModelCertification
    from core.report.schema import read_report
    from worker.mlflow_handoff import report_metrics

    v1 = Path(__file__).resolve().parents[1] / "core" / "report" / "data" / "report-v1.9.json"
    report = read_report(json.loads(v1.read_text()))
    assert not any(name.startswith("certified_accuracy/") for name in report_metrics(report))
    certified = ModelCertification(
        certified=[CertifiedAt(radius=0.25, certified_accuracy=0.75),
                   CertifiedAt(radius=0.5, certified_accuracy=0.5)],
        smoothed_accuracy=0.75, abstain_rate=0.0, mean_radius=0.5, radii=[0.6, 0.3, 0.0, 0.7],
        seconds_per_image=0.1,
    )  # fmt: skip
    section = Certification(
        sigma=0.25, n0=10, n=100, alpha=0.001, samples=4, seed=0, what="g",
        models={"student": certified},
    )  # fmt: skip
    metrics = report_metrics(report.model_copy(update={"certification": section}))
    assert metrics["certified_accuracy/student/l2/eps_0.25"] == 0.75
    assert metrics["certified_accuracy/student/l2/eps_0.5"] == 0.5
