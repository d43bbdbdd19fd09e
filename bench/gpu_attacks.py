"""bench/gpu.py, part (b): our PGD, APGD and CW-L2 against torchattacks' on the same model,
samples and parameters. Speed ratio = torchattacks' seconds / ours (> 1: ours is faster),
meaningful when both reach the same success rate (printed beside it).

The parameters are those both libraries can express alike: PGD L-inf from a random start with a
fixed step; APGD-CE (L-inf, one restart, momentum 0.75, rho 0.75); CW-L2 with one constant c, no
binary search (torchattacks' CW has none). Ours stops attacking a sample once it is fooled;
torchattacks runs every step on every sample: that is part of what is measured.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from bench.gpu_training import synchronized
from core.audit.attacks.apgd import apgd
from core.audit.attacks.cw import carlini_wagner_l2
from core.audit.attacks.gradient import pgd


@dataclass(frozen=True)
class AttackSettings:
    epsilon: float = 8 / 255
    step_size: float = 2 / 255
    steps: int = 10
    cw_const: float = 1.0
    cw_steps: int = 50
    cw_lr: float = 0.01


@dataclass(frozen=True)
class AttackTiming:
    name: str
    ours_s: float
    ours_success: float
    peer_s: float | None = None
    peer_success: float | None = None

    @property
    def speed_ratio(self) -> float | None:
        return None if self.peer_s is None else self.peer_s / self.ours_s


def torchattacks_available() -> bool:
    return importlib.util.find_spec("torchattacks") is not None


def _ours(name: str, s: AttackSettings) -> Callable[[nn.Module, Tensor, Tensor], Tensor]:
    def run(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        if name == "pgd":
            result = pgd(model, x, y, epsilon=s.epsilon, steps=s.steps, step_size=s.step_size)
        elif name == "apgd":
            result = apgd(model, x, y, epsilon=s.epsilon, loss="ce", steps=s.steps)
        else:
            result = carlini_wagner_l2(
                model, x, y, binary_steps=1, iterations=s.cw_steps, learning_rate=s.cw_lr,
                initial_const=s.cw_const,
            )  # fmt: skip
        return result.success

    return run


def _peer(name: str, s: AttackSettings) -> Callable[[nn.Module, Tensor, Tensor], Tensor]:
    import torchattacks

    def run(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        if name == "pgd":
            attack = torchattacks.PGD(model, eps=s.epsilon, alpha=s.step_size, steps=s.steps)
        elif name == "apgd":
            attack = torchattacks.APGD(
                model, norm="Linf", eps=s.epsilon, steps=s.steps, n_restarts=1, loss="ce", seed=0
            )
        else:
            attack = torchattacks.CW(model, c=s.cw_const, kappa=0, steps=s.cw_steps, lr=s.cw_lr)
        x_adv = attack(x, y)
        with torch.no_grad():
            correct = model(x).argmax(1) == y
            return correct & (model(x_adv).argmax(1) != y)

    return run


def _best(
    run: Callable[[nn.Module, Tensor, Tensor], Tensor],
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    repeats: int,
) -> tuple[float, float]:
    """(best seconds, success rate among the correctly classified) after a warm-up run."""
    run(model, x, y)
    best, success = float("inf"), torch.zeros(len(x), dtype=torch.bool)
    for _ in range(repeats):
        started = synchronized(x.device)
        success = run(model, x, y)
        best = min(best, synchronized(x.device) - started)
    with torch.no_grad():
        correct = int((model(x).argmax(1) == y).sum())
    return best, float(success.sum()) / max(correct, 1)


def compare_attacks(
    model: nn.Module, x: Tensor, y: Tensor, settings: AttackSettings, repeats: int
) -> list[AttackTiming]:
    """Each attack, ours and (when installed) torchattacks', on the same model and samples."""
    model.eval()
    peers = torchattacks_available()
    rows = []
    for name in ("pgd", "apgd", "cw_l2"):
        ours_s, ours_success = _best(_ours(name, settings), model, x, y, repeats)
        if not peers:
            rows.append(AttackTiming(name, ours_s, ours_success))
            continue
        peer_s, peer_success = _best(_peer(name, settings), model, x, y, repeats)
        rows.append(AttackTiming(name, ours_s, ours_success, peer_s, peer_success))
    return rows
