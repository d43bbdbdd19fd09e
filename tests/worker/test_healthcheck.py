"""The worker healthcheck's verdict on a pool (worker/healthcheck.py). Real prefork workers,
one that keeps its pool and one that cannot, are in tests/integration/test_worker_pool.py."""

from __future__ import annotations

from types import SimpleNamespace

from worker.healthcheck import check, pool_health

NODE = "celery@host"


class Process:
    def __init__(self, alive: bool = True) -> None:
        self.alive = alive

    def _is_alive(self) -> bool:
        return self.alive


def prefork(processes: list[Process], waiting: set[Process], limit: int) -> SimpleNamespace:
    return SimpleNamespace(
        limit=limit, _pool=SimpleNamespace(_pool=processes, _waiting_to_start=waiting)
    )


def test_a_full_pool_is_healthy():
    pool = prefork([Process(), Process()], set(), limit=2)
    health = pool_health(pool)
    assert health == {"concurrency": 2, "processes": 2, "starting": 0, "ready": 2}
    assert check([{NODE: health}], NODE) == (True, f"{NODE} has 2 of 2 pool processes up")


def test_a_process_that_never_came_up_or_died_makes_it_unhealthy():
    starting, dead = Process(), Process(alive=False)
    health = pool_health(prefork([Process(), starting, dead], {starting}, limit=3))
    assert health == {"concurrency": 3, "processes": 2, "starting": 1, "ready": 1}
    healthy, reason = check([{NODE: health}], NODE)
    assert not healthy and "1 of 3 pool processes up" in reason


def test_a_solo_pool_is_its_own_process():
    assert pool_health(SimpleNamespace(limit=1, _pool=None))["ready"] == 1


def test_no_answer_or_another_nodes_is_unhealthy():
    assert check([], NODE) == (False, f"{NODE} did not answer")
    other = {"celery@other": {"concurrency": 1, "ready": 1}}
    assert check([other], NODE)[0] is False
    assert check([{NODE: {"error": "unknown command"}}], NODE)[0] is False
