"""The hot loops never wait for the device step by step: training (every method) and the attacks
read a tensor back to the host a fixed number of times per epoch or per attack, however many
steps they take. Counted by wrapping every Tensor method that copies a value to the host."""

from __future__ import annotations

import dataclasses
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from core.audit.attacks.apgd import apgd
from core.audit.attacks.cw import carlini_wagner_l2
from core.audit.attacks.gradient import pgd
from core.contract.spec import HardenSpec
from core.datasets.dataset import Dataset
from core.hardening.registry import METHODS
from core.intake.upload import load_model
from core.plan import RunPlan
from tests.core.model_files import digits, trained_mlp, write_model

# Each one blocks until the device has computed the value (on CUDA a stream synchronisation).
HOST_READS = ("item", "cpu", "tolist", "numpy", "__float__", "__int__", "__bool__")
BATCH = 16


TORCH_PACKAGE = str(Path(torch.__file__).parent)


@contextmanager
def counting_host_reads() -> Iterator[Counter[str]]:
    """Count calls of the HOST_READS methods and of ``nonzero`` (a sync too: its size is data)
    made by code outside torch. Torch's own are left out: its optimisers read their step
    counters, which live on the CPU whatever the device (no wait for the GPU)."""
    counts: Counter[str] = Counter()
    originals = {name: getattr(torch.Tensor, name) for name in (*HOST_READS, "nonzero")}

    def counted(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(self: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            if not sys._getframe(1).f_code.co_filename.startswith(TORCH_PACKAGE):
                counts[name] += 1
            return original(self, *args, **kwargs)

        return wrapper

    for name, original in originals.items():
        setattr(torch.Tensor, name, counted(name, original))
    try:
        yield counts
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)


def _reads(counts: Counter[str]) -> int:
    return sum(counts[name] for name in HOST_READS)


def _train_one_epoch(method: str, steps: int, tmp_path: Path) -> Counter[str]:
    full = digits()
    data = dataclasses.replace(
        full, x_train=full.x_train[: steps * BATCH], y_train=full.y_train[: steps * BATCH]
    )
    uploaded = load_model(
        write_model("torchscript", tmp_path), num_classes=10, input_shape=data.input_shape
    )
    spec = HardenSpec.model_validate(
        {
            "dataset": "builtin:digits",
            "method": method,
            "batch_size": BATCH,
            "teacher_epochs": 1,
            "student_epochs": 1,
            "robust": {"epsilon": 0.1, "epochs": 1, "warmup_epochs": 0, "steps": 3},
            "evaluation": {"enabled": False},
        }
    )
    # Robust methods hold a tenth out (their held-out check): train on the same step count.
    robust = method != "distillation"
    if robust:
        data = _padded_for_held_out(full, steps)
    plan = RunPlan.resolve(spec, dataset=spec.dataset, train_samples=len(data.y_train))
    with counting_host_reads() as counts:
        METHODS[method].harden(
            uploaded, data, plan, on_progress=lambda *_: None, should_cancel=lambda: False
        )
    return counts


def _padded_for_held_out(full: Dataset, steps: int) -> Dataset:
    # held_out_split keeps count // 10 (at most 256) aside: 10 * BATCH * steps / 9 images leave
    # steps * BATCH to train on, give or take one batch.
    count = (steps * BATCH * 10) // 9
    return dataclasses.replace(full, x_train=full.x_train[:count], y_train=full.y_train[:count])


@pytest.mark.parametrize("method", ["distillation", "adversarial", "trades", "robust_distillation"])
def test_training_reads_the_device_per_epoch_not_per_step(method: str, tmp_path: Path) -> None:
    few, many = (_train_one_epoch(method, steps, tmp_path) for steps in (5, 20))
    assert _reads(few) == _reads(many), (few, many)
    assert _reads(few) <= 8  # the epochs' losses, the soft labels' entropy, the held-out check
    # Only the held-out check (a 3-step PGD after each epoch; robust_distillation trains twice)
    # counts its active samples: at most 4 per check, however long the epoch.
    assert max(few["nonzero"], many["nonzero"]) <= 8


def _model_and_batch() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    data = digits()
    model = trained_mlp()
    x, y = data.x_test[:64], data.y_test[:64]
    return model, x, y


@pytest.mark.parametrize("attack", ["pgd", "apgd", "cw_l2"])
def test_an_attack_reads_the_device_per_run_not_per_step(attack: str) -> None:
    model, x, y = _model_and_batch()

    def run(steps: int) -> Counter[str]:
        with counting_host_reads() as counts:
            # A budget too small to fool anything: every step runs on every sample.
            if attack == "pgd":
                pgd(model, x, y, epsilon=1e-4, steps=steps)
            elif attack == "apgd":
                apgd(model, x, y, epsilon=1e-4, steps=steps)
            else:
                carlini_wagner_l2(model, x, y, binary_steps=1, iterations=steps, learning_rate=1e-6)
        return counts

    few, many = run(5), run(20)
    assert _reads(few) == _reads(many), (few, many)
    if attack == "cw_l2":
        assert few["nonzero"] == many["nonzero"]
    else:
        # By design, PGD and APGD drop fooled samples from the batch: one count of the samples
        # still active per step, the one wait they keep (it is what makes strong attacks on
        # weak models cheap).
        assert many["nonzero"] - few["nonzero"] == 15
