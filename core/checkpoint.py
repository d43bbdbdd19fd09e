"""Checkpoints of one job's trainings, so an attempt that starts after a lost one resumes where it
stopped instead of from zero.

A resumed job is *replayed*, not restored from an image of the process: the pipeline runs again
from the top with the same seed, and every training loop (core.hardening.training.train_epochs)
is a unit with a key in the order the job runs them (``train-00-teacher``,
``train-01-student``, ...). A unit that ended in an earlier attempt hands back what it saved at
its end (weights, optimizer, losses and the random states it left behind) without training; one
stopped part-way goes on after its last saved epoch. What lies between units (soft labels, a
held-out check, an export) is recomputed: seconds, and the same for a seed. Replay keeps every
method resumable with no code of its own beyond declaring state that lives outside the model and
the optimizer (:class:`Resumable`, e.g. adversarial training's held-out history), and it cannot
restore a state that no uninterrupted run would have reached.

A checkpoint is one safetensors file (tensors; the rest as JSON in its metadata): nothing is
unpickled when a job resumes. The file is written beside the job and renamed into place, so a
reader never sees half of one; ``on_saved`` then hands its path to whoever stores it (the worker
copies it to the artifact store, fenced by the job's attempt: worker/runner.py).

When: at the end of an epoch once ``every_s`` seconds have passed since the last save (the
issue's "epoch boundaries or every N minutes, whichever is later"), and at the end of every unit.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

SUFFIX = ".safetensors"
_STATE_KEY = "harden_checkpoint"


class Resumable(Protocol):
    """State a training keeps outside its model and optimizer, saved with its checkpoint."""

    def checkpoint_state(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """(tensors, JSON-able values) to save."""
        ...

    def restore_checkpoint(self, tensors: dict[str, Tensor], values: dict[str, Any]) -> None:
        """Put back what :meth:`checkpoint_state` returned."""
        ...


@dataclass(frozen=True)
class Saved:
    """One unit's checkpoint as read back: its tensors by prefix and its JSON values."""

    tensors: dict[str, Tensor]
    values: dict[str, Any]

    def group(self, prefix: str) -> dict[str, Tensor]:
        start = f"{prefix}."
        return {k[len(start) :]: v for k, v in self.tensors.items() if k.startswith(start)}


@dataclass(frozen=True)
class Resumed:
    """A unit taken over from an earlier attempt: its key, its stage, the epochs it had done
    (1-based count) and whether it had ended."""

    key: str
    stage: str
    epochs: int
    ended: bool


@dataclass
class Checkpoints:
    """This run's checkpoints: written to ``directory``, read back from ``resume_from``."""

    directory: Path
    resume_from: Path | None = None
    every_s: float = 300.0
    on_saved: Callable[[Path], None] | None = None
    clock: Callable[[], float] = time.monotonic
    resumed: list[Resumed] = field(default_factory=list)
    _count: int = 0
    _last_save: float | None = None

    def __post_init__(self) -> None:
        self.directory = Path(self.directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._last_save = self.clock()

    def next_key(self, stage: str) -> str:
        """The next unit's key: its place in the run's order, and its stage."""
        key = f"train-{self._count:02d}-{re.sub(r'[^a-z_]', '_', stage.lower())[:32]}"
        self._count += 1
        return key

    def load(self, key: str) -> Saved | None:
        """The unit's checkpoint from the earlier attempt, or None."""
        if self.resume_from is None:
            return None
        path = self.resume_from / f"{key}{SUFFIX}"
        if not path.is_file():
            return None
        tensors = load_file(str(path))
        with open(path, "rb") as handle:
            header_size = int.from_bytes(handle.read(8), "little")
            header = json.loads(handle.read(header_size))
        values = json.loads(header.get("__metadata__", {}).get(_STATE_KEY, "{}"))
        if not isinstance(values, dict):
            return None
        return Saved(tensors, values)

    def due(self) -> bool:
        """Whether an epoch's end should save (``every_s`` since the last save)."""
        return self._last_save is None or self.clock() - self._last_save >= self.every_s

    def save(self, key: str, tensors: dict[str, Tensor], values: dict[str, Any]) -> Path:
        """Write the unit's checkpoint atomically and hand it to ``on_saved``."""
        path = self.directory / f"{key}{SUFFIX}"
        partial = self.directory / f".{key}.partial"
        # Copies: safetensors refuses tensors that share memory (a model's tied weights do).
        copies = {name: t.detach().to("cpu").clone().contiguous() for name, t in tensors.items()}
        save_file(copies, str(partial), metadata={_STATE_KEY: json.dumps(values)})
        os.replace(partial, path)
        self._last_save = self.clock()
        if self.on_saved is not None:
            self.on_saved(path)
        return path


_current: ContextVar[Checkpoints | None] = ContextVar("harden_checkpoints", default=None)


@contextmanager
def checkpointing(checkpoints: Checkpoints | None) -> Iterator[Checkpoints | None]:
    """Make ``checkpoints`` the current run's (None: nothing is saved or resumed)."""
    token = _current.set(checkpoints)
    try:
        yield checkpoints
    finally:
        _current.reset(token)


def current() -> Checkpoints | None:
    return _current.get()


# --- the states a training unit saves -------------------------------------------------------------
def random_states(generator: torch.Generator) -> dict[str, Tensor]:
    """The training's generator and torch's global ones (CPU, and CUDA where in use)."""
    states = {"generator": generator.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for index, state in enumerate(torch.cuda.get_rng_state_all()):
            states[f"cuda{index}"] = state
    return states


def restore_random_states(generator: torch.Generator, states: dict[str, Tensor]) -> None:
    generator.set_state(states["generator"])
    torch.set_rng_state(states["torch"])
    cuda = [states[f"cuda{i}"] for i in range(len(states)) if f"cuda{i}" in states]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, Tensor], Any]:
    """An optimizer's state dict split into tensors (``<param>.<name>``) and JSON (the rest):
    its per-parameter state is tensors and numbers; its param groups are numbers and lists."""
    state = optimizer.state_dict()
    tensors: dict[str, Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, values in state["state"].items():
        for name, value in values.items():
            if isinstance(value, Tensor):
                tensors[f"{index}.{name}"] = value
            else:
                scalars.setdefault(str(index), {})[name] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def restore_optimizer(
    optimizer: torch.optim.Optimizer, tensors: dict[str, Tensor], values: Any
) -> None:
    per_param: dict[int, dict[str, Any]] = {}
    for key, tensor in tensors.items():
        index, name = key.split(".", 1)
        per_param.setdefault(int(index), {})[name] = tensor
    for index, scalars in values["scalars"].items():
        per_param.setdefault(int(index), {}).update(scalars)
    optimizer.load_state_dict({"state": per_param, "param_groups": values["param_groups"]})
