"""One job's audit over two workers (issue 29), against the production shape: uvicorn, two Celery
workers running jobs in their confined child, Redis, PostgreSQL. A helper worker computes shards
of the job's audit; the merged report equals the one worker's; a helper SIGKILLed mid-shard
costs that shard only.

Prints what it measured (``-s``): shards per worker, the audit's seconds.
"""

from __future__ import annotations

import json
import os
import re
import signal
from pathlib import Path

import pytest
from harden_client import HardenClient

from app.infra.shard_store import ShardStore
from app.infra.store import JobStore
from tests.integration.conftest import Cluster, tiny_torchscript, wait_for
from tests.integration.test_redis_postgres import create_key
from tests.worker.real_pipeline import without_seconds

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

# Twenty-four shards of 15 samples with PGD at 40 steps: the audit takes seconds, long enough
# for a helper to replay the training and take shards.
SHARDED = {
    "dataset": "builtin:digits",
    "teacher_epochs": 1,
    "student_epochs": 2,
    "batch_size": 64,
    "corruptions": {"enabled": False},
    "evaluation": {
        "attacks": ["fgsm_ce", "pgd_linf_margin", "pgd_l2_margin"],
        "epsilons_linf": [0.1],
        "epsilons_l2": [1.0],
        "samples": 360,
        "samples_slow": 30,
        "pgd_steps": 40,
        "shard_samples": 15,
    },
}


def _evaluation(client: HardenClient, job_id: str, folder: Path) -> dict:
    path = client.download(job_id, folder / job_id, ("report.json",))["report.json"]
    return without_seconds(json.loads(Path(path).read_text())["evaluation"])  # type: ignore[return-value]


def _helped(cluster: Cluster, name: str) -> list[int]:
    """What each helper task of worker ``name`` returned: the shards it computed."""
    found = re.findall(
        r"harden\.audit_shard\[[^\]]+\] succeeded in [0-9.]+s: ([0-9]+)", cluster.log(name)
    )
    return [int(n) for n in found]


def _start(cluster: Cluster, tmp_path: Path) -> HardenClient:
    cluster.start_api()
    for name in ("w1", "w2"):
        cluster.start_worker(name)
    return HardenClient(cluster.url, create_key(cluster, "ci"))


@pytest.mark.slow
def test_a_helper_takes_shards_and_killed_mid_shard_costs_that_shard_only(
    redis_cluster: Cluster, tmp_path: Path
) -> None:
    """Two workers: the job's and a helper. The helper is SIGKILLed while it holds a shard; the
    job's worker computes that shard again, and no other, and the report's audit is the one the
    surviving worker makes of the same job alone."""
    redis_cluster.env |= {"HARDEN_HEARTBEAT_INTERVAL_S": "0.5", "HARDEN_HEARTBEAT_TIMEOUT_S": "3"}
    client = _start(redis_cluster, tmp_path)
    model = tiny_torchscript(tmp_path / "model.pt")
    job = client.submit(model, config=SHARDED)
    shards = ShardStore(JobStore.from_url(redis_cluster.env["HARDEN_DATABASE_URL"]).engine)

    def helper_claim() -> str | None:
        for state in shards.states(job["id"]).values():
            if ":helper:" in state.claimant and state.state == "claimed":
                return state.claimant
        return None

    wait_for(lambda: helper_claim() is not None, 120, "a helper claims a shard",
             lambda: redis_cluster.log("w1") + redis_cluster.log("w2"))  # fmt: skip
    claimant = helper_claim()
    assert claimant is not None
    pid = int(claimant.split(":")[1])  # host:pid:helper:token
    victim = next(p for p in redis_cluster.processes if p.pid == pid or _child_of(pid, p.pid))
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait()
    done = client.wait(job["id"], timeout_s=240, poll_s=0.5)
    assert done["state"] == "succeeded"
    logs = redis_cluster.log("w1") + redis_cluster.log("w2")
    assert "finished after its claim was taken" not in logs  # every helper result was merged
    taken_over = re.findall(r"shard ([0-9]+) of job [0-9a-f]+: its claimant died", logs)
    assert len(taken_over) == 1, logs  # the killed helper's shard, and no other

    # The same job on the surviving worker alone (its helper tasks find nothing left to claim).
    alone = client.submit(model, config=SHARDED)
    assert client.wait(alone["id"], timeout_s=240, poll_s=0.5)["state"] == "succeeded"
    assert _evaluation(client, job["id"], tmp_path) == _evaluation(client, alone["id"], tmp_path)
    print(f"\nhelper {claimant} SIGKILLed mid-shard: shard {taken_over[0]} computed again")


def _child_of(pid: int, parent: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return int(stat.rsplit(")", 1)[1].split()[1]) == parent
