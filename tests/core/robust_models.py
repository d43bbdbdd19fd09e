"""Tiny digits classifiers for the robustness tests: an undefended MLP and a T=100 distilled
student (Papernot et al. 2016 recipe, Adam), trained in a few seconds and cached per process."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import Tensor, nn

# These models are tiny: one thread is faster than two fighting over shared cores (measured 12x
# faster for a whole evaluation on this 2-core machine under load).
torch.set_num_threads(1)


@dataclass(frozen=True)
class Digits:
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor


@lru_cache(maxsize=1)
def digits() -> Digits:
    """builtin:digits as 1x8x8 images in [0, 1], a fixed 75/25 split."""
    bunch = load_digits()
    x = torch.tensor(bunch.data, dtype=torch.float32).view(-1, 1, 8, 8) / 16.0
    y = torch.tensor(bunch.target, dtype=torch.int64)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    x, y = x[order], y[order]
    cut = int(0.75 * len(x))
    return Digits(x[:cut], y[:cut], x[cut:], y[cut:])


def mlp(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))


def _train(
    model: nn.Module, x: Tensor, targets: Tensor, temperature: float, epochs: int, lr: float = 3e-3
) -> None:
    # Soft targets (rows summing to 1) or hard labels; loss on softmax(z / T) either way.
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(1)
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=gen).split(64):
            logits = model(x[idx]) / temperature
            target = targets[idx]
            if target.dim() == 1:
                loss = F.cross_entropy(logits, target)
            else:
                loss = -(target * logits.log_softmax(1)).sum(1).mean()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()


@lru_cache(maxsize=1)
def undefended() -> nn.Module:
    """An MLP trained at T=1 (~95% test accuracy)."""
    data = digits()
    model = mlp(0)
    _train(model, data.x_train, data.y_train, 1.0, 30)
    return model.eval()


@lru_cache(maxsize=4)
def distilled(temperature: float = 100.0) -> nn.Module:
    """Teacher at T on hard labels, student at T on its soft labels, deployed at T=1."""
    data = digits()
    teacher = mlp(1)
    # lr 1e-2: at T=100 the gradient is divided by T (the design notes' Adam finding).
    _train(teacher, data.x_train, data.y_train, temperature, 30, lr=1e-2)
    with torch.no_grad():
        soft = (teacher(data.x_train) / temperature).softmax(1)
    student = mlp(2)
    _train(student, data.x_train, soft, temperature, 30, lr=1e-2)
    return student.eval()


def accuracy(model: nn.Module, x: Tensor, y: Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())
