"""One job's audit spread over worker processes: the worker's side of core/audit/shards.py.

The audit is computed in shards of samples (core.audit.shards), always, so a spread audit is the
one-worker audit by construction. The job's own attempt claims shards from the first up and,
once it has claimed every shard it can, waits for those others hold, then merges them in order.
When its audit starts it sends up to ``HARDEN_AUDIT_HELPERS`` ``harden.audit_shard`` tasks:
any idle worker that takes one replays the job's training from its checkpoints (the job has
stored them by then: core/checkpoint.py), claims shards from the last down, stores each result in
the artifact store (``audit/audit-<k>.safetensors``) and marks it done. Claims are rows of
``audit_shards`` (app/infra/shard_store.py), kept alive by the claimant's heartbeat; a claim whose
claimant died is taken over, so a lost shard is computed again and no other is. A helper that
arrives after the audit ended finds nothing to claim and returns.

Celery is the engine: shards are claimed rather than assigned so that a job never waits on a
task no worker has taken (with one worker, the job computes every shard itself), and each
helper's work is one task, retried by Celery's own redelivery when its worker is lost.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from app.infra.artifacts import ArtifactStore
from app.infra.db import utcnow
from app.infra.shard_store import DONE, ShardStore
from core.errors import AuditHandedOff

log = logging.getLogger(__name__)


def result_name(shard: int) -> str:
    return f"audit/audit-{shard}.safetensors"


def claimant_name(kind: str) -> str:
    """Who claims: this host and process, and a fresh token (a process may claim twice)."""
    return f"{socket.gethostname()[:60]}:{os.getpid()}:{kind}:{uuid.uuid4().hex[:8]}"


@dataclass
class ShardHost:
    """The worker's side of one process's shards (worker.contained.ShardHost): claims in the
    database, results through the artifact store.

    ``descending``: helpers claim from the last shard down, the job from the first up, so the
    two meet in the middle instead of racing for the same shard. ``helper``: a helper never
    waits for a shard (it hands the merge to the job): ``wait`` answers 'elsewhere'."""

    shards: ShardStore
    artifacts: ArtifactStore
    job_id: str
    claimant: str
    stale_after_s: float
    scratch: Path  # a folder of the worker's, out of the job process's reach
    descending: bool = False
    helper: bool = False
    on_first_claim: Callable[[int], None] | None = None
    claimed: int = 0
    _started: bool = False
    _reported: bool = False

    def beat(self) -> None:
        self.shards.beat(self.job_id, self.claimant)

    def claim(self, count: int) -> int | None:
        if not self._started:
            self._started = True
            if self.on_first_claim is not None:
                self.on_first_claim(count)
        states = self.shards.states(self.job_id)
        if self.on_first_claim is not None and not self.claimed:
            done = sum(1 for state in states.values() if state.state == DONE)
            if done and not self._reported:
                log.info(
                    "job %s: %d of %d audit shards already done (an earlier attempt's or a "
                    "helper's), reused", self.job_id, done, count,
                )  # fmt: skip
        self._reported = True
        order = range(count - 1, -1, -1) if self.descending else range(count)
        stale_before = utcnow() - timedelta(seconds=self.stale_after_s)
        for shard in order:
            known = states.get(shard)
            if known is not None and (known.state == DONE or known.heartbeat_at >= stale_before):
                continue
            if self.shards.claim(self.job_id, shard, self.claimant, stale_before=stale_before):
                self.claimed += 1
                return shard
        return None

    def wait(self, shard: int, inbox: Path) -> str:
        if self.helper:
            return "elsewhere"
        self.beat()
        known = self.shards.states(self.job_id).get(shard)
        if known is not None and known.state == DONE:
            name = result_name(shard)
            try:
                self.artifacts.fetch(self.job_id, name, inbox / Path(name).name)
            except Exception:  # computed here instead: the same result, by construction
                log.warning(
                    "shard %d of job %s not fetched; computed here",
                    shard,
                    self.job_id,
                    exc_info=True,
                )
                return "compute"
            return "ready"
        stale_before = utcnow() - timedelta(seconds=self.stale_after_s)
        if self.shards.claim(self.job_id, shard, self.claimant, stale_before=stale_before):
            log.info("shard %d of job %s: its claimant died; computed here", shard, self.job_id)
            return "compute"
        return "pending"

    def done(self, shard: int, path: Path) -> None:
        # Copied out of the job process's reach first: it may rewrite its folder at any time.
        outgoing = self.scratch / f"{uuid.uuid4().hex}-{path.name}"
        try:
            outgoing.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, outgoing)
            sha = self.artifacts.put(self.job_id, result_name(shard), outgoing, move=True)
        except Exception:  # not stored: its claim goes stale and the job computes it again
            log.warning("shard %d of job %s not stored", shard, self.job_id, exc_info=True)
            return
        finally:
            outgoing.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                outgoing.parent.rmdir()
        if not self.shards.finish(self.job_id, shard, self.claimant, sha):
            log.warning("shard %d of job %s finished after its claim was taken", shard, self.job_id)


def forget_shards(shards: ShardStore, artifacts: ArtifactStore, job_id: str) -> None:
    """The job ended: its claims and shard results go."""
    try:
        for name in artifacts.job_names(job_id):
            if name.startswith("audit/"):
                artifacts.delete(job_id, name)
    except Exception:  # the retention sweep deletes what is left with the job's files
        log.warning("could not delete the audit shards of job %s", job_id, exc_info=True)
    shards.forget(job_id)


class InProcessShards:
    """core.audit.shards.ShardBroker over a :class:`ShardHost` in this process (a worker that
    runs jobs without containment: HARDEN_CONTAIN_MODELS=false)."""

    def __init__(self, host: ShardHost, work: Path, poll_s: float = 0.5) -> None:
        self.host, self.inbox, self.poll_s = host, work / "shards-in", poll_s
        self.count = 0

    def start(self, count: int) -> None:
        self.count = count

    def claim(self) -> int | None:
        return self.host.claim(self.count)

    def wait(self, shard: int) -> Path | None:
        while True:
            state = self.host.wait(shard, self.inbox)
            if state == "ready":
                return self.inbox / Path(result_name(shard)).name
            if state == "compute":
                return None
            if state == "elsewhere":
                raise AuditHandedOff("the shards this process could claim are done")
            time.sleep(self.poll_s)

    def done(self, shard: int, path: Path) -> None:
        self.host.done(shard, path)
