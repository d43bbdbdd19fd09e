"""What every hardening method trains with: the spec's optimiser, a training loop on in-memory
tensors, its convergence rule, and the split of training rows held out for a method's checks.

Training runs on plain tensors already on the device, with batches drawn by a seeded index
permutation: no DataLoader, so the loop costs what a hand-written PyTorch loop costs
(bench/distill_overhead.py measures it).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from core import checkpoint
from core.checkpoint import Resumable
from core.compute import Compute
from core.contract.spec import HardenSpec
from core.contract.training_cost import steps_per_epoch
from core.hardening import distributed
from core.modules import set_training_mode
from core.names import CancelFn, ProgressFn
from core.plan import RunPlan
from core.stages import cancelled

LossFn = Callable[[Tensor, Tensor], Tensor]
# A loss that needs the model and the batch's inputs, not only its logits: adversarial training
# perturbs the inputs first (core.hardening.adversarial).
BatchLoss = Callable[[nn.Module, Tensor, Tensor], Tensor]
# Called after each epoch with the epoch's index and the per-epoch losses so far; True stops.
EpochHook = Callable[[int, list[float]], bool]


def make_optimizer(
    params: object, spec: HardenSpec, learning_rate: float | None = None
) -> torch.optim.Optimizer:
    """The spec's optimiser: Adam by default (SGD's step is divided by T at high temperature),
    at ``learning_rate`` (default: the spec's)."""
    lr = spec.learning_rate if learning_rate is None else learning_rate
    if spec.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=spec.momentum)  # type: ignore[arg-type]
    return torch.optim.Adam(params, lr=lr)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Convergence:
    """When a training loss has stopped improving, checked after every epoch.

    Converged: over the last ``window`` epochs the best loss improved by less than ``tolerance``
    of all the improvement made since the first epoch, after at least ``min_epochs``; or the loss
    is down to ``floor``. ``offset`` is subtracted from each epoch's loss first: for soft labels it
    is their entropy, which the cross-entropy never goes below, so what is compared is the KL
    divergence. Measured against the progress made, not against the loss itself: a divergence
    that keeps shrinking by a few percent an epoch (a small MLP's does for hundreds of epochs)
    no longer changes the student's accuracy (bench/results/student_accuracy.md). The window
    spans several epochs because one epoch's mean loss is noisy (shuffled batches, BatchNorm).
    """

    offset: float = 0.0
    window: int = 5
    tolerance: float = 0.005
    min_epochs: int = 10
    floor: float = 1e-3
    # Once converged, the learning rate is divided by ``1 / lr_decay`` for ``settle_epochs`` more
    # epochs before training stops: at the plateau's learning rate the test accuracy still swings
    # by a point from one epoch to the next, and a short low-rate finish removes that noise
    # (bench/results/student_accuracy.md).
    lr_decay: float = 0.1
    settle_epochs: int = 5

    def excess(self, loss: float) -> float:
        """The loss above what it can reach (the KL divergence for soft labels)."""
        return max(0.0, loss - self.offset)

    def reached(self, losses: list[float]) -> bool:
        """Whether training with these per-epoch losses so far can stop."""
        excess = [self.excess(loss) for loss in losses]
        if excess and excess[-1] <= self.floor:
            return True
        if len(excess) < max(self.min_epochs, self.window + 1):
            return False
        best_before = min(excess[: -self.window])
        best_recent = min(excess[-self.window :])
        progress = excess[0] - best_recent
        return best_before - best_recent <= self.tolerance * progress

    def epochs_left(self, losses: list[float]) -> int:
        """An estimate of the epochs still needed until :meth:`reached` (0 once it is), for
        progress bars and the ETA: the improvement made over each window of epochs is assumed to
        shrink by the same ratio as over the last two windows (a loss decaying geometrically),
        and training goes on until it is below ``tolerance`` of the progress made. Before two
        windows are seen, or when the loss is not shrinking that way, as many epochs again as
        were trained (at least the rule's minimum). Only an estimate: the caller corrects it
        after every epoch."""
        if self.reached(losses):
            return 0
        count = len(losses)
        least = max(self.min_epochs, self.window + 1)
        fallback = max(least - count, count, self.window)
        if count < 2 * self.window + 1:
            return fallback
        excess = [self.excess(loss) for loss in losses]
        best_recent = min(excess[-self.window :])
        best_middle = min(excess[-2 * self.window : -self.window])
        best_before = min(excess[: -2 * self.window])
        latest, earlier = best_middle - best_recent, best_before - best_middle
        target = self.tolerance * (excess[0] - best_recent)
        if not (0 < latest < earlier) or target <= 0:
            return fallback
        windows = math.log(target / latest) / math.log(latest / earlier)
        return max(1, math.ceil(windows * self.window))


class StepMeter:
    """The optimizer steps of one stage: those done, and an estimate of all the stage will run,
    reported as ``on_progress(stage, done, estimate)``.

    A training that stops at convergence cannot know its steps in advance; its step bound is
    what it may not exceed, not what it will take (a default student's bound was 14,500 steps
    where it ran 740). So the total shown is an estimate, corrected after every epoch
    (:meth:`Convergence.epochs_left`) and exact once the stop is known; ``later`` holds the
    steps a stage has planned after the current loop (a student's low-rate finish). Done only
    goes forward; the estimate may go either way.
    """

    def __init__(self, stage: str, on_progress: ProgressFn) -> None:
        self.stage = stage
        self.done = 0
        self.ahead = 0  # steps the current loop still expects
        self.later = 0  # steps planned after the current loop
        self._report = on_progress

    @property
    def total(self) -> int:
        return max(self.done + self.ahead + self.later, self.done, 1)

    def expect(self, steps_ahead: int) -> None:
        """The current loop expects ``steps_ahead`` more steps; reported at once."""
        self.ahead = max(0, steps_ahead)
        self._report(self.stage, self.done, self.total)

    def step(self) -> None:
        self.done += 1
        self.ahead = max(0, self.ahead - 1)
        self._report(self.stage, self.done, self.total)

    def finish(self) -> None:
        """The stage has run every step it will: its bar is full."""
        self.ahead = self.later = 0
        self._report(self.stage, self.done, self.total)


def train_epochs(
    model: nn.Module,
    inputs: Tensor,
    targets: Tensor,
    loss_fn: LossFn | None = None,
    *,
    batch_loss: BatchLoss | None = None,
    after_epoch: EpochHook | None = None,
    epochs: int,
    plan: RunPlan,
    stage: str,
    generator: torch.Generator,
    on_progress: ProgressFn,
    should_cancel: CancelFn,
    convergence: Convergence | None = None,
    learning_rate: float | None = None,
    rows: Tensor | None = None,
    meter: StepMeter | None = None,
    expected: Convergence | None = None,
    resumable: Resumable | None = None,
) -> list[float]:
    """Train ``model`` with the spec's optimiser at the plan's batch size on in-memory tensors;
    returns the mean loss of each epoch. At most ``epochs``; with ``convergence``, once the losses
    have converged it lowers the learning rate for ``convergence.settle_epochs`` and stops.
    ``learning_rate`` overrides the spec's. Calls ``should_cancel()`` before every step and
    reports each step through ``meter`` (a new one of ``stage`` and ``on_progress`` when None):
    ``on_progress(stage, done, total)``, whose total is the steps it expects to run, exact for
    a fixed number of epochs and estimated where training stops at convergence (``convergence``,
    or ``expected``: the convergence an ``after_epoch`` hook stops at), corrected every epoch.

    The loss is ``loss_fn(model(x), targets)``, or ``batch_loss(model, x, targets)`` where the
    loss needs the inputs themselves; ``after_epoch`` may stop training early by returning True.
    ``rows``: train on these rows of ``inputs`` and ``targets`` only (indices), without copying
    them out: a memory-mapped dataset stays on disk.

    Where the run checkpoints (core.checkpoint.current()), the training is a unit: it saves its
    state at epoch ends and at its end, and resumes from what an earlier attempt saved (with
    ``resumable``: state its caller keeps outside the model and the optimizer).
    """
    if batch_loss is None:
        if loss_fn is None:
            raise TypeError("train_epochs needs loss_fn or batch_loss")
        outputs_loss = loss_fn

        def batch_loss(module: nn.Module, x: Tensor, target: Tensor) -> Tensor:
            return outputs_loss(module(x), target)

    compute = plan.compute
    if compute.channels_last:
        model.to(memory_format=torch.channels_last)  # before the optimiser sees the parameters
    optimizer = make_optimizer(model.parameters(), plan.spec, learning_rate)
    count = len(inputs) if rows is None else len(rows)
    batch_size = plan.batch_size
    per_epoch = steps_per_epoch(count, batch_size)
    total = epochs * per_epoch
    meter = meter or StepMeter(stage, on_progress)
    stops_at = convergence or expected

    def epochs_ahead(done: int, losses: list[float]) -> int:
        if stop_after < epochs or stops_at is None:
            return stop_after - done  # known: a fixed number, or settling after convergence
        settle = convergence.settle_epochs if convergence is not None else 0
        return min(epochs - done, stops_at.epochs_left(losses) + settle)

    losses: list[float] = []
    stop_after = epochs
    ended = False
    unit = _Unit.begin(stage, model, optimizer, generator, resumable)
    if unit is not None and unit.saved is not None:
        losses, stop_after, ended = unit.restore()
    # Over several processes (core.hardening.distributed), every rank goes on from rank 0's state
    # and trains on its share of each batch; trained is the model under DDP.
    ranks, trained = distributed.current(), model
    if ranks is not None:
        shape = (count, batch_size, epochs)
        progress = (losses, stop_after, ended)
        losses, stop_after, ended = ranks.start(
            model, optimizer, generator, resumable, progress, shape
        )
        trained = ranks.wrap(model)
    first_epoch = len(losses)
    step = first_epoch * per_epoch
    meter.done += step
    meter.expect(0 if ended else epochs_ahead(first_epoch, losses) * per_epoch)
    for epoch in range(epochs if ended else first_epoch, epochs):
        # The permutation is drawn on the CPU generator so a seed gives the same batches on any
        # device; the loss sum stays on the device so there is one sync per epoch, not per step.
        order = torch.randperm(count, generator=generator)
        if rows is not None:
            order = rows[order]
        order = order.to(inputs.device)
        set_training_mode(trained, True)  # again each epoch: an after_epoch check may evaluate
        loss_sum = torch.zeros((), device=inputs.device)
        for start in range(0, count, batch_size):
            if should_cancel():
                raise cancelled(
                    f"cancelled during {stage} training at step {step} of at most {total}", stage
                )
            index = order[start : start + batch_size]
            share = None if ranks is None else ranks.share(index)
            if share is not None:
                index = share.rows
            batch = inputs[index]
            if compute.channels_last and batch.dim() == 4:
                batch = batch.contiguous(memory_format=torch.channels_last)
            with training_autocast(compute, inputs.device):
                loss = batch_loss(trained, batch, targets[index])
            optimizer.zero_grad(set_to_none=True)
            if share is None:
                loss.backward()
            else:
                (loss * share.scale).backward()
            optimizer.step()
            loss_sum += loss.detach() * (len(index) if share is None else share.samples)
            step += 1
            meter.step()
        if ranks is not None:  # the epoch's loss over every rank's share; rank 0's buffers
            ranks.total(loss_sum)
            ranks.same_model(model)
        losses.append(float(loss_sum) / count)
        stop = after_epoch is not None and after_epoch(epoch, losses)
        if ranks is not None:  # what rank 0's check decided, and its weights if it restored any
            stop = ranks.rank_zero_says(stop)
            ranks.same_model(model)
        if stop:
            stop_after = epoch + 1
        if epoch + 1 >= stop_after:
            break
        if convergence is not None and stop_after == epochs and convergence.reached(losses):
            for group in optimizer.param_groups:
                group["lr"] *= convergence.lr_decay
            stop_after = min(epochs, epoch + 1 + convergence.settle_epochs)
        if unit is not None and unit.checkpoints.due():
            unit.save(losses, stop_after, ended=False)
        meter.expect(epochs_ahead(epoch + 1, losses) * per_epoch)
    if unit is not None and not ended:
        unit.save(losses, stop_after, ended=True)
    if ranks is not None:  # what follows (soft labels, a check) computes alike on every rank
        ranks.same_model(model)
    meter.expect(0)
    set_training_mode(model, False)
    if compute.channels_last:
        model.to(memory_format=torch.contiguous_format)  # what export and the audit expect
    return losses


@dataclass
class _Unit:
    """One training as a checkpointed unit of the run (core.checkpoint)."""

    checkpoints: checkpoint.Checkpoints
    key: str
    stage: str
    model: nn.Module
    optimizer: torch.optim.Optimizer
    generator: torch.Generator
    resumable: Resumable | None
    saved: checkpoint.Saved | None

    @classmethod
    def begin(
        cls,
        stage: str,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        generator: torch.Generator,
        resumable: Resumable | None,
    ) -> _Unit | None:
        checkpoints = checkpoint.current()
        if checkpoints is None:
            return None
        key = checkpoints.next_key(stage)
        saved = checkpoints.load(key)
        return cls(checkpoints, key, stage, model, optimizer, generator, resumable, saved)

    def restore(self) -> tuple[list[float], int, bool]:
        """Put the saved state back; (losses so far, the epoch it stops after, ended)."""
        saved = self.saved
        assert saved is not None
        values = saved.values
        self.model.load_state_dict(saved.group("model"))
        checkpoint.restore_optimizer(self.optimizer, saved.group("optimizer"), values["optimizer"])
        checkpoint.restore_random_states(self.generator, saved.group("random"))
        if self.resumable is not None:
            self.resumable.restore_checkpoint(saved.group("extra"), values.get("extra") or {})
        losses = [float(loss) for loss in values["losses"]]
        ended = bool(values["ended"])
        self.checkpoints.resumed.append(
            checkpoint.Resumed(self.key, self.stage, epochs=len(losses), ended=ended)
        )
        return losses, int(values["stop_after"]), ended

    def save(self, losses: list[float], stop_after: int, *, ended: bool) -> None:
        tensors = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        optimizer_tensors, optimizer_values = checkpoint.optimizer_tensors(self.optimizer)
        tensors.update({f"optimizer.{k}": v for k, v in optimizer_tensors.items()})
        random = checkpoint.random_states(self.generator)
        tensors.update({f"random.{k}": v for k, v in random.items()})
        values: dict[str, object] = {
            "stage": self.stage, "losses": losses, "stop_after": stop_after, "ended": ended,
            "optimizer": optimizer_values,
        }  # fmt: skip
        if self.resumable is not None:
            extra_tensors, values["extra"] = self.resumable.checkpoint_state()
            tensors.update({f"extra.{k}": v for k, v in extra_tensors.items()})
        self.checkpoints.save(self.key, tensors, values)


def training_autocast(compute: Compute, device: torch.device) -> AbstractContextManager[object]:
    """bfloat16 autocast of one training step where ``compute`` asks for it, else nothing at all
    (not a disabled autocast: float32 runs are exactly what they were)."""
    if compute.training_precision != "bfloat16":
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def held_out_split(
    count: int, generator: torch.Generator, *, most: int = 256
) -> tuple[Tensor, Tensor]:
    """Indices to train on and indices held out for the check (a tenth, at most ``most``)."""
    order = torch.randperm(count, generator=generator)
    held = max(1, min(most, count // 10))
    return order[held:], order[:held]
