"""One job's audit on 1 and on 2 workers, on the production shape (uvicorn, Celery workers with
one thread each, Redis, PostgreSQL, jobs in their confined child), on this machine:

    .venv/bin/python bench/scale_out.py [--repeats 1]

For each worker count it submits the same job (builtin:mnist, a small MLP the job trains in
seconds, an audit of 1,000 samples in 20 shards), waits for it, and reads the audit's seconds
(report.json's timings_s.evaluate), the helpers' own seconds and shard counts (their Celery log
lines) and the verdict. Writes bench/results/scale_out.md with the speed-up, whether the two
audits are identical, and the measured costs docs/scaling.md's table is computed from: a
shard's seconds, a helper's start (replaying the job's training from its checkpoints), and the
merge. Uses its own PostgreSQL database (dropped at the end) and Redis db BENCH_REDIS_DB (12).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
import redis
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harden_client import HardenClient  # noqa: E402

from tests.integration.conftest import PG_ADMIN, Cluster, base_env  # noqa: E402
from tests.integration.test_redis_postgres import create_key  # noqa: E402
from tests.worker.real_pipeline import without_seconds  # noqa: E402

REDIS_DB = int(os.environ.get("BENCH_REDIS_DB", "12"))
SHARDS = 20
JOB = {
    "dataset": "builtin:mnist",
    "teacher_epochs": 1,
    "student_epochs": 2,
    "batch_size": 128,
    "corruptions": {"enabled": False},
    "evaluation": {
        "attacks": ["fgsm_ce", "pgd_linf_margin", "pgd_l2_margin", "square"],
        "epsilons_linf": [0.05, 0.1, 0.2, 0.3],
        "epsilons_l2": [1.0, 2.0, 3.0],
        "samples": 1000,
        "samples_slow": 200,
        "pgd_steps": 100,
        "shard_samples": 50,
    },
}


def mlp(path: Path) -> Path:
    """An MNIST MLP as TorchScript (untrained: the job's teacher trains it)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(784, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10)
    )
    torch.jit.save(torch.jit.script(model), str(path))
    return path


def run_once(workers: int, workdir: Path) -> dict:
    database = f"harden_scale_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{database}"')
    queue = f"harden-scale-{uuid.uuid4().hex[:8]}"
    folder = workdir / f"workers-{workers}-{uuid.uuid4().hex[:6]}"
    folder.mkdir(parents=True)
    cluster = Cluster(
        base_env(folder)
        | {
            "HARDEN_DATABASE_URL": f"postgresql+psycopg://postgres@127.0.0.1:5432/{database}",
            "HARDEN_BROKER_URL": f"redis://127.0.0.1:6379/{REDIS_DB}",
            "HARDEN_QUEUE": queue,
            "HARDEN_AUTH": "keys",
            "HARDEN_AUDIT_HELPERS": str(workers - 1),
        },
        folder,
    )
    try:
        cluster.start_api()
        names = [f"w{i + 1}" for i in range(workers)]
        for name in names:
            cluster.start_worker(name)
        client = HardenClient(cluster.url, create_key(cluster, "bench"))
        began = time.perf_counter()
        job = client.submit(mlp(folder / "model.pt"), config=JOB)
        done = client.wait(job["id"], timeout_s=3600, poll_s=1.0)
        wall = time.perf_counter() - began
        if done["state"] != "succeeded":
            raise SystemExit(f"job {done['state']}: {done.get('error')}")
        paths = client.download(job["id"], folder / "out", ("report.json",))
        report = json.loads(Path(paths["report.json"]).read_text())
        time.sleep(2)  # the helper tasks' last log lines
        logs = "".join(cluster.log(name) for name in names)
        helpers = [
            (float(seconds), int(count))
            for seconds, count in re.findall(
                r"harden\.audit_shard\[[^\]]+\] succeeded in ([0-9.]+)s: ([0-9]+)", logs
            )
        ]
    finally:
        cluster.stop()
        client_redis = redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB)
        for key in client_redis.scan_iter(match=f"*{queue}*"):
            client_redis.delete(key)
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    return {
        "workers": workers,
        "wall_s": wall,
        "evaluate_s": report["timings_s"]["evaluate"],
        "timings": report["timings_s"],
        "verdict": report["verdict"]["label"],
        "evaluation": without_seconds(report["evaluation"]),
        "helpers": helpers,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="harden-scale-"))
    runs: list[dict] = []
    for _ in range(args.repeats):
        for workers in (1, 2):
            runs.append(run_once(workers, workdir))
            print(json.dumps({k: v for k, v in runs[-1].items() if k != "evaluation"}))
    one = [r for r in runs if r["workers"] == 1]
    two = [r for r in runs if r["workers"] == 2]
    identical = all(r["evaluation"] == one[0]["evaluation"] for r in runs)
    shard_s = min(r["evaluate_s"] for r in one) / SHARDS
    helper_rows = [h for r in two for h in r["helpers"] if h[1] > 0]
    # A helper's fixed cost: its seconds less the shards it computed at the one-worker pace.
    start_s = [seconds - count * shard_s for seconds, count in helper_rows]
    load = os.getloadavg()
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    lines = [
        "# One audit over several workers (bench/scale_out.py)",
        "",
        f"Commit {commit}; this 2-core CPU machine, load average {load[0]:.1f} at the end; "
        "workers: Celery solo pool, one thread each (OMP_NUM_THREADS=1), jobs in their confined "
        "child; Redis broker, PostgreSQL job store, local artifact folder. Job: builtin:mnist, an "
        f"MLP (784-128-10), defensive distillation (1 + 2 epochs), audit of "
        f"{JOB['evaluation']['samples']} samples in {SHARDS} shards of "
        f"{JOB['evaluation']['shard_samples']}: FGSM, PGD-L-inf and PGD-L2 (margin, "
        f"{JOB['evaluation']['pgd_steps']} steps) and Square (on the first "
        f"{JOB['evaluation']['samples_slow']}), both models.",
        "",
        "| workers | audit s (timings_s.evaluate) | job wall s | verdict "
        "| helper tasks: s, shards |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in runs:
        helpers = ", ".join(f"{s:.1f} s: {n}" for s, n in r["helpers"]) or "-"
        lines.append(
            f"| {r['workers']} | {r['evaluate_s']:.1f} | {r['wall_s']:.1f} | {r['verdict']} | "
            f"{helpers} |"
        )
    speedup = min(r["evaluate_s"] for r in one) / min(r["evaluate_s"] for r in two)
    lines += [
        "",
        f"- Speed-up of the audit on 2 workers: **{speedup:.2f}x** (best of each).",
        f"- Audits identical (every number but seconds, the verdict included): **{identical}**.",
        f"- A shard's cost on one worker: {shard_s:.2f} s (the one-worker audit / {SHARDS}).",
        "- A helper's start (its task's seconds less its shards at that pace: fetching the inputs "
        "and checkpoints, the confined child, replaying the training): "
        + (", ".join(f"{s:.1f} s" for s in start_s) or "no helper computed a shard")
        + ".",
    ]
    out = ROOT / "bench" / "results" / "scale_out.md"
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
