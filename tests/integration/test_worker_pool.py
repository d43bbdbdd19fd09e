"""A prefork worker keeps its pool whatever torch's import time (issue 25), and its healthcheck
says when it cannot.

Every Python process here loads a ``sitecustomize`` that makes ``import core.pipeline`` (torch and
the pipeline) take SLOW_IMPORT_S more, longer than the time a new pool process is given to come
up (HARDEN_WORKER_PROCESS_START_TIMEOUT_S, set to Celery's own default of 4 s). The worker imports
the pipeline once in its main process before forking, so a pool process killed with SIGKILL is
replaced at once and the next job runs. A worker whose pool processes cannot come up in time (a
slow start in each child, from ``os.register_at_fork``) still answers ping, but
``python -m worker.healthcheck`` fails for it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest
from harden_client import HardenClient

from tests.integration.conftest import Cluster, tiny_torchscript, wait_for
from tests.integration.test_redis_postgres import FAST, create_key

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

SLOW_IMPORT_S = 6.0
START_TIMEOUT_S = 4.0

SITECUSTOMIZE = textwrap.dedent(
    """
    import os
    import sys
    import time

    class _SlowPipeline:
        # The import of core.pipeline, SLOW_IMPORT_S late: torch on a busy host.
        def find_spec(self, name, path=None, target=None):
            if name == "core.pipeline" and os.environ.get("SLOW_IMPORT_S"):
                time.sleep(float(os.environ["SLOW_IMPORT_S"]))
            return None

    sys.meta_path.insert(0, _SlowPipeline())
    if os.environ.get("SLOW_CHILD_START_S"):
        # Every forked child starts this late: longer than the pool's start timeout.
        seconds = float(os.environ["SLOW_CHILD_START_S"])
        os.register_at_fork(after_in_child=lambda: time.sleep(seconds))
    """
)


def children(pid: int) -> set[int]:
    """The pids of ``pid``'s child processes (the worker's pool processes)."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.add(int(stat.parent.name))
    return found


def healthcheck(cluster: Cluster, node: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worker.healthcheck", "--node", node, "--timeout", "3"],
        cwd=cluster.workdir,
        env=cluster.env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def slow_import_cluster(redis_cluster: Cluster, tmp_path: Path) -> Cluster:
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    redis_cluster.env |= {
        "PYTHONPATH": os.pathsep.join((str(site), redis_cluster.env["PYTHONPATH"])),
        "SLOW_IMPORT_S": str(SLOW_IMPORT_S),
        "HARDEN_WORKER_PROCESS_START_TIMEOUT_S": str(START_TIMEOUT_S),
        "HARDEN_CONTAIN_MODELS": "false",
    }
    return redis_cluster


def start_prefork(cluster: Cluster, name: str, **env: str) -> tuple[subprocess.Popen[bytes], str]:
    """A prefork worker of one pool process, and its node name (unique: other tests' workers on
    this Redis answer to theirs)."""
    node = f"{name}-{uuid.uuid4().hex[:8]}@{os.uname().nodename}"
    process = cluster.spawn(
        name,
        "worker",
        "--pool",
        "prefork",
        "--concurrency",
        "1",
        "--hostname",
        node,
        env=env,
    )
    wait_for(lambda: " ready." in cluster.log(name), 90, f"{name} ready", lambda: cluster.log(name))
    return process, node


def test_a_killed_pool_process_is_replaced_despite_a_slow_import_then_runs_a_job(
    slow_import_cluster: Cluster, tmp_path: Path
):
    cluster = slow_import_cluster
    cluster.start_api()
    worker, node = start_prefork(cluster, "w1")
    [first] = children(worker.pid)
    assert healthcheck(cluster, node).returncode == 0, healthcheck(cluster, node).stdout

    killed_at = time.monotonic()
    os.kill(first, signal.SIGKILL)
    wait_for(lambda: children(worker.pid) - {first}, 60, "a new pool process")
    replaced_s = time.monotonic() - killed_at
    wait_for(
        lambda: healthcheck(cluster, node).returncode == 0,
        60,
        "the new pool process up",
        lambda: cluster.log("w1"),
    )
    healthy_s = time.monotonic() - killed_at
    [second] = children(worker.pid)
    assert second != first
    pass

    with HardenClient(cluster.url, create_key(cluster, "ci")) as client:
        job = client.submit(tiny_torchscript(tmp_path / "model.pt"), config=FAST)
        done = client.wait(job["id"], timeout_s=120, poll_s=0.5)
    assert done["state"] == "succeeded", (done["error"], cluster.log("w1")[-3000:])
    assert done["attempts"] == 1
    print(
        f"\npool process SIGKILLed: a new one after {replaced_s:.2f} s, the healthcheck passing "
        f"after {healthy_s:.1f} s, with a {SLOW_IMPORT_S:g} s import and a "
        f"{START_TIMEOUT_S:g} s start timeout; the job ran on it"
    )


def test_the_healthcheck_fails_while_the_pool_cannot_keep_a_process(slow_import_cluster: Cluster):
    cluster = slow_import_cluster
    worker, node = start_prefork(cluster, "w2", SLOW_CHILD_START_S=str(2 * START_TIMEOUT_S))
    # Celery times the start of the processes it replaces, not of its first ones.
    [first] = children(worker.pid)
    os.kill(first, signal.SIGKILL)
    wait_for(
        lambda: "Timed out waiting for UP message" in cluster.log("w2"),
        60,
        "the pool killing a process that did not come up",
        lambda: cluster.log("w2"),
    )
    ping = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "worker.celery_app", "inspect", "ping"]
        + ["-d", node, "--timeout", "3"],
        cwd=cluster.workdir,
        env=cluster.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ping.returncode == 0, ping.stdout + ping.stderr  # ping alone says all is well
    health = healthcheck(cluster, node)
    assert health.returncode == 1, health.stdout
    assert "0 of 1 pool processes up" in health.stdout
