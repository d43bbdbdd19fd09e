"""Running a job's pipeline in a child process the worker supervises.

An uploaded model is a program. Everything that executes it (loading, training, the audit, the
ONNX export) runs in a child process, so the worker can:

- **kill it at once**: on cancel or delete, past the job's time limit, when the job was handed to
  another worker (heartbeat lost), and when it reports no progress for
  ``HARDEN_MODEL_STALL_TIMEOUT_S`` (a forward that never returns) -> ``model_timeout``;
- **bound its memory**: resident memory polled against ``HARDEN_MODEL_MEMORY_LIMIT_MB`` (and, on a
  CPU worker, an address-space limit of the same size above what the child has mapped at start,
  so a burst between two polls fails inside the child) -> ``model_memory``;
- **confine it** (:mod:`worker.confine`): its own job folder only, no network, no secrets.

The children come from a fork server that imported torch and the core once (multiprocessing's
``forkserver``): forking a process that has run torch's OpenMP thread pool hangs the child (the
worker, and a test process, may have), and starting a fresh interpreter per job costs the torch
import (about 4 s on a 2-core machine) every time. Messages from the child are JSON over a pipe,
never pickles: the parent trusts nothing the model's process says beyond its fields.
"""

from __future__ import annotations

import contextlib
import json
import logging
import multiprocessing
import os
import re
import resource
import signal
import stat
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, NoReturn, Protocol

from core.errors import AuditHandedOff, HardenError, JobCancelledError
from core.names import CHECKPOINT_NAME, REPORT_JSON, CancelFn, ProgressFn
from core.report.schema import Report
from core.stages import StageTime

log = logging.getLogger(__name__)

_MAX_MESSAGE_BYTES = 1 << 20
_POLL_S = 0.25
_PROGRESS_EVERY_S = 0.2
_PR_SET_PDEATHSIG = 1


class ModelTimeoutError(HardenError):
    code = "model_timeout"


class ModelMemoryError(HardenError):
    code = "model_memory"


class ModelCrashedError(HardenError):
    code = "model_crashed"


@dataclass(frozen=True)
class Limits:
    stall_timeout_s: float
    memory_limit_bytes: int
    # The largest checkpoint stored: weights, optimizer state (Adam: twice the weights) and
    # a robust training's best weights are about four times the model.
    checkpoint_bytes: int = 4 << 30


@dataclass
class ContainedResult:
    """What :func:`core.pipeline.run` returns, rebuilt from the child's files."""

    report: Report
    artifacts: dict[str, Path]
    stages: list[StageTime] = field(default_factory=list)


@dataclass(frozen=True)
class _Request:
    pipeline: Callable[..., Any]
    args: tuple[Any, ...]
    options: dict[str, Any]
    work: Path
    readable: tuple[Path, ...]
    memory_limit_bytes: int
    cpu_only: bool
    checkpoints: bool = False  # the child announces each checkpoint it saved
    shards: Any = None  # the child's end of the shard channel (a Connection), when sharing


_context: Any = None
_PRELOAD = [
    "core.pipeline",
    "core.datasets.image_folder",
    "core.datasets.zip_images",
    "worker.contained",
    "worker.confine",
    "sklearn.datasets",
    "sklearn.model_selection",
    "mlxtend.data",
    "onnx2torch",
    "safetensors.torch",
    "PIL.Image",
]


def _forkserver() -> Any:
    global _context
    if _context is None:
        _context = multiprocessing.get_context("forkserver")
        # The server imports these once; each job's child is a fork of it. The core imports
        # some libraries only when a job needs them; importing them in every child cost about
        # 1 s a job (sklearn and scipy for builtin:digits, measured on a 2-core CPU).
        _context.set_forkserver_preload(_PRELOAD)
    return _context


def warm_up() -> None:
    """Start the fork server now (it imports torch), not inside the first job."""
    from multiprocessing import forkserver

    _forkserver()
    forkserver.ensure_running()


def run_contained(
    pipeline: Callable[..., Any],
    args: tuple[Any, ...],
    options: dict[str, Any],
    *,
    work: Path,
    readable: list[Path],
    on_progress: ProgressFn,
    should_cancel: CancelFn,
    limits: Limits,
    on_checkpoint: Callable[[Path], None] | None = None,
    shards: ShardHost | None = None,
) -> ContainedResult | None:
    """``pipeline(*args, on_progress=..., should_cancel=..., **options)`` in a confined child.

    ``on_checkpoint(path)``: each checkpoint the child saved (options' ``checkpoint_dir``, a
    folder of ``work``), as a plain file of that folder with a checkpoint's name and at most
    ``checkpoint_bytes``; the child's word for anything else ends the job.

    ``shards``: the worker's side of the audit's shards (worker/shards.py): the child's
    pipeline gets ``audit_shards``, a broker whose claims, waits and results go through the
    worker, over a second pipe (JSON both ways). Returns None when the pipeline handed its
    audit off (a helper computing shards of another job's audit: no report).

    Raises what the pipeline raised (as a HardenError), JobCancelledError when
    ``should_cancel()`` turned true (the child killed), ModelTimeoutError, ModelMemoryError or
    ModelCrashedError.
    """
    context = _forkserver()
    receive, send = context.Pipe(duplex=False)
    replies, reply_to = context.Pipe(duplex=False) if shards is not None else (None, None)
    device = options.get("device")
    request = _Request(
        pipeline,
        args,
        options,
        work,
        tuple(readable),
        limits.memory_limit_bytes,
        cpu_only=device is None or str(device).startswith("cpu"),
        checkpoints=on_checkpoint is not None and options.get("checkpoint_dir") is not None,
        shards=replies,
    )
    checkpoints = _CheckpointRelay(options.get("checkpoint_dir"), on_checkpoint, limits)
    child = context.Process(target=_child_main, args=(send, request), daemon=True)
    _start(child)
    send.close()
    relay = _ShardRelay(shards, reply_to, work) if shards is not None and reply_to else None
    if replies is not None:
        replies.close()
    try:
        outcome = _supervise(child, receive, on_progress, should_cancel, limits, checkpoints, relay)
        if outcome.get("kind") == "handed_off":
            return None
        return _result(outcome, limits, out_dir=Path(args[3]))
    finally:
        if child.is_alive():
            _kill(child)
        child.join(5)
        receive.close()
        if reply_to is not None:
            reply_to.close()


def _start(child: Any) -> None:
    # A Celery prefork pool process is a daemonic billiard process, and multiprocessing refuses
    # children to daemonic processes lest they outlive it. This child cannot: it dies with the
    # fork server (PR_SET_PDEATHSIG), which ends when its starter does, and the supervisor
    # kills it on every way out of run_contained.
    config = multiprocessing.current_process()._config  # type: ignore[attr-defined]
    daemonic = config.pop("daemon", None)
    try:
        child.start()
    finally:
        if daemonic is not None:
            config["daemon"] = daemonic


def _kill(child: Any) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(child.pid, signal.SIGKILL)
    child.join(5)


@dataclass(frozen=True)
class _CheckpointRelay:
    """Hands the checkpoints the child announces to ``on_saved``, after checking each is what
    the worker may store: a checkpoint's name, a plain file of the checkpoint folder (not a
    link to another file the worker could read), within the size bound."""

    folder: Path | None
    on_saved: Callable[[Path], None] | None
    limits: Limits

    def __call__(self, child: Any, message: dict[str, Any]) -> None:
        name = message.get("name")
        if self.folder is None or self.on_saved is None:
            return
        path = Path(self.folder) / str(name)
        if not isinstance(name, str) or not CHECKPOINT_NAME.match(name) or not _plain_file(path):
            _kill(child)
            raise ModelCrashedError(
                f"the job's process announced a checkpoint {str(name)[:80]!r} that is not one",
                hint="retry the job; if it fails again, report the job id to the operators",
            )
        size = path.stat().st_size
        if size > self.limits.checkpoint_bytes:
            log.warning("checkpoint %s of %d bytes is past the bound; not stored", name, size)
            return
        self.on_saved(path)


class ShardHost(Protocol):
    """The worker's side of an audit's shards (worker/shards.py implements it)."""

    def claim(self, count: int) -> int | None:
        """The next of ``count`` shards the child should compute, or None."""
        ...

    def wait(self, shard: int, inbox: Path) -> str:
        """'ready' (its result is now ``inbox/audit-<shard>.safetensors``), 'pending',
        'compute' (its claimant died: the child computes it) or 'elsewhere' (a helper: the
        merge is another process's)."""
        ...

    def done(self, shard: int, path: Path) -> None:
        """The child finished ``shard``: its result file is ``path`` (a checked plain file)."""
        ...


SHARD_RESULT = re.compile(r"^audit-([0-9]{1,5})\.safetensors$")
SHARD_INBOX = "shards-in"  # where the worker puts shards finished elsewhere
SHARD_OUTBOX = "shards"  # where the child writes the shards it computed


@dataclass(frozen=True)
class _ShardRelay:
    """Answers the child's shard requests through ``host``; what the child says is checked as
    everything it says is: a shard number, a result file of its shard folder."""

    host: ShardHost
    reply_to: Connection
    work: Path

    def __call__(self, child: Any, message: dict[str, Any]) -> None:
        op = message.get("op")
        try:
            if op == "claim":
                count = int(message["count"])
                if not 0 < count <= 100_000:
                    raise ValueError(count)
                reply: dict[str, Any] = {"shard": self.host.claim(count)}
            elif op == "wait":
                inbox = self.work / SHARD_INBOX
                reply = {"state": self.host.wait(int(message["shard"]), inbox)}
            elif op == "done":
                shard, name = int(message["shard"]), str(message["name"])
                path = self.work / SHARD_OUTBOX / name
                found = SHARD_RESULT.match(name)
                if found is None or int(found.group(1)) != shard or not _plain_file(path):
                    raise ValueError(name)
                self.host.done(shard, path)
                reply = {}
            else:
                raise ValueError(op)
        except (KeyError, TypeError, ValueError):
            _kill(child)
            raise _unreadable() from None
        self.reply_to.send_bytes(json.dumps(reply).encode())


class ChildShards:
    """The child's broker (core.audit.shards.ShardBroker) over the shard channel."""

    def __init__(self, send: Connection, replies: Connection, work: Path) -> None:
        self._send, self._replies, self._work = send, replies, work
        self.count = 0
        self.poll_s = 0.5

    def _ask(self, message: dict[str, Any]) -> dict[str, Any]:
        _send(self._send, {"kind": "shard", **message})
        answer = json.loads(self._replies.recv_bytes(_MAX_MESSAGE_BYTES))
        assert isinstance(answer, dict)
        return answer

    def start(self, count: int) -> None:
        self.count = count

    def claim(self) -> int | None:
        shard = self._ask({"op": "claim", "count": self.count})["shard"]
        return None if shard is None else int(shard)

    def wait(self, shard: int) -> Path | None:
        while True:
            state = self._ask({"op": "wait", "shard": shard})["state"]
            if state == "ready":
                return self._work / SHARD_INBOX / f"audit-{shard}.safetensors"
            if state == "compute":
                return None
            if state == "elsewhere":  # a helper: the job's own process merges
                raise AuditHandedOff("the shards this process could claim are done")
            time.sleep(self.poll_s)  # each ask is a sign of life: no stall while waiting

    def done(self, shard: int, path: Path) -> None:
        self._ask({"op": "done", "shard": shard, "name": Path(path).name})


def _supervise(
    child: Any,
    receive: Connection,
    on_progress: ProgressFn,
    should_cancel: CancelFn,
    limits: Limits,
    checkpoints: _CheckpointRelay | None = None,
    shards: _ShardRelay | None = None,
) -> dict[str, Any]:
    """The child's last message (its result or its error), after relaying its progress."""
    last_sign = time.monotonic()
    outcome: dict[str, Any] | None = None
    while outcome is None:
        if receive.poll(_POLL_S):
            try:
                message = json.loads(receive.recv_bytes(_MAX_MESSAGE_BYTES))
            except (EOFError, OSError):
                break  # the child is gone; its exit code says how
            except (ValueError, UnicodeDecodeError):
                _kill(child)
                raise _unreadable() from None
            last_sign = time.monotonic()
            if not isinstance(message, dict):
                _kill(child)
                raise _unreadable()
            if message.get("kind") == "progress":
                try:
                    stage, done = str(message["stage"]), int(message["done"])
                    total = int(message["total"])
                except (KeyError, TypeError, ValueError):
                    _kill(child)
                    raise _unreadable() from None
                on_progress(stage, done, total)
            elif message.get("kind") == "checkpoint":
                if checkpoints is not None:
                    checkpoints(child, message)
            elif message.get("kind") == "shard":
                if shards is None:
                    _kill(child)
                    raise _unreadable()
                shards(child, message)
            else:
                outcome = message
                break
        elif not child.is_alive():
            break
        if should_cancel():
            _kill(child)
            raise JobCancelledError("the job was stopped", hint="")
        if time.monotonic() - last_sign > limits.stall_timeout_s:
            _kill(child)
            raise ModelTimeoutError(
                f"the model made no progress for {limits.stall_timeout_s:g} s and was stopped "
                "(a forward pass that never returns, or one far too slow for this worker)",
                hint="check that the model's forward ends for every input (no unbounded "
                "loops); a model this slow needs a smaller batch_size or a faster worker "
                "(HARDEN_MODEL_STALL_TIMEOUT_S)",
                limit_s=limits.stall_timeout_s,
            )
        rss = _resident_bytes(child.pid)
        if rss is not None and rss > limits.memory_limit_bytes:
            _kill(child)
            raise _memory_error(limits.memory_limit_bytes, rss)
    child.join(10)
    if outcome is None:
        _died(child, limits)
    assert outcome is not None
    return outcome


_MOST_STAGES = 256  # a job has a dozen; more is no job's


def _stages(outcome: dict[str, Any]) -> list[StageTime]:
    """The stage times the child sent (for the job's trace spans), as far as they are well
    formed: the child runs the upload's code, so what it says is checked, and a malformed entry
    is dropped, never an error of the job."""
    stages: list[StageTime] = []
    for entry in (outcome.get("stages") or [])[:_MOST_STAGES]:
        if (
            isinstance(entry, list)
            and len(entry) == 3
            and isinstance(entry[0], str)
            and 0 < len(entry[0]) <= 64
            and all(type(t) is int and 0 < t < 2**63 for t in entry[1:])
            and entry[1] <= entry[2]
        ):
            stages.append((entry[0], entry[1], entry[2]))
    return stages


def _unreadable() -> ModelCrashedError:
    return ModelCrashedError(
        "the job's process sent a message the worker cannot read",
        hint="retry the job; if it fails again, report the job id to the operators",
    )


def _result(outcome: dict[str, Any], limits: Limits, *, out_dir: Path) -> ContainedResult:
    if outcome.get("kind") == "result":
        # Only the names come from the child: each file is taken from the job's own output
        # folder, and only as a plain file. A symlink or hard link there could name any file
        # the worker may read (the child cannot, but the worker then stores what it reads).
        artifacts = {}
        for name in outcome.get("artifacts") or {}:
            path = out_dir / str(name)
            if Path(str(name)).name != name or not _plain_file(path):
                raise ModelCrashedError(
                    f"the job's process left its output {str(name)[:80]!r} as something other "
                    "than a plain file of its folder",
                    hint="retry the job; if it fails again, report the job id to the operators",
                )
            artifacts[str(name)] = path
        report_path = artifacts.get(REPORT_JSON)
        if report_path is None:
            raise ModelCrashedError("the job's process wrote no report", hint="retry the job")
        report = Report.model_validate_json(report_path.read_bytes())
        return ContainedResult(report=report, artifacts=artifacts, stages=_stages(outcome))
    code = str(outcome.get("code", "internal"))
    message, hint = str(outcome.get("message", "")), str(outcome.get("hint", ""))
    if code == ModelMemoryError.code:
        raise _memory_error(limits.memory_limit_bytes, None)
    error = HardenError(message, hint=hint, **dict(outcome.get("fields") or {}))
    error.code = code
    raise error


def _plain_file(path: Path) -> bool:
    try:
        status = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISREG(status.st_mode) and status.st_nlink == 1


def _died(child: Any, limits: Limits) -> NoReturn:
    exitcode = child.exitcode
    if exitcode == -signal.SIGKILL:
        # Not killed by the supervisor (it raises first): the kernel's OOM killer, mostly.
        raise _memory_error(limits.memory_limit_bytes, None)
    raise ModelCrashedError(
        f"the job's process died without a result (exit code {exitcode})",
        hint="the model may have crashed the runtime (a native error); retry the job, and "
        "report the job id to the operators if it fails again",
        exit_code=exitcode,
    )


def _memory_error(limit: int, used: int | None) -> ModelMemoryError:
    seen = f" (it reached {used / 2**20:.0f} MiB)" if used else ""
    return ModelMemoryError(
        f"the job needed more than its memory bound of {limit / 2**20:.0f} MiB{seen} and was "
        "stopped",
        hint="use a smaller batch_size, fewer evaluation samples or a smaller model, or ask "
        "the operator to raise HARDEN_MODEL_MEMORY_LIMIT_MB",
        limit_mb=round(limit / 2**20),
    )


def _resident_bytes(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/statm", "rb") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None  # not Linux, or the child just ended


# --- in the child --------------------------------------------------------------------------------
def _child_main(send: Connection, request: _Request) -> None:
    """The child: confine, run the pipeline, send the outcome; never returns into the caller."""
    code = 0
    try:
        _send(send, _run_in_child(send, request))
    except BaseException:  # the outcome must reach the parent whatever happened
        traceback.print_exc()
        code = 1
    finally:
        send.close()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _run_in_child(send: Connection, request: _Request) -> dict[str, Any]:
    from worker.confine import confine

    _die_with_parent()
    os.setpgrp()  # the worker's signals to its own group (Ctrl-C, a warm shutdown) skip it
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if request.cpu_only:
        _limit_address_space(request.memory_limit_bytes)
    confinement = confine(request.work, readable=list(request.readable))
    print(f"contained job process: {confinement.summary}", file=sys.stderr, flush=True)
    last: dict[str, Any] = {"time": 0.0, "stage": ""}

    def progress(stage: str, done: int, total: int) -> None:
        now = time.monotonic()
        if stage != last["stage"] or now - last["time"] >= _PROGRESS_EVERY_S or done >= total:
            last.update(time=now, stage=stage)
            _send(send, {"kind": "progress", "stage": stage, "done": done, "total": total})

    options = dict(request.options)
    if request.checkpoints:

        def on_checkpoint(path: Path) -> None:
            _send(send, {"kind": "checkpoint", "name": Path(path).name})

        options["on_checkpoint"] = on_checkpoint
    if request.shards is not None:
        options["audit_shards"] = ChildShards(send, request.shards, request.work)
        options["shard_dir"] = request.work / SHARD_OUTBOX
    try:
        result = request.pipeline(
            *request.args, on_progress=progress, should_cancel=lambda: False, **options
        )
    except AuditHandedOff:  # a helper's shards are done; the job's own process merges
        return {"kind": "handed_off"}
    except HardenError as exc:
        fields = {k: v for k, v in exc.fields.items() if _jsonable(v)}
        return {"kind": "error", "code": exc.code, "message": exc.message, "hint": exc.hint,
                "fields": fields}  # fmt: skip
    except MemoryError:
        return {"kind": "error", "code": ModelMemoryError.code}
    except RuntimeError as exc:
        if "can't allocate memory" in str(exc) or "out of memory" in str(exc).lower():
            return {"kind": "error", "code": ModelMemoryError.code}
        raise
    return {
        "kind": "result",
        "artifacts": {name: str(path) for name, path in result.artifacts.items()},
        "stages": [list(stage) for stage in getattr(result, "stages", [])],
    }


def _die_with_parent() -> None:
    # The parent is the fork server, which exits when the worker process that started it dies
    # (even by SIGKILL): the job's process must not live on unsupervised. The server sees that
    # death as the end of its "alive" pipe, whose write end multiprocessing also hands to every
    # child it forks (so a child could start processes of its own): closed here, or this child
    # alone would keep the server, and so itself, alive (measured: both outlived the worker).
    from multiprocessing import forkserver

    alive = getattr(getattr(forkserver, "_forkserver", None), "_forkserver_alive_fd", None)
    if isinstance(alive, int):
        with contextlib.suppress(OSError):
            os.close(alive)
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() == 1:  # the fork server is already gone
        os._exit(1)


def _limit_address_space(limit: int) -> None:
    # Above what the child has mapped now (torch's libraries, the interpreter): the bound is on
    # what the job adds. CUDA maps huge address ranges, so GPU children get the RSS poll only.
    try:
        with open("/proc/self/statm", "rb") as statm:
            mapped = int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return
    resource.setrlimit(resource.RLIMIT_AS, (mapped + limit, mapped + limit))


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def _send(send: Connection, message: dict[str, Any]) -> None:
    send.send_bytes(json.dumps(message).encode())
