"""The default robustness evaluation (EvaluationSpec defaults) on Papernot's MNIST CNN and its
T=100 student: wall time per attack and in total, and the verdict it reaches.

Writes bench/results/eval_default.md. Uses bench.common's cached models (30 epochs).

    .venv/bin/python bench/eval_default.py [--epochs 30] [--threads 2]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import Timer, baseline, distilled, mnist  # noqa: E402
from core.audit.evaluate import evaluate  # noqa: E402
from core.contract.spec import HardenSpec  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("bench/results/eval_default.md"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = mnist()
    uploaded, student = baseline(data, args.epochs), distilled(data, 100.0, args.epochs)
    spec = HardenSpec(dataset="builtin:mnist")
    start = time.perf_counter()
    with Timer() as timer:
        evaluation, verdict = evaluate(
            uploaded, student, data, spec, device="cpu",
            on_progress=lambda stage, done, total: print(
                f"{stage} {done}/{total} {time.perf_counter() - start:.0f}s", flush=True
            ) if done % 100 == 0 else None,
        )  # fmt: skip
    ev = spec.evaluation
    lines = [
        "# Default evaluation on the MNIST CNN pair (T=1 upload vs T=100 student)",
        "",
        f"EvaluationSpec defaults: {ev.samples} samples ({ev.samples_slow} for JSMA/CW/Square), "
        f"L-inf eps {evaluation.epsilons_linf}, L2 eps {evaluation.epsilons_l2}, "
        f"{ev.pgd_steps} PGD/APGD steps, "
        f"CW {ev.cw_binary_steps}x{ev.cw_iterations}, Square {ev.square_queries} queries. "
        f"Total wall time **{timer.seconds:.0f} s** on CPU ({args.threads} torch threads, "
        "2 shared cores).",
        "",
        f"**Verdict: {verdict.label}.** {verdict.headline}",
        "",
        *[f"- {sentence}" for sentence in verdict.evidence],
        "",
        "| attack | uploaded s | student s | uploaded success (per budget) | "
        "student success (per budget) |",
        "|---|---|---|---|---|",
    ]
    up = {a.attack: a for a in evaluation.models["uploaded"].attacks}
    for summary in evaluation.models["student"].attacks:
        u = up[summary.attack]

        def rates(s: object) -> str:
            return ", ".join(
                f"{'-' if p.epsilon is None else f'{p.epsilon:g}'}: {100 * p.success_rate:.0f}%"
                for p in s.points  # type: ignore[attr-defined]
            )

        lines.append(
            f"| {summary.title} | {sum(p.seconds for p in u.points):.1f} | "
            f"{sum(p.seconds for p in summary.points):.1f} | {rates(u)} | {rates(summary)} |"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print(args.out.read_text())


if __name__ == "__main__":
    main()
