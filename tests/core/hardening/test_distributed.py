"""One training over two processes (core.hardening.distributed): real gloo process groups on the
CPU, against one process with the same seed and global batch."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from core.errors import JobCancelledError
from core.hardening import distributed
from core.hardening.training import train_epochs
from core.names import ProgressFn
from core.pipeline import run
from core.plan import RunPlan
from tests.core.model_files import digits, write_model
from tests.core.test_checkpoint import _spec, _stop_at

EPOCHS = 4
# One process and two add a batch's gradients in a different order (and with 2 threads vs 1):
# float noise, which Adam's steps carry on. Measured on digits: losses within 2e-7 relative,
# weights within 2e-7; the bounds leave room for other CPUs' kernels.
LOSS_RTOL = 1e-4
WEIGHT_ATOL = 1e-4


def _mlp(batchnorm: bool) -> nn.Module:
    torch.manual_seed(0)
    middle: list[nn.Module] = [nn.BatchNorm1d(64)] if batchnorm else []
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 64), *middle, nn.ReLU(), nn.Linear(64, 10))


def _accuracy(model: nn.Module) -> float:
    data = digits()
    model.eval()
    with torch.no_grad():
        return float((model(data.x_test).argmax(1) == data.y_test).float().mean())


def train_digits(
    out_dir: Path, *, on_progress: ProgressFn | None = None, device: str = "cpu"
) -> dict[str, tuple[dict[str, torch.Tensor], list[float], float]]:
    """What a job's hardening does, in small: trainings in a row (without and with BatchNorm),
    then the first stage after the hardening. Every rank runs it (the group's ``rerun``)."""
    data = digits()
    progress = on_progress or (lambda stage, done, total: None)
    plan = RunPlan.resolve(_spec(), dataset="builtin:digits", train_samples=len(data.y_train))
    trained = {}
    for name, batchnorm in (("plain", False), ("batchnorm", True)):
        model = _mlp(batchnorm)
        losses = train_epochs(
            model, data.x_train, data.y_train, F.cross_entropy, epochs=EPOCHS, plan=plan,
            stage="training", generator=torch.Generator().manual_seed(0), on_progress=progress,
            should_cancel=lambda: False,
        )  # fmt: skip
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        trained[name] = (state, losses, _accuracy(model))
    progress("export", 0, 1)  # the hardening ended: ranks other than 0 stop here
    # A training after the group ended runs in this process alone (DDP's hooks are gone).
    assert distributed.current() is None
    after = _mlp(False)
    train_epochs(
        after, data.x_train, data.y_train, F.cross_entropy, epochs=1, plan=plan,
        stage="after", generator=torch.Generator().manual_seed(0), on_progress=progress,
        should_cancel=lambda: False,
    )  # fmt: skip
    return trained


def test_two_processes_train_as_one_with_the_same_seed_and_batch(tmp_path: Path) -> None:
    alone = train_digits(tmp_path / "alone")
    seen: list[str] = []
    with distributed.training_group(2, train_digits, device="cpu") as watched:
        group = distributed.current()
        assert group is not None and (group.rank, group.world) == (0, 2)
        shared = train_digits(
            tmp_path / "shared", on_progress=watched(lambda s, *_: seen.append(s))
        )
    assert distributed.current() is None
    assert "export" in seen and "after" in seen  # progress still reaches the job's callback

    # No BatchNorm: the same training, up to float summation order.
    weights, losses, accuracy = shared["plain"]
    one_weights, one_losses, one_accuracy = alone["plain"]
    assert len(losses) == len(one_losses) == EPOCHS
    assert losses == pytest.approx(one_losses, rel=LOSS_RTOL)
    for name, tensor in one_weights.items():
        assert torch.allclose(weights[name], tensor, atol=WEIGHT_ATOL), name
    assert accuracy == pytest.approx(one_accuracy, abs=0.01)

    # BatchNorm normalises each process's half batch by its own statistics: not the same
    # training, the same result to within a point of test accuracy.
    _, bn_losses, bn_accuracy = shared["batchnorm"]
    _, one_bn_losses, one_bn_accuracy = alone["batchnorm"]
    assert bn_accuracy == pytest.approx(one_bn_accuracy, abs=0.01)
    assert bn_losses[-1] < bn_losses[0]


def test_a_job_resumed_over_two_processes_ends_as_in_one(tmp_path: Path) -> None:
    """The pipeline's option end to end, from a checkpoint: a first attempt in one process
    stopped in the teacher's second epoch; the second attempt over two processes takes the
    teacher's first epoch and its optimizer state from rank 0's checkpoint, trains the rest and
    the student over both, and ends as the job run whole in one process."""
    # No student check: a student that falls short is replaced by one warm-started from the
    # teacher, whose gradient starts at zero, so Adam's first steps follow float noise alone
    # (measured: its losses 6e-5 relative apart after one epoch, the scratch student's 1e-7).
    spec = _spec(teacher_epochs=2, student_epochs=2, distillation={"student_max_drop": None})
    model = write_model("torchscript", tmp_path)
    whole = run(spec, model, None, tmp_path / "whole", device="cpu").report
    first = tmp_path / "attempt-1"
    _, stop = _stop_at("teacher", 30)  # 23 steps an epoch
    with pytest.raises(JobCancelledError):
        run(
            spec, model, None, first / "out", device="cpu", checkpoint_dir=first / "checkpoints",
            checkpoint_every_s=0.0, on_progress=stop,  # type: ignore[arg-type]
        )  # fmt: skip
    second = tmp_path / "attempt-2"
    resumed = run(
        spec, model, None, second / "out", device="cpu", training_processes=2,
        checkpoint_dir=second / "checkpoints", resume_from=first / "checkpoints",
        resumed_attempt=1, checkpoint_every_s=0.0,
    ).report  # fmt: skip
    assert any("after epoch 1" in note for note in resumed.notes), resumed.notes
    assert whole.distillation is not None and resumed.distillation is not None
    for history in ("teacher_loss_history", "student_loss_history"):
        mine, theirs = getattr(resumed.distillation, history), getattr(whole.distillation, history)
        assert len(mine) == len(theirs) == 2
        assert mine == pytest.approx(theirs, rel=LOSS_RTOL), history
    assert resumed.models["student"].clean_accuracy == pytest.approx(
        whole.models["student"].clean_accuracy, abs=0.01
    )
    artifacts = sorted(p.name for p in (second / "out").iterdir())
    assert artifacts == sorted(p.name for p in (tmp_path / "whole").iterdir())


def test_adversarial_training_attacks_each_share_under_ddp(tmp_path: Path) -> None:
    """A loss that attacks the model first (a gradient taken for the inputs only, in eval mode,
    through the DDP-wrapped model) trains over two processes. Each share draws its random
    starts from the same generator state, so it is not the one-process training: noise of a
    random start's size (measured with 3 steps: losses 5e-4 relative apart, the same accuracies)."""
    spec = _spec(method="adversarial", robust={"epochs": 2, "steps": 2, "epsilon": 0.1})
    model = write_model("torchscript", tmp_path)
    one = run(spec, model, None, tmp_path / "one", device="cpu").report
    two = run(spec, model, None, tmp_path / "two", device="cpu", training_processes=2).report
    assert one.robust_training is not None and two.robust_training is not None
    mine, theirs = two.robust_training.loss_history, one.robust_training.loss_history
    assert len(mine) == len(theirs) == 2
    assert mine == pytest.approx(theirs, rel=0.05)
    assert two.models["student"].clean_accuracy == pytest.approx(
        one.models["student"].clean_accuracy, abs=0.02
    )


def _fails_to_load() -> None:
    raise ImportError("the job cannot be loaded here")


class _Unloadable:
    """A job whose replay cannot even be unpickled in the other rank's process."""

    def __reduce__(self) -> tuple[object, tuple[()]]:
        return (_fails_to_load, ())

    def __call__(self, out_dir: Path, *, on_progress: ProgressFn, device: str) -> None:
        pass


def test_a_rank_that_cannot_start_fails_the_training_at_once() -> None:
    # At once: the rendezvous notices the ended process, rank 0 does not wait out the timeout.
    joined = distributed.training_group(2, _Unloadable(), device="cpu")
    with pytest.raises(RuntimeError, match="rank-1 ended .exit code 1. before it joined"), joined:
        pass
    assert distributed.current() is None


def test_one_process_is_no_group_at_all() -> None:
    def progress(stage: str, done: int, total: int) -> None:
        pass

    with distributed.training_group(1, train_digits, device="cpu") as watched:
        assert watched(progress) is progress
        assert distributed.current() is None
