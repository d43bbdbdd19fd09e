"""Our attacks against IBM ART's on the same models, samples and parameters.

Papernot's MNIST CNN trained on builtin:mnist (T=1) and its distilled student (T=100); the same
test samples; FGSM, PGD, JSMA and CW-L2 from core.audit.attacks beside ART's FastGradientMethod,
ProjectedGradientDescent, SaliencyMapMethod and CarliniL2Method. Success counts only samples the
model classified correctly before the attack, for both libraries. Writes bench/results/vs_art.md.

    .venv/bin/python bench/vs_art.py [--epochs 20] [--samples 100] [--art-cw-samples 100]
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import Timer, accuracy, baseline, distilled, mnist  # noqa: E402
from core.audit.attacks.base import random_targets, seeded_generator  # noqa: E402
from core.audit.attacks.cw import carlini_wagner_l2  # noqa: E402
from core.audit.attacks.gradient import fgsm, perturbation_size, pgd  # noqa: E402
from core.audit.attacks.jsma import changed_fraction, jsma  # noqa: E402
from core.audit.evaluate import draw_samples  # noqa: E402

EPS = 0.3
PGD_STEPS = 40
PGD_STEP_SIZE = 2.5 * EPS / PGD_STEPS
JSMA_GAMMA = 0.145
CW = {"binary_steps": 5, "iterations": 100, "learning_rate": 0.01, "initial_const": 0.01}


def _art_classifier(model: nn.Module) -> object:
    from art.estimators.classification import PyTorchClassifier

    return PyTorchClassifier(
        model=model,
        loss=nn.CrossEntropyLoss(),
        input_shape=(1, 28, 28),
        nb_classes=10,
        clip_values=(0.0, 1.0),
        device_type="cpu",
    )


def _art_attacks(
    model: nn.Module,
) -> dict[str, Callable[[np.ndarray, np.ndarray | None], np.ndarray]]:
    from art.attacks.evasion import (
        CarliniL2Method,
        FastGradientMethod,
        ProjectedGradientDescent,
        SaliencyMapMethod,
    )

    clf = _art_classifier(model)
    fgsm = FastGradientMethod(clf, norm=np.inf, eps=EPS, batch_size=100)
    pgd = ProjectedGradientDescent(
        clf, norm=np.inf, eps=EPS, eps_step=PGD_STEP_SIZE, max_iter=PGD_STEPS,
        num_random_init=1, batch_size=100, verbose=False,
    )  # fmt: skip
    jsma = SaliencyMapMethod(clf, theta=1.0, gamma=JSMA_GAMMA, batch_size=100, verbose=False)
    cw = CarliniL2Method(
        clf, confidence=0.0, targeted=False, learning_rate=CW["learning_rate"],
        binary_search_steps=CW["binary_steps"], max_iter=CW["iterations"],
        initial_const=CW["initial_const"], batch_size=100, verbose=False,
    )  # fmt: skip
    return {
        "FGSM (CE, L-inf 0.3)": lambda x, y: fgsm.generate(x),
        "PGD (CE, L-inf 0.3, 40 steps)": lambda x, y: pgd.generate(x),
        "JSMA (targeted, 14.5%)": lambda x, y: jsma.generate(x, y),
        "CW-L2 (5x100)": lambda x, y: cw.generate(x),
    }


# Rows that compare another variant of ours with an ART run already made: reuse that run.
ART_RUN_OF = {
    "JSMA, ART's rule (targeted, 14.5%)": "JSMA (targeted, 14.5%)",
    "CW-L2 (5x100), ours at lr 0.1": "CW-L2 (5x100)",
}


def _ours(model: nn.Module, targets: Tensor) -> dict[str, Callable[[Tensor, Tensor], Tensor]]:
    def jsma_with(saliency: Literal["pairs", "target"]) -> Callable[[Tensor, Tensor], Tensor]:
        def run(x: Tensor, y: Tensor) -> Tensor:
            return jsma(
                model, x, y, num_classes=10, outputs="logits", targets=targets[: len(x)],
                max_fraction=JSMA_GAMMA, saliency=saliency,
            ).adversarial  # fmt: skip

        return run

    return {
        "FGSM (CE, L-inf 0.3)": lambda x, y: fgsm(model, x, y, epsilon=EPS).adversarial,
        "PGD (CE, L-inf 0.3, 40 steps)": lambda x, y: (
            pgd(model, x, y, epsilon=EPS, steps=PGD_STEPS, step_size=PGD_STEP_SIZE).adversarial
        ),
        # ART's SaliencyMapMethod differentiates the classifier's outputs: here the logits.
        "JSMA (targeted, 14.5%)": jsma_with("pairs"),
        # Like for like: ART keeps only the target output's gradient and takes its top-2 features.
        "JSMA, ART's rule (targeted, 14.5%)": jsma_with("target"),
        "CW-L2 (5x100)": lambda x, y: carlini_wagner_l2(model, x, y, **CW).adversarial,
        # Our default Adam step (0.1); ART's learning_rate only seeds its own step-size search.
        "CW-L2 (5x100), ours at lr 0.1": lambda x, y: (
            carlini_wagner_l2(model, x, y, **{**CW, "learning_rate": 0.1}).adversarial
        ),
    }


def _outcome(model: nn.Module, x: Tensor, y: Tensor, x_adv: Tensor, target: Tensor | None,
             name: str) -> tuple[float, Tensor, Tensor | None]:  # fmt: skip
    """(success rate over correctly classified, success mask, perturbation size per sample)."""
    with torch.no_grad():
        correct = model(x).argmax(1) == y
        pred = model(x_adv).argmax(1)
    success = correct & ((pred == target) if target is not None else (pred != y))
    rate = float(success.sum() / correct.sum().clamp_min(1))
    if not name.startswith(("JSMA", "CW")):
        return rate, success, None
    sizes = (
        changed_fraction(x_adv, x) if name.startswith("JSMA") else perturbation_size(x_adv, x, "l2")
    )
    return rate, success, sizes


def _median(sizes: Tensor | None, mask: Tensor) -> float | None:
    return None if sizes is None or not mask.any() else float(sizes[mask].median())


def _run_model(model_name: str, args: argparse.Namespace) -> tuple[float, list[tuple]]:
    """Every attack of ours and ART's on one model, in this process (one torch thread)."""
    torch.set_num_threads(args.threads)
    data = mnist()
    if model_name.startswith("undistilled"):
        model = baseline(data, args.epochs)
    else:
        model = distilled(data, 100.0, args.epochs)
    x, y = draw_samples(data, args.samples, seed=0)
    targets = random_targets(y, 10, seeded_generator(0))
    acc = accuracy(model, data.x_test, data.y_test)
    print(f"{model_name}: test accuracy {acc:.4f}", flush=True)
    ours, art = _ours(model, targets), _art_attacks(model)
    art_runs: dict[str, tuple[Tensor, float]] = {}
    rows = []
    for attack_name in ours:
        n = args.art_cw_samples if attack_name.startswith("CW") else len(x)
        xs, ys = x[:n], y[:n]
        target = targets[:n] if attack_name.startswith("JSMA") else None
        print(f"{model_name}: running {attack_name} on {n} samples", flush=True)
        with Timer() as t_ours:
            adv_ours = ours[attack_name](xs, ys)
        one_hot = np.eye(10, dtype=np.float32)[target.numpy()] if target is not None else None
        art_name = ART_RUN_OF.get(attack_name, attack_name)
        if art_name not in art_runs:
            with Timer() as t_art:
                adv = torch.from_numpy(art[art_name](xs.numpy(), one_hot))
            art_runs[art_name] = (adv, t_art.seconds)
        adv_art, art_seconds = art_runs[art_name]
        r_ours, ok_ours, size_ours = _outcome(model, xs, ys, adv_ours, target, attack_name)
        r_art, ok_art, size_art = _outcome(model, xs, ys, adv_art, target, attack_name)
        # Medians over the samples both fooled as well: a library that fools only the easy
        # samples otherwise looks as if it needed smaller perturbations.
        both = ok_ours & ok_art
        rows.append((model_name, attack_name, n, r_ours, r_art,
                     _median(size_ours, ok_ours), _median(size_art, ok_art),
                     _median(size_ours, both), _median(size_art, both), int(both.sum()),
                     t_ours.seconds, art_seconds))  # fmt: skip
        print(rows[-1], flush=True)
    return acc, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument(
        "--art-cw-samples", type=int, default=100, help="CW-L2 on this prefix (ART's is slow)"
    )
    parser.add_argument("--out", type=Path, default=Path("bench/results/vs_art.md"))
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads per model")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = mnist()
    names = ("undistilled (T=1)", "distilled (T=100)")
    # Train (or load from the cache) here first, so the two processes below do not both train.
    baseline(data, args.epochs), distilled(data, 100.0, args.epochs)
    # One process per model, one torch thread each: on 2 shared cores two threads of one
    # process spin against each other (10x slower measured). Ours and ART's attacks on one
    # model run in the same process, so their seconds compare.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(len(names), mp_context=context) as pool:
        results = list(pool.map(_run_model, names, [args] * len(names)))
    rows = [row for _, model_rows in results for row in model_rows]
    accs = {name: acc for name, (acc, _) in zip(names, results, strict=True)}
    _write(args.out, rows, args, accs)


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


# Rows that are not like for like with ART's attack: shown, but not held to the bar.
DIFFERENT_ALGORITHM = {
    "JSMA (targeted, 14.5%)": "the paper's pair rule (alpha > 0, beta < 0), while ART implements "
    "a simplified saliency, matched by the row 'JSMA, ART's rule'",
}


def _criteria(rows: list[tuple]) -> list[str]:
    """Each row against the bench's bar: success within 5 points of ART's, or higher at no
    larger median perturbation (over the samples both fooled) for the minimal-perturbation
    attacks; CW-L2 at least 10x faster."""
    verdicts = []
    for model, attack, _, r_o, r_a, _, _, q_o, q_a, n_both, s_o, s_a in rows:
        diff = 100 * (r_o - r_a)
        minimal = attack.startswith(("JSMA", "CW"))
        smaller = n_both == 0 or (q_o is not None and q_a is not None and q_o <= q_a)
        ok = abs(diff) <= 5 or (minimal and diff > 0 and smaller)
        text = f"{model}, {attack}: success {diff:+.1f} pts vs ART"
        if minimal and n_both:
            text += f", paired median {q_o:.3f} vs {q_a:.3f} on {n_both} samples"
        if attack in DIFFERENT_ALGORITHM:
            text += f" -> not held to the bar: {DIFFERENT_ALGORITHM[attack]}"
        else:
            text += f" -> {'met' if ok else 'MISSED'}"
        if attack.startswith("CW"):
            speed = s_a / max(s_o, 1e-9)
            text += f"; {speed:.1f}x ART's speed -> {'met' if speed >= 10 else 'MISSED'}"
        verdicts.append(text)
    return verdicts


def _write(out: Path, rows: list[tuple], args: argparse.Namespace, accs: dict[str, float]) -> None:
    lines = [
        "# Our attacks vs IBM ART (same models, samples, parameters)",
        "",
        f"Papernot MNIST CNN on builtin:mnist, {args.epochs} epochs (Adam), test accuracy: "
        + ", ".join(f"{k} {100 * v:.2f}%" for k, v in accs.items())
        + f". {args.samples} test samples (seed 0); CW-L2 on the first {args.art_cw_samples}. "
        "Success = fooled / correctly classified before the attack. JSMA: same random targets "
        "for both, ours on logits (ART differentiates the classifier's outputs, the logits). "
        "CW-L2: ours at lr 0.01 (the number ART gets; in ART it only seeds a step-size search "
        "with up to 5 doublings) and at our default 0.1; both rows compare with one ART run. "
        "Perturbation: JSMA fraction of features changed, CW L2; median over each library's "
        "successes, and (paired) over the samples both fooled. Seconds on this machine (2 CPU "
        "cores, one process per model with one torch thread each), ours and ART's in the same "
        "process.",
        "",
        "| model | attack | n | ours success | ART success | diff (pts) | ours median pert. | "
        "ART median pert. | paired medians ours / ART (n) | ours s | ART s | ART s / ours s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for model, attack, n, r_o, r_a, p_o, p_a, q_o, q_a, n_both, s_o, s_a in rows:
        paired = "-" if p_o is None and p_a is None else f"{_fmt(q_o)} / {_fmt(q_a)} ({n_both})"
        lines.append(
            f"| {model} | {attack} | {n} | {100 * r_o:.1f}% | {100 * r_a:.1f}% | "
            f"{100 * (r_o - r_a):+.1f} | {_fmt(p_o)} | {_fmt(p_a)} | {paired} | {s_o:.2f} | "
            f"{s_a:.2f} | {s_a / max(s_o, 1e-9):.1f}x |"
        )
    lines += ["", "## Against the issue's criteria", ""]
    lines += [f"- {line}" for line in _criteria(rows)]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print(out.read_text())


if __name__ == "__main__":
    main()
