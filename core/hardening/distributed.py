"""One training over several processes: torch DistributedDataParallel, one process per device.

A worker with several GPUs may train one job's model on all of them (``training_processes``):
the job's process is rank 0 and starts the other ranks, torchrun-style (a process group over a
rendezvous file, NCCL on CUDA, gloo on the CPU). Every rank replays the job's pipeline from the
top, the way a torchrun script runs on every rank; each of its trainings
(core.hardening.training.train_epochs) is then one data-parallel training:

- every rank starts from rank 0's state (weights, optimizer, random generators, the epoch an
  earlier attempt's checkpoint left it at), so each draws the same per-epoch permutation;
- each takes its share of every batch (the global batch is still the plan's batch size), its
  loss (a mean over the share's samples, as every method's is) scaled by its share, so DDP's
  all-reduced mean of the gradients is the one-process gradient of the whole batch, up to the
  order of the float sums;
- the per-epoch loss is summed over the ranks, so convergence and ``after_epoch`` checks see the
  same losses on every rank, and rank 0's word (and weights) decides each epoch's end.

Rank 0's model is the result. The other ranks stop when the hardening ends (the first progress
report of a stage after the method's, core.contract.methods.AFTER_METHOD): the export, the audit
and the report run in rank 0 alone, and a training after that point (another method compared
with the job's) runs in one process.

What is not the one-process result: BatchNorm normalises each rank's share by that share's own
statistics (on a GPU, ``torch.nn.SyncBatchNorm`` would make them the batch's), and random numbers
a loss draws per batch (dropout, an attack's random start) are drawn per share from the same
generator state on every rank. Both are noise of the size of a batch's sampling noise
(docs/scaling.md measures it); a model without them trains to the one-process weights up to float
summation order.

The ranks talk over TCP (gloo's pairs; NCCL's bootstrap): a contained job (worker/confine.py:
Landlock refuses every TCP bind and connect, and its network namespace has no interface up)
cannot form a group, and is refused with a DeviceError that says so.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime as dt
import json
import logging
import multiprocessing
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from core import checkpoint
from core.checkpoint import Resumable
from core.contract.methods import AFTER_METHOD
from core.device import pick_device
from core.errors import DeviceError
from core.names import ProgressFn

log = logging.getLogger(__name__)

# How long a rank waits for the others in one collective (NCCL's default): the ranks replay the
# same work between trainings, so they wait only for each other's skew.
TIMEOUT = dt.timedelta(minutes=10)
# The stages after the method's: at the first of them the hardening has ended.
_AFTER_HARDENING = frozenset(stage.name for stage in AFTER_METHOD)
_PR_SET_PDEATHSIG = 1
_HINT = (
    "set HARDEN_TRAINING_PROCESSES=1 (one process per training), or run the job where its "
    "processes may open TCP sockets on the loopback (an uncontained worker, harden run)"
)


class Rerun(Protocol):
    """The job's pipeline as every other rank replays it: ``rerun(out_dir, on_progress=...,
    device=...)`` (the job's arguments bound; core.pipeline.run)."""

    def __call__(self, out_dir: Path, *, on_progress: ProgressFn, device: str) -> object: ...


class _HardeningEnded(BaseException):  # noqa: N818 - a signal, not an error
    """Raised in a rank other than 0 where the hardening ends: its part is done."""


@dataclass(frozen=True)
class Share:
    """A rank's rows of one batch: ``rows`` to train on, the ``samples`` they count for in the
    epoch's loss and the ``scale`` of their mean loss (their share of the batch times the group's
    size: DDP averages the ranks' gradients)."""

    rows: Tensor
    samples: int
    scale: float


@dataclass
class TrainingGroup:
    """This process's place in a training over ``world`` processes (its ``rank``, its
    ``device``), as core.hardening.training.train_epochs uses it."""

    rank: int
    world: int
    device: torch.device
    helpers: list[Any] = field(default_factory=list)  # rank 0's processes of the other ranks
    open: bool = True

    def share(self, index: Tensor) -> Share:
        """This rank's part of the batch ``index`` (contiguous parts, sizes differing by at most
        one). A batch smaller than the group leaves some ranks no row: they take the batch's
        first row at weight 0, since every rank must run its backward for the all-reduce."""
        rows = index.tensor_split(self.world)[self.rank]
        if len(rows) == 0:
            return Share(index[:1], samples=0, scale=0.0)
        return Share(rows, samples=len(rows), scale=len(rows) * self.world / len(index))

    def wrap(self, model: nn.Module) -> nn.Module:
        """``model`` under DDP: its gradients all-reduced at each backward (a forward whose
        gradient is taken only for the inputs, as an attack's, reduces nothing)."""
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=device_ids)

    def start(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        generator: torch.Generator,
        resumable: Resumable | None,
        progress: tuple[list[float], int, bool],
        shape: tuple[int, ...],
    ) -> tuple[list[float], int, bool]:
        """Every rank takes rank 0's training state (weights and buffers, optimizer, random
        states, what ``resumable`` keeps) and its progress (losses so far, the epoch it stops
        after, ended): what rank 0 restored from a checkpoint, every rank goes on from.
        ``shape`` (rows, batch size, epochs) must agree: ranks that replayed the job differently
        would otherwise wait on each other until the timeout."""
        tensors, values = checkpoint.optimizer_tensors(optimizer)
        sent = {f"optimizer.{k}": v for k, v in tensors.items()}
        # The batches' generator and torch's CPU one; not the CUDA ones, whose restore would
        # open a context on every GPU in every rank (each rank replayed the same seed anyway).
        randoms = checkpoint.random_states(generator)
        sent.update({f"random.{k}": v for k, v in randoms.items() if not k.startswith("cuda")})
        extra: Any = None
        if resumable is not None:
            extra_tensors, extra = resumable.checkpoint_state()
            sent.update({f"extra.{k}": v for k, v in extra_tensors.items()})
        losses, stop_after, ended = progress
        state = {
            "losses": losses, "stop_after": stop_after, "ended": ended, "optimizer": values,
            "extra": extra, "shape": list(shape),
        }  # fmt: skip
        state, received = self._broadcast_state(state, sent)
        if list(shape) != state["shape"]:
            raise RuntimeError(
                f"training rank {self.rank} has (rows, batch size, epochs) {shape}, rank 0 "
                f"{tuple(state['shape'])}: the ranks replayed the job differently"
            )
        self.same_model(model)
        if self.rank != 0:
            checkpoint.restore_optimizer(
                optimizer, _group(received, "optimizer"), state["optimizer"]
            )
            checkpoint.restore_random_states(generator, _group(received, "random"))
            if resumable is not None:
                resumable.restore_checkpoint(_group(received, "extra"), state["extra"] or {})
        return [float(x) for x in state["losses"]], int(state["stop_after"]), bool(state["ended"])

    def total(self, value: Tensor) -> Tensor:
        """``value`` summed over the ranks (in place)."""
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
        return value

    def same_model(self, model: nn.Module) -> None:
        """Rank 0's weights and buffers on every rank. The weights are equal already (equal
        gradients, equal steps); BatchNorm's running statistics are each rank's own."""
        with torch.no_grad():
            for tensor in model.state_dict().values():
                self._broadcast_into(tensor)

    def rank_zero_says(self, decision: bool) -> bool:
        """Rank 0's ``decision`` (an ``after_epoch`` stop), on every rank."""
        flag = torch.tensor([int(decision)], device=self.device)
        dist.broadcast(flag, src=0)
        return bool(flag.item())

    def watch(self, progress: ProgressFn | None) -> ProgressFn:
        """``progress`` that ends the group where the hardening ends (in a rank other than 0, by
        stopping its replay there)."""

        def report(stage: str, done: int, total: int) -> None:
            if self.open and stage in _AFTER_HARDENING:
                self.close()
                if self.rank != 0:
                    raise _HardeningEnded
            if progress is not None:
                progress(stage, done, total)

        return report

    def close(self) -> None:
        """Leave the process group; rank 0 waits for the other ranks to end, then ends them."""
        if not self.open:
            return
        self.open = False
        dist.destroy_process_group()
        for helper in self.helpers:
            helper.join(60)
            if helper.is_alive():
                helper.kill()
                helper.join(5)

    def _broadcast_into(self, tensor: Tensor) -> None:
        sent = tensor.to(self.device).contiguous()
        dist.broadcast(sent, src=0)
        if sent is not tensor:
            tensor.copy_(sent)

    def _broadcast_state(
        self, values: dict[str, Any], tensors: dict[str, Tensor]
    ) -> tuple[dict[str, Any], dict[str, Tensor]]:
        """Rank 0's ``values`` (JSON) and ``tensors``: the same parts as a checkpoint, sent as
        tensors, so nothing is unpickled."""
        header: dict[str, Any] = {
            "values": values,
            "tensors": [
                [k, list(v.shape), str(v.dtype).removeprefix("torch.")] for k, v in tensors.items()
            ],
        }
        encoded = json.dumps(header).encode() if self.rank == 0 else b""
        size = torch.tensor([len(encoded)], dtype=torch.int64, device=self.device)
        dist.broadcast(size, src=0)
        buffer = torch.zeros(int(size.item()), dtype=torch.uint8, device=self.device)
        if self.rank == 0:
            buffer.copy_(torch.frombuffer(bytearray(encoded), dtype=torch.uint8))
        dist.broadcast(buffer, src=0)
        header = json.loads(bytes(buffer.cpu().tolist()))
        received: dict[str, Tensor] = {}
        for name, shape, dtype in header["tensors"]:
            if self.rank == 0:
                tensor = tensors[name].to(self.device).contiguous()
            else:
                tensor = torch.empty(shape, dtype=getattr(torch, dtype), device=self.device)
            dist.broadcast(tensor, src=0)
            received[name] = tensor.cpu()
        return header["values"], received


def _group(tensors: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    start = f"{prefix}."
    return {k[len(start) :]: v for k, v in tensors.items() if k.startswith(start)}


_current: ContextVar[TrainingGroup | None] = ContextVar("harden_training_group", default=None)


def current() -> TrainingGroup | None:
    """The group this process's trainings run in, or None (one process)."""
    group = _current.get()
    return group if group is not None and group.open else None


def _unchanged(progress: ProgressFn | None) -> ProgressFn | None:
    return progress


@contextmanager
def training_group(
    processes: int, rerun: Rerun, *, device: str | None
) -> Iterator[Callable[[ProgressFn | None], ProgressFn | None]]:
    """Train over ``processes`` processes until the hardening ends: this process is rank 0 and
    starts the others, each replaying ``rerun``. Yields what wraps the job's ``on_progress`` so
    the group ends with the hardening. One process: nothing at all changes.

    On CUDA, rank r trains on the GPU r places after this process's (``cuda:0`` and 2 processes:
    cuda:0 and cuda:1) over NCCL; on the CPU over gloo, the CPU's threads shared out. Raises
    DeviceError when those GPUs are missing or the processes cannot reach each other."""
    if processes <= 1:
        yield _unchanged
        return
    first = pick_device(device)
    devices = [_rank_device(first, rank, processes) for rank in range(processes)]
    refused = _loopback_refused()
    if refused is not None:
        raise DeviceError(
            f"a training over {processes} processes needs TCP between them on this machine, "
            f"which this process may not open ({refused}): a contained job has no network",
            hint=_HINT,
            device=str(first),
        )
    backend = "nccl" if first.type == "cuda" else "gloo"
    threads = torch.get_num_threads()
    share = max(1, threads // processes) if first.type == "cpu" else threads
    folder = Path(tempfile.mkdtemp(prefix="harden-training-group-"))
    store = str(folder / "rendezvous")
    context = multiprocessing.get_context("spawn")
    group = TrainingGroup(0, processes, first)
    token = None
    try:
        for rank in range(1, processes):
            helper = context.Process(
                target=_rank_main,
                args=(rank, processes, store, backend, str(devices[rank]), rerun, folder, share),
                name=f"harden-training-rank-{rank}",
            )
            _start(helper)
            group.helpers.append(helper)
        torch.set_num_threads(share)
        _join(0, processes, _meet(store, group.helpers), backend)
        token = _current.set(group)
        yield group.watch
    except BaseException:
        for helper in group.helpers:  # a rank still in a collective would wait for good
            if helper.is_alive():
                helper.kill()
        raise
    finally:
        if token is not None:
            _current.reset(token)
        if dist.is_initialized() and group.open:
            group.close()
        for helper in group.helpers:
            helper.join(5)
            if helper.exitcode not in (0, None):
                log.warning(
                    "training rank %s ended with exit code %s", helper.name, helper.exitcode
                )
        torch.set_num_threads(threads)
        shutil.rmtree(folder, ignore_errors=True)


def _start(helper: Any) -> None:
    # multiprocessing refuses children to a daemonic process (a job's contained child is one)
    # lest they outlive it; these cannot: each dies with its parent (PR_SET_PDEATHSIG) and is
    # ended on every way out of the group.
    config = multiprocessing.current_process()._config  # type: ignore[attr-defined]
    daemonic = config.pop("daemon", None)
    try:
        helper.start()
    finally:
        if daemonic is not None:
            config["daemon"] = daemonic


def _rank_device(first: torch.device, rank: int, processes: int) -> torch.device:
    if first.type != "cuda":
        return first
    index = (first.index or 0) + rank
    count = torch.cuda.device_count()
    if index >= count:
        raise DeviceError(
            f"a training over {processes} processes from {first} needs cuda:{first.index or 0}.."
            f"cuda:{(first.index or 0) + processes - 1}; this machine has {count} GPU(s)",
            hint="set HARDEN_TRAINING_PROCESSES to at most the GPUs from the worker's device on",
            device=str(first),
        )
    return torch.device("cuda", index)


def _loopback_refused() -> str | None:
    """Why this process cannot connect two TCP sockets on the loopback (None: it can)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
            server.bind(("127.0.0.1", 0))
            server.listen(1)
            with socket.create_connection(server.getsockname(), timeout=5):
                pass
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def _meet(path: str, helpers: list[Any]) -> dist.FileStore:
    """The rendezvous once every other rank is in it. A rank that died before (its process
    failed to start or to import the job) is an error at once, not after ``TIMEOUT``."""
    store = dist.FileStore(path, len(helpers) + 1)
    keys = [f"rank-{rank}" for rank in range(1, len(helpers) + 1)]
    deadline = time.monotonic() + TIMEOUT.total_seconds()
    while True:
        try:
            store.wait(keys, dt.timedelta(seconds=1))
            return store
        except RuntimeError:  # not all there yet
            ended = [helper for helper in helpers if not helper.is_alive()]
            if ended:
                raise RuntimeError(
                    f"training {ended[0].name} ended (exit code {ended[0].exitcode}) before it "
                    "joined the group (its traceback is on this process's standard error)"
                ) from None
            if time.monotonic() > deadline:
                raise


def _join(rank: int, processes: int, store: dist.Store, backend: str) -> None:
    dist.init_process_group(backend, store=store, rank=rank, world_size=processes, timeout=TIMEOUT)


def _rank_main(
    rank: int,
    processes: int,
    store: str,
    backend: str,
    device: str,
    rerun: Rerun,
    folder: Path,
    threads: int,
) -> None:
    """A rank other than 0: replay the job until its hardening ends."""
    if sys.platform.startswith("linux"):  # rank 0 killed (a job's watchdog): end with it
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    torch.set_num_threads(threads)
    rendezvous = dist.FileStore(store, processes)
    rendezvous.set(f"rank-{rank}", "up")
    _join(rank, processes, rendezvous, backend)
    group = TrainingGroup(rank, processes, torch.device(device))
    _current.set(group)
    try:
        rerun(folder / f"rank-{rank}", on_progress=group.watch(None), device=device)
    except _HardeningEnded:
        return
    finally:
        with contextlib.suppress(Exception):
            group.close()
