"""One audit computed in shards of samples, so that several processes can share it and its
result is the same however many did (issue 29).

The drawn samples are dealt out strided: with N shards, shard k holds samples k, k+N, k+2N, ...
(so every shard gets its share of the slow attacks' prefix). A shard runs every attack at every
budget on its samples, for the upload and then the hardened model, its random draws seeded from
the job's seed and k (:func:`shard_seed`: shard 0 draws with the seed itself, so a one-shard
audit is the audit of all samples at once), and keeps per-sample raw results
(:class:`ShardResult`). core.audit.evaluate merges them in sample order into the report's
sections; the audit is computed in shards always, on one process or many, so a sharded audit
equals the one-process audit by construction.

A shard's result is one safetensors file, ``audit-<k>.safetensors`` (tensors; the rest as JSON in
its metadata, like core.checkpoint's: nothing is unpickled), written beside its final name and
renamed into place. It carries a checksum of its tensors and a digest of everything it depends
on (settings, samples and labels, models, shard count); :func:`load` refuses a file whose
checksum, digest or shape does not hold, whole, with a ValueError.

Who computes which shard is a :class:`ShardBroker`'s business: :class:`LocalBroker` hands every
shard to this process (but those an earlier attempt finished); the worker's hands them out to
several processes.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

import torch
from pydantic import BaseModel, ConfigDict, Field
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

if TYPE_CHECKING:
    from hashlib import _Hash

SUFFIX = ".safetensors"
_NAME = re.compile(r"audit-(\d{1,6})\.safetensors")
_METADATA_KEY = "harden_audit_shard"
FORMAT: Literal[1] = 1


class ShardBroker(Protocol):
    """Who computes which shard of an audit (core.audit.evaluate.audit's loop: told the count
    once, claim and compute until none is left, then wait for each of the others)."""

    def start(self, count: int) -> None:
        """The audit has ``count`` shards (0..count-1); called once, before the first claim."""
        ...

    def claim(self) -> int | None:
        """The next shard this process should compute; None when none is left to claim."""
        ...

    def wait(self, shard: int) -> Path | None:
        """For a shard claimed elsewhere: block until its result file is at hand and return its
        path, or return None when this process must compute it itself (the claimant died)."""
        ...

    def done(self, shard: int, path: Path) -> None:
        """This process finished ``shard``; its result file is ``path``."""
        ...


def shard_count(samples: int, shard_samples: int) -> int:
    """How many shards an audit of ``samples`` samples has at ``shard_samples`` per shard."""
    return max(1, math.ceil(samples / shard_samples))


def shard_seed(seed: int, shard: int) -> int:
    """The seed of shard ``shard``'s random draws: ``seed`` itself for shard 0, so a one-shard
    audit draws as the audit of all samples at once; a hash of both for the others (shard k of
    seed s never draws like shard 0 of seed s + k)."""
    if shard == 0:
        return seed
    digest = hashlib.sha256(f"audit-shard:{seed}:{shard}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFF_FFFF


def shard_file(folder: Path, shard: int) -> Path:
    """Where shard ``shard``'s result lies in ``folder``."""
    return Path(folder) / f"audit-{shard}{SUFFIX}"


def shard_of(name: str) -> int | None:
    """The shard whose result file is named ``name``; None for any other name."""
    found = _NAME.fullmatch(name)
    return int(found.group(1)) if found else None


@dataclass
class ShardRun:
    """One attack at one budget on one shard's samples (a slow attack's on its prefix), per
    sample."""

    attack: str
    epsilon: float | None
    seconds: float
    correct_before: Tensor  # bool
    success: Tensor  # bool
    sizes: Tensor | None = None  # the perturbation's size, where the attack measures it
    adversarial: Tensor | None = None  # kept where a transfer attack replays it (the upload's)


@dataclass
class ModelShard:
    """Everything one shard measured on one model, per sample, its runs in the audit's order."""

    seconds: float
    clean: Tensor  # bool: classified right without attack
    abs_logits: Tensor  # |logits|, a row per sample
    softmax_l1: Tensor  # float64: L1 norm of d softmax(z)_y / dx
    margin_l1: Tensor  # float64: L1 norm of d margin / dx
    runs: list[ShardRun]


@dataclass
class ShardResult:
    """One shard of an audit: its models' per-sample results, by role ('uploaded' is absent
    when the upload's half was reused from an earlier audit)."""

    shard: int
    shards: int
    digest: str
    seconds: float
    models: dict[str, ModelShard]

    def save(self, folder: Path) -> Path:
        """Write it to ``folder`` as ``audit-<shard>.safetensors``, atomically."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tensors, header = _encode(self)
        path = shard_file(folder, self.shard)
        partial = folder / f".{path.name}.partial"
        save_file(tensors, str(partial), metadata={_METADATA_KEY: header.model_dump_json()})
        os.replace(partial, path)
        return path


def load(path: Path, *, digest: str, shard: int) -> ShardResult:
    """Shard ``shard``'s result from ``path``. Raises ValueError for a file that is not one
    whole shard result (unreadable, tensors changed, a tensor missing or of the wrong shape) or
    that was computed for another audit (``digest``) or shard."""
    result = read(path)
    if result.shard != shard:
        raise ValueError(f"{Path(path).name} holds shard {result.shard}, not shard {shard}")
    if result.digest != digest:
        raise ValueError(
            f"{Path(path).name} was computed for other settings, samples or models than this "
            "audit's: it is not used"
        )
    return result


def read(path: Path) -> ShardResult:
    """A whole shard result from ``path``, whatever audit it belongs to (:func:`load` checks
    that too). Raises ValueError for a file that is not one."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
        header = _Header.model_validate_json(metadata[_METADATA_KEY])
    except Exception as error:  # safetensors, JSON and pydantic each raise their own
        raise ValueError(f"{Path(path).name} is not an audit shard result: {error}") from error
    if _checksum(tensors) != header.checksum:
        raise ValueError(f"{Path(path).name} was changed after it was written: it is not used")
    return _decode(header, tensors, Path(path).name)


def digest_of(
    *,
    settings: str,
    samples: Tensor,
    labels: Tensor,
    models: Iterable[nn.Module],
    roles: Iterable[str],
    shards: int,
) -> str:
    """What a shard result depends on, hashed: the resolved settings (as JSON), the samples and
    their labels, the models' weights and buffers, which models the shards attack, and the
    shard count."""
    digest = hashlib.sha256(f"format {FORMAT}\n{settings}\nshards {shards}\n".encode())
    digest.update(f"roles {','.join(roles)}\n".encode())
    _update(digest, "samples", samples)
    _update(digest, "labels", labels)
    for index, model in enumerate(models):
        for name, tensor in model.state_dict().items():
            _update(digest, f"model{index}.{name}", tensor)
    return digest.hexdigest()


class LocalBroker:
    """Every shard of ``count`` to this process, in order, but those whose result an earlier
    attempt left in ``resume_from`` (a whole file: :func:`read`): waiting for one of those
    returns its file at once, waiting for any other returns None. Never blocks. The audit's
    own count (:meth:`start`) replaces ``count`` where they differ."""

    def __init__(self, count: int, resume_from: Path | None = None) -> None:
        self.resume_from = resume_from
        self.computed: dict[int, Path] = {}
        self.count = -1
        self.start(count)

    def start(self, count: int) -> None:
        if count == self.count:
            return
        self.count = count
        self.finished: dict[int, Path] = {}
        if self.resume_from is not None:
            for shard in range(count):
                path = shard_file(Path(self.resume_from), shard)
                if _whole(path, shard):
                    self.finished[shard] = path
        self._next = 0

    def claim(self) -> int | None:
        while self._next < self.count and self._next in self.finished:
            self._next += 1
        if self._next >= self.count:
            return None
        self._next += 1
        return self._next - 1

    def wait(self, shard: int) -> Path | None:
        return self.finished.get(shard)

    def done(self, shard: int, path: Path) -> None:
        self.computed[shard] = path


def _whole(path: Path, shard: int) -> bool:
    if path.is_symlink() or not path.is_file():
        return False
    try:
        return read(path).shard == shard
    except ValueError:
        return False


# --- the file -------------------------------------------------------------------------------------
class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class _RunEntry(_Entry):
    attack: str
    epsilon: float | None
    seconds: float = Field(ge=0)
    sizes: bool
    adversarial: bool


class _ModelEntry(_Entry):
    seconds: float = Field(ge=0)
    runs: list[_RunEntry]


class _Header(_Entry):
    format: Literal[1]
    shard: int = Field(ge=0)
    shards: int = Field(ge=1)
    digest: str
    seconds: float = Field(ge=0)
    checksum: str
    models: dict[Literal["uploaded", "student"], _ModelEntry]


_PER_SAMPLE = ("clean", "abs_logits", "softmax_l1", "margin_l1")
_PER_RUN = ("correct_before", "success", "sizes", "adversarial")


def _encode(result: ShardResult) -> tuple[dict[str, Tensor], _Header]:
    tensors: dict[str, Tensor] = {}
    models = {}
    for role, model in result.models.items():
        for name in _PER_SAMPLE:
            tensors[f"{role}.{name}"] = getattr(model, name)
        for index, run in enumerate(model.runs):
            for name in _PER_RUN:
                value = getattr(run, name)
                if value is not None:
                    tensors[f"{role}.run{index}.{name}"] = value
        runs = [
            _RunEntry(attack=run.attack, epsilon=run.epsilon, seconds=run.seconds,
                      sizes=run.sizes is not None, adversarial=run.adversarial is not None)
            for run in model.runs
        ]  # fmt: skip
        models[role] = _ModelEntry(seconds=model.seconds, runs=runs)
    # Copies on the CPU: safetensors refuses views that share memory.
    tensors = {name: t.detach().to("cpu").clone().contiguous() for name, t in tensors.items()}
    header = _Header(
        format=FORMAT, shard=result.shard, shards=result.shards, digest=result.digest,
        seconds=result.seconds, checksum=_checksum(tensors), models=models,  # type: ignore[arg-type]
    )  # fmt: skip
    return tensors, header


def _decode(header: _Header, tensors: Mapping[str, Tensor], name: str) -> ShardResult:
    expected = {
        f"{role}.{key}"
        for role, entry in header.models.items()
        for key in (*_PER_SAMPLE, *(f"run{index}.{k}" for index, run in enumerate(entry.runs)
                                    for k in _PER_RUN if _holds(run, k)))
    }  # fmt: skip
    if set(tensors) != expected:
        raise ValueError(
            f"{name} does not hold the tensors its header names: missing "
            f"{sorted(expected - set(tensors))}, unexpected {sorted(set(tensors) - expected)}"
        )
    models: dict[str, ModelShard] = {}
    for role, entry in header.models.items():
        runs = [
            ShardRun(
                attack=run.attack, epsilon=run.epsilon, seconds=run.seconds,
                **{k: tensors[f"{role}.run{index}.{k}"] for k in _PER_RUN if _holds(run, k)},
            )
            for index, run in enumerate(entry.runs)
        ]  # fmt: skip
        per_sample = {key: tensors[f"{role}.{key}"] for key in _PER_SAMPLE}
        models[role] = ModelShard(seconds=entry.seconds, runs=runs, **per_sample)
        _check_shapes(models[role], name)
    return ShardResult(header.shard, header.shards, header.digest, header.seconds, models)


def _holds(run: _RunEntry, key: str) -> bool:
    """Whether a run's file holds the tensor ``key`` (sizes and adversarials are optional)."""
    return key in ("correct_before", "success") or bool(getattr(run, key))


def _check_shapes(model: ModelShard, name: str) -> None:
    """Every per-sample tensor has a row per sample (a run's, per sample it ran on), booleans
    are booleans: a file that passed its checksum but was written wrong is still refused."""
    samples = len(model.clean)
    rows = [len(getattr(model, key)) for key in _PER_SAMPLE]
    ok = rows == [samples] * len(rows) and model.clean.dtype == torch.bool
    ok = ok and model.softmax_l1.dim() == model.margin_l1.dim() == model.clean.dim() == 1
    for run in model.runs:
        attacked = len(run.correct_before)
        sized = [t for t in (run.success, run.sizes, run.adversarial) if t is not None]
        ok = ok and attacked <= samples and all(len(t) == attacked for t in sized)
        ok = ok and run.correct_before.dtype == run.success.dtype == torch.bool
    if not ok:
        raise ValueError(f"{name} has tensors of the wrong shape or type: it is not used")


def _checksum(tensors: Mapping[str, Tensor]) -> str:
    digest = hashlib.sha256()
    for name in sorted(tensors):
        _update(digest, name, tensors[name])
    return digest.hexdigest()


def _update(digest: _Hash, name: str, tensor: Tensor) -> None:
    flat = tensor.detach().to("cpu").contiguous().reshape(-1)
    digest.update(f"{name}|{flat.dtype}|{tuple(tensor.shape)}\n".encode())
    digest.update(flat.view(torch.uint8).numpy().tobytes())
