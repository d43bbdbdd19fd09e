"""The worker's healthcheck: healthy when it answers and its pool has all its processes up.

A worker whose pool processes keep dying before they are up (a child that cannot start in
HARDEN_WORKER_PROCESS_START_TIMEOUT_S is killed and started again, forever) still answers
``celery inspect ping``, so a ping-only healthcheck passes while the worker reserves messages it
cannot run. The remote-control command :func:`harden_pool`, answered by the worker's main process,
counts the pool processes that are up; ``python -m worker.healthcheck`` (the compose file's
healthcheck) exits 1 when there are fewer than the worker's concurrency, or no answer at all.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
from typing import Any

from celery.worker.control import inspect_command

POOL_COMMAND = "harden_pool"


def pool_health(pool: Any) -> dict[str, int]:
    """{concurrency, processes, starting, ready} of a Celery TaskPool: ``ready`` counts the
    processes that said they are up. A pool without processes (solo) is its own one process."""
    processes = getattr(getattr(pool, "_pool", None), "_pool", None)
    if processes is None:
        return {"concurrency": 1, "processes": 1, "starting": 0, "ready": 1}
    # Celery's AsynPool keeps the processes it is still waiting on for their UP message here;
    # one that died stays listed until the pool has joined it.
    waiting: set[Any] = getattr(pool._pool, "_waiting_to_start", set())
    alive = [process for process in processes if process._is_alive()]
    starting = sum(1 for process in alive if process in waiting)
    return {
        "concurrency": int(getattr(pool, "limit", None) or len(processes)),
        "processes": len(alive),
        "starting": starting,
        "ready": len(alive) - starting,
    }


@inspect_command(name=POOL_COMMAND)  # type: ignore[untyped-decorator]
def harden_pool(state: Any, **_: Any) -> dict[str, int]:
    """Remote control: this worker's :func:`pool_health`."""
    return pool_health(state.consumer.pool)


def check(replies: list[dict[str, Any]], node: str) -> tuple[bool, str]:
    """Whether ``node``'s answer to :data:`POOL_COMMAND` says it is healthy, and why."""
    answers = [reply[node] for reply in replies if node in reply]
    if not answers:
        return False, f"{node} did not answer"
    health = answers[0]
    if not isinstance(health, dict) or "ready" not in health:
        return False, f"{node} answered {health!r}"
    if health["ready"] < health["concurrency"]:
        return False, f"{node} has {health['ready']} of {health['concurrency']} pool processes up"
    return True, f"{node} has {health['ready']} of {health['concurrency']} pool processes up"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m worker.healthcheck", description=__doc__)
    parser.add_argument(
        "--node", default=f"celery@{socket.gethostname()}", help="the worker's node name"
    )
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds to wait")
    args = parser.parse_args(argv)
    from worker.celery_app import celery_app

    replies = celery_app.control.broadcast(
        POOL_COMMAND, destination=[args.node], reply=True, timeout=args.timeout
    )
    healthy, reason = check(replies or [], args.node)
    print(json.dumps({"healthy": healthy, "reason": reason}))
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
