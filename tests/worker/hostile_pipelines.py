"""Pipelines that act as a hostile model would once it runs (test helper for the contained child).

The operator allowlist refuses such models at upload; these stand in for what got past it, to
check the second layer: each runs where the job's pipeline runs. Module-level functions, so the
fork server's child imports them by name.
"""

from __future__ import annotations

import json
import os
import signal
import socket
from pathlib import Path
from typing import Any

import torch

from core.errors import HardenError


class Observed(HardenError):
    code = "observed"


def _attempt(action: Any) -> str:
    try:
        result = action()
    except OSError as exc:
        return f"denied: {type(exc).__name__}"
    return f"allowed: {str(result)[:60]}"


def snoop(spec: Any, model: Path, dataset: Path | None, out: Path, **_: Any) -> None:
    """Tries to read, write and reach what is not its job's; fails with what it managed.

    ``model`` is <tmp>/work/<job>/attempt-1/inputs/model; the test keeps another tenant's file
    at <tmp>/secret-of-another-tenant and looks for <tmp>/marker-from-model afterwards.
    """
    tmp = model.parents[4]
    observed = {
        "read_own_model": _attempt(lambda: len(model.read_bytes())),
        "write_own_folder": _attempt(lambda: (out.parent / "scratch").write_text("x")),
        "read_etc_passwd": _attempt(lambda: Path("/etc/passwd").read_text()[:10]),
        "read_other_tenant": _attempt(lambda: (tmp / "secret-of-another-tenant").read_bytes()),
        "list_artifacts": _attempt(lambda: os.listdir(tmp / "artifacts")),
        "write_outside": _attempt(lambda: (tmp / "marker-from-model").write_text("x")),
        "connect_redis": _attempt(lambda: socket.create_connection(("127.0.0.1", 6379), 1)),
        "signal_parent": _attempt(lambda: os.kill(os.getppid(), 0)),
        "environment": "allowed" if "HARDEN_DATABASE_URL" in os.environ else "denied: scrubbed",
    }
    raise Observed(json.dumps(observed), hint="test")


def loop_forever(spec: Any, model: Path, dataset: Path | None, out: Path, **kw: Any) -> None:
    """One progress report, then a forward that never returns."""
    kw["on_progress"]("load", 1, 1)
    x = torch.zeros(8)
    while True:
        x = x + 1


def hog_memory(spec: Any, model: Path, dataset: Path | None, out: Path, **kw: Any) -> None:
    """Touches 3 GiB, a page at a time."""
    kw["on_progress"]("load", 1, 1)
    torch.ones(3 * 2**30, dtype=torch.uint8)


def crash(spec: Any, model: Path, dataset: Path | None, out: Path, **kw: Any) -> None:
    """A native crash of the runtime."""
    os.kill(os.getpid(), signal.SIGSEGV)


class _Outputs:
    def __init__(self, artifacts: dict[str, Path]) -> None:
        self.artifacts = artifacts


def link_out(spec: Any, model: Path, dataset: Path | None, out: Path, **_: Any) -> _Outputs:
    """Reports 'done' with its model.onnx a symlink to another tenant's file: the worker, not
    confined, would store what the link names."""
    from core.names import ARTIFACT_NAMES

    out.mkdir(parents=True, exist_ok=True)
    for name in ARTIFACT_NAMES:
        (out / name).write_text("{}")
    (out / "model.onnx").unlink()
    (out / "model.onnx").symlink_to(model.parents[4] / "secret-of-another-tenant")
    return _Outputs({name: out / name for name in ARTIFACT_NAMES})


def checkpoint_link(spec: Any, model: Path, dataset: Path | None, out: Path, **kw: Any) -> None:
    """Announces as a checkpoint a link to another tenant's file (the worker would store it)."""
    folder = Path(kw["checkpoint_dir"])
    folder.mkdir(parents=True, exist_ok=True)
    link = folder / "train-00-teacher.safetensors"
    link.symlink_to(model.parents[4] / "secret-of-another-tenant")
    kw["on_checkpoint"](link)
    raise Observed("the worker took the link", hint="test")


def checkpoint_escape(spec: Any, model: Path, dataset: Path | None, out: Path, **kw: Any) -> None:
    """Announces a checkpoint name that leaves the checkpoint folder."""
    kw["on_checkpoint"](Path("../../../secret-of-another-tenant"))
    raise Observed("the worker took the name", hint="test")


def shard_link(spec: Any, model: Path, dataset: Path | None, out: Path, **kw: Any) -> None:
    """Claims a shard of its audit and hands in a link to another tenant's file as its result."""
    broker = kw["audit_shards"]
    broker.start(2)
    shard = broker.claim()
    folder = Path(kw["shard_dir"])
    folder.mkdir(parents=True, exist_ok=True)
    link = folder / f"audit-{shard}.safetensors"
    link.symlink_to(model.parents[4] / "secret-of-another-tenant")
    broker.done(shard, link)
    raise Observed("the worker took the link", hint="test")


def shard_other_number(spec: Any, model: Path, dataset: Path | None, out: Path, **kw: Any) -> None:
    """Hands in the result of a shard it did not claim, under that shard's name."""
    broker = kw["audit_shards"]
    broker.start(2)
    broker.claim()
    folder = Path(kw["shard_dir"])
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "audit-1.safetensors").write_bytes(b"not an audit")
    broker.done(0, folder / "audit-1.safetensors")
    raise Observed("the worker took the file", hint="test")
