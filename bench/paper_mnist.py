"""Papernot et al. 2016's MNIST table re-made on builtin:mnist, with the attacks that see through.

For T in {1, 2, 5, 10, 20, 40, 100}: clean accuracy of the distilled student (deployed at T=1),
JSMA-on-softmax success (the paper's metric), the mean L1 norm of the softmax input-gradient (the
paper's "adversarial gradient"), and beside them CW-L2 and APGD-DLR success. The paper (full
MNIST) reports JSMA success 95.89% -> 0.45% at T=100 and clean accuracy 99.51% -> 99.05%.

    .venv/bin/python bench/paper_mnist.py [--quick]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import Timer, accuracy, baseline, distilled, mnist  # noqa: E402
from core.audit.attacks.apgd import apgd  # noqa: E402
from core.audit.attacks.base import AttackResult  # noqa: E402
from core.audit.attacks.cw import carlini_wagner_l2  # noqa: E402
from core.audit.attacks.gradient import perturbation_size  # noqa: E402
from core.audit.attacks.jsma import jsma  # noqa: E402
from core.audit.evaluate import draw_samples, gradient_amplitude  # noqa: E402

TEMPERATURES = (1.0, 2.0, 5.0, 10.0, 20.0, 40.0, 100.0)


def _rate(result: AttackResult) -> float:
    return float(result.success.sum() / result.correct_before.sum().clamp_min(1))


def measure(model: nn.Module, x: torch.Tensor, y: torch.Tensor, args: argparse.Namespace) -> dict:
    """The table's columns for one model on the samples ``x``."""
    saliency = jsma(model, x, y, num_classes=10, outputs="softmax", max_fraction=0.145)
    cw = carlini_wagner_l2(
        model, x, y, binary_steps=args.cw_binary_steps, iterations=args.cw_iterations
    )
    cw_l2 = perturbation_size(cw.adversarial, x, "l2")[cw.success]
    auto_pgd = apgd(model, x, y, epsilon=args.epsilon, loss="dlr", steps=args.apgd_steps)
    grads = gradient_amplitude(model, x, y)
    with torch.no_grad():
        mean_logit = float(model(x).abs().mean())
    return {
        "jsma": _rate(saliency),
        "grad_softmax": grads.softmax_l1_mean,
        "grad_softmax_median": grads.softmax_l1_median,
        "grad_margin": grads.margin_l1_mean,
        "cw": _rate(cw),
        "cw_median_l2": float(cw_l2.median()) if len(cw_l2) else None,
        "apgd_dlr": _rate(auto_pgd),
        "mean_abs_logit": mean_logit,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer epochs and samples")
    parser.add_argument("--epsilon", type=float, default=0.3, help="APGD-DLR L-inf budget")
    parser.add_argument("--out-dir", type=Path, default=Path("bench/results"))
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.epochs = 10 if args.quick else 30
    samples = 50 if args.quick else 100
    args.cw_binary_steps, args.cw_iterations = (5, 50) if args.quick else (5, 100)
    args.apgd_steps = 20 if args.quick else 40
    data = mnist()
    x, y = draw_samples(data, samples, seed=0)
    rows = []
    with Timer() as total:
        model = baseline(data, args.epochs)
        rows.append(
            ("undistilled", accuracy(model, data.x_test, data.y_test), measure(model, x, y, args))
        )
        print(rows[-1], flush=True)
        for temperature in TEMPERATURES:
            model = distilled(data, temperature, args.epochs)
            rows.append((f"T={temperature:g}", accuracy(model, data.x_test, data.y_test),
                         measure(model, x, y, args)))  # fmt: skip
            print(rows[-1], flush=True)
    suffix = "_quick" if args.quick else ""
    _write_table(args.out_dir / f"paper_mnist{suffix}.md", rows, args, samples, total.seconds)
    _plot(args.out_dir / f"paper_mnist{suffix}.png", rows)


def _write_table(
    out: Path, rows: list, args: argparse.Namespace, samples: int, seconds: float
) -> None:
    def pct(v: float) -> str:
        return f"{100 * v:.1f}%"

    lines = [
        "# Defensive distillation on builtin:mnist: the paper's table and the attacks beside it",
        "",
        "Papernot MNIST CNN, builtin:mnist (4,000 train / 1,000 test images), "
        f"{args.epochs} epochs Adam per model{' (--quick)' if args.quick else ''}; "
        f"{samples} test samples (seed 0). "
        f"JSMA on softmax: targeted (random wrong class), 14.5% budget. CW-L2: "
        f"{args.cw_binary_steps}x{args.cw_iterations}, kappa 0. APGD-DLR: L-inf eps "
        f"{args.epsilon:g}, {args.apgd_steps} steps. Success = fooled / correctly classified. "
        "Gradient: mean L1 norm of the input-gradient of the true class's softmax (the paper's "
        "adversarial gradient) and of the logit margin. "
        f"Total {seconds:.0f} s (training included) on 2 shared CPU cores.",
        "",
        "Paper (full MNIST): JSMA success 95.89% -> 0.45% at T=100; accuracy 99.51% -> 99.05%.",
        "",
        "| model | clean acc. | JSMA-softmax success | softmax grad L1 mean / median "
        "| margin grad L1 mean "
        "| mean abs logit | CW-L2 success | CW median L2 | APGD-DLR success |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, acc, m in rows:
        median = "-" if m["cw_median_l2"] is None else f"{m['cw_median_l2']:.2f}"
        lines.append(
            f"| {name} | {pct(acc)} | {pct(m['jsma'])} | {m['grad_softmax']:.3g} / "
            f"{m['grad_softmax_median']:.3g} | "
            f"{m['grad_margin']:.3g} | {m['mean_abs_logit']:.3g} | {pct(m['cw'])} | {median} | "
            f"{pct(m['apgd_dlr'])} |"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print(out.read_text())


def _plot(out: Path, rows: list) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    distilled_rows = [r for r in rows if r[0].startswith("T=")]
    temps = [float(r[0][2:]) for r in distilled_rows]
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for key, label in (
        ("jsma", "JSMA on softmax (paper)"),
        ("cw", "CW-L2"),
        ("apgd_dlr", "APGD-DLR"),
    ):
        left.plot(temps, [100 * r[2][key] for r in distilled_rows], marker="o", label=label)
    left.set_xscale("log")
    left.set_xlabel("distillation temperature T")
    left.set_ylabel("attack success (%)")
    left.set_ylim(-2, 102)
    left.legend()
    left.grid(alpha=0.3)
    for key, label in (
        ("grad_softmax", "softmax, mean (paper)"),
        ("grad_softmax_median", "softmax, median"),
        ("grad_margin", "logit margin, mean"),
    ):
        right.plot(temps, [max(r[2][key], 1e-30) for r in distilled_rows], marker="o", label=label)
    right.set_xscale("log")
    right.set_yscale("log")
    right.set_xlabel("distillation temperature T")
    right.set_ylabel("L1 input-gradient norm")
    right.legend()
    right.grid(alpha=0.3)
    figure.savefig(out, dpi=90, bbox_inches="tight")
    plt.close(figure)


if __name__ == "__main__":
    main()
