"""Load check of the production shape on this machine: the API (uvicorn), Celery workers on
Redis, a PostgreSQL job store, all real processes.

    .venv/bin/python bench/load_check.py [--jobs 50] [--polls 500] [--workers 2]

1. ``--jobs`` submissions at once (POST /harden, a small digits job each);
2. ``--polls`` status reads at once (GET /jobs/{id}) while the workers run the jobs;
3. waits until every job ended, then checks each was processed exactly once: succeeded, one
   attempt, and one ``harden.run_job`` execution in all the workers' logs together.

Prints p50/p99 latencies and the counts, and writes them to bench/results/load_check.md. Uses
its own PostgreSQL database (dropped at the end) and Redis db ``BENCH_REDIS_DB`` (default 12).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psycopg
import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.infra.store import JobStore  # noqa: E402
from tests.integration.conftest import PG_ADMIN, Cluster, base_env, tiny_torchscript  # noqa: E402
from tests.integration.test_redis_postgres import FAST, create_key  # noqa: E402

REDIS_DB = int(os.environ.get("BENCH_REDIS_DB", "12"))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def summary(name: str, seconds: list[float]) -> str:
    ms = [s * 1000 for s in seconds]
    return (
        f"| {name} | {len(ms)} | {percentile(ms, 50):.0f} | {percentile(ms, 99):.0f} | "
        f"{max(ms):.0f} | {statistics.fmean(ms):.0f} |"
    )


def submit_all(url: str, key: str, model: bytes, jobs: int) -> tuple[list[float], list[dict]]:
    """``jobs`` POST /harden at once (one thread each); latencies and answers."""

    def one(index: int) -> tuple[float, httpx.Response]:
        config = FAST | {"seed": index}  # distinct jobs
        started = time.perf_counter()
        response = httpx.post(
            f"{url}/harden",
            headers={"Authorization": f"Bearer {key}"},
            files={"model": ("model.pt", model)},
            data={"config": json.dumps(config)},
            timeout=120,
        )
        return time.perf_counter() - started, response

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        results = list(pool.map(one, range(jobs)))
    bad = [r.status_code for _, r in results if r.status_code != 202]
    if bad:
        raise SystemExit(f"submissions refused: {bad}")
    return [t for t, _ in results], [r.json() for _, r in results]


async def poll_all(url: str, key: str, ids: list[str], polls: int) -> tuple[list[float], dict]:
    """``polls`` GET /jobs/{id} at once over the ids; latencies and status counts."""
    limits = httpx.Limits(max_connections=polls, max_keepalive_connections=polls)
    statuses: dict[int, int] = {}
    async with httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=120, limits=limits
    ) as client:

        async def one(index: int) -> float:
            started = time.perf_counter()
            response = await client.get(f"/jobs/{ids[index % len(ids)]}")
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            return time.perf_counter() - started

        latencies = await asyncio.gather(*(one(i) for i in range(polls)))
    return list(latencies), statuses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=50)
    parser.add_argument("--polls", type=int, default=500)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    database = f"harden_load_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{database}"')
    workdir = Path(tempfile.mkdtemp(prefix="harden-load-"))
    queue = f"harden-load-{uuid.uuid4().hex[:8]}"
    cluster = Cluster(
        base_env(workdir)
        | {
            "HARDEN_DATABASE_URL": f"postgresql+psycopg://postgres@127.0.0.1:5432/{database}",
            "HARDEN_BROKER_URL": f"redis://127.0.0.1:6379/{REDIS_DB}",
            "HARDEN_QUEUE": queue,
            "HARDEN_AUTH": "keys",
        },
        workdir,
    )
    try:
        cluster.start_api()
        workers = [f"w{i + 1}" for i in range(args.workers)]
        for name in workers:
            cluster.start_worker(name)
        key = create_key(cluster, "load")
        model = tiny_torchscript(workdir / "model.pt").read_bytes()

        began = time.perf_counter()
        submit_s, jobs = submit_all(cluster.url, key, model, args.jobs)
        ids = [job["id"] for job in jobs]
        poll_s, poll_statuses = asyncio.run(poll_all(cluster.url, key, ids, args.polls))

        store = JobStore.from_url(cluster.env["HARDEN_DATABASE_URL"])
        deadline = time.monotonic() + 60 * 30
        while time.monotonic() < deadline:
            states = store.count_by_state()
            if states.get("queued", 0) + states.get("running", 0) == 0:
                break
            time.sleep(1)
        processed_s = time.perf_counter() - began
        # The same polls with the workers idle: what the API itself costs, without two
        # training jobs taking this machine's two cores.
        idle_poll_s, idle_statuses = asyncio.run(poll_all(cluster.url, key, ids, args.polls))
        rows = [store.get(job_id) for job_id in ids]
        store.engine.dispose()

        logs = "".join(cluster.log(name) for name in workers)
        executions = {
            job_id: len(re.findall(rf"harden\.run_job\[{job_id}\] succeeded", logs))
            for job_id in ids
        }
        succeeded = sum(1 for row in rows if row is not None and row.state == "succeeded")
        once = sum(
            1 for row in rows if row is not None and row.attempts == 1 and executions[row.id] == 1
        )
        per_worker = {name: cluster.log(name).count("harden.run_job[") // 2 for name in workers}
    finally:
        cluster.stop()
        client = redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB)
        for redis_key in client.scan_iter(match=f"*{queue}*"):
            client.delete(redis_key)
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')

    lines = [
        "# Load check (bench/load_check.py)",
        "",
        f"{args.jobs} concurrent submissions, {args.polls} concurrent status polls, "
        f"{args.workers} Celery workers (solo pool), one uvicorn process, Redis broker, "
        "PostgreSQL job store; all on this 2-core machine. Job: builtin:digits, 1 teacher "
        "epoch, 2 student epochs, no evaluation.",
        "",
        "| request | n | p50 ms | p99 ms | max ms | mean ms |",
        "| --- | --- | --- | --- | --- | --- |",
        summary("POST /harden", submit_s),
        summary("GET /jobs/{id} (workers busy)", poll_s),
        summary("GET /jobs/{id} (workers idle)", idle_poll_s),
        "",
        f"- poll answers: {poll_statuses} (busy), {idle_statuses} (idle)",
        f"- jobs succeeded: {succeeded}/{args.jobs}; processed exactly once (one attempt, one "
        f"run_job execution in the worker logs): {once}/{args.jobs}",
        f"- jobs per worker: {per_worker}",
        f"- all {args.jobs} jobs submitted and processed in {processed_s:.0f} s",
    ]
    report = "\n".join(lines) + "\n"
    print(report)
    (ROOT / "bench" / "results" / "load_check.md").write_text(report)
    if succeeded != args.jobs or once != args.jobs:
        raise SystemExit("not every job was processed exactly once")


if __name__ == "__main__":
    main()
