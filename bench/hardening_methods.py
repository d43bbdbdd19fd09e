"""Every hardening method on the same upload, audited by the autoattack preset (issue: hardening
that holds). One ``core.pipeline.run`` job per method list: the first method's model is exported,
the others are trained and audited beside it on the same samples (report.comparison).

1. The upload: Papernot's MNIST CNN trained at T=1 on builtin:mnist (Adam lr 1e-3, 10 epochs,
   as examples/train_mnist_teacher.py), saved as TorchScript.
2. The job: ``method`` = the methods asked for, ``robust`` as given (default: 5-step PGD
   training, 20 epochs, 5 of them warm-up: about 6 minutes per method on one CPU core; ``--fast``
   for FGSM with a random start), evaluation = the autoattack preset (APGD-CE,
   APGD-T, FAB-T, Square 5,000 queries) at L-inf 0.1/0.2/0.3 on ``--samples`` test images.
3. Printed: per method, clean accuracy, the per-sample worst case over the preset's attacks at
   each epsilon (AutoAttack's robust accuracy), the verdict and the training seconds.

    python bench/hardening_methods.py [--methods adversarial trades ...] [--epochs 20]
        [--samples 200] [--steps 5 | --fast] [--out report.json]

Results: bench/results/hardening_methods.md. torchattacks agrees with the preset within a point
(bench/results/autoattack_check.md).
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import baseline, mnist  # noqa: E402
from core.contract.robust import HARDENING_METHODS  # noqa: E402
from core.contract.spec import HardenSpec  # noqa: E402
from core.pipeline import run  # noqa: E402
from core.report.schema import Report  # noqa: E402


def _rows(report: Report) -> list[tuple[str, float, dict[float, float | None], str, float]]:
    """(method, clean accuracy, worst case by epsilon, verdict, training seconds) per method."""
    timings = report.timings_s
    own_seconds = sum(timings.get(stage, 0.0) for stage in ("teacher", "soft_labels", "student"))
    entries = [
        (report.method, report.models["student"].clean_accuracy, report.verdict, own_seconds)
    ]
    entries += [
        (other.method, other.student.clean_accuracy, other.verdict, other.training_s)
        for other in report.comparison
    ]
    rows = []
    for method, clean, verdict, seconds in entries:
        worst = {
            row.epsilon: row.student_worst_case
            for row in (verdict.strongest if verdict else [])
            if row.norm == "linf"
        }
        rows.append((method, clean, worst, verdict.label if verdict else "-", seconds))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", nargs="+", default=list(HARDENING_METHODS))
    parser.add_argument("--epochs", type=int, default=20, help="robust.epochs")
    parser.add_argument("--warmup", type=int, default=5, help="robust.warmup_epochs")
    parser.add_argument("--fast", action="store_true", help="fast FGSM training instead of PGD")
    parser.add_argument(
        "--pgd", action="store_true", help="PGD training (the default; kept for old command lines)"
    )
    parser.add_argument("--steps", type=int, default=5, help="robust.steps (PGD training)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--samples", type=int, default=200, help="test samples attacked")
    parser.add_argument("--epsilons", nargs="+", type=float, default=[0.1, 0.2, 0.3])
    parser.add_argument("--out", type=Path, help="also write the job's report.json here")
    parser.add_argument(
        "--upload-state",
        type=Path,
        help="a Papernot-CNN state dict to upload instead of the undefended one (e.g. an "
        "adversarially trained model, for robust_distillation with --robust-teacher upload)",
    )
    parser.add_argument(
        "--upload",
        type=Path,
        help="a model file in any format the service takes (e.g. the model.onnx a previous run "
        "kept with --keep-model) to upload instead of the undefended CNN",
    )
    parser.add_argument("--keep-model", type=Path, help="copy the first method's model.onnx here")
    parser.add_argument(
        "--robust-teacher", choices=["adversarial", "upload"], default="adversarial"
    )
    args = parser.parse_args()
    print(
        f"machine: {platform.machine()}, {torch.get_num_threads()} torch threads, torch "
        f"{torch.__version__}, CPU; builtin:mnist (4,000 train / 1,000 test), Papernot's CNN"
    )
    data = mnist()
    upload = baseline(data, epochs=10)
    if args.upload_state:
        upload.load_state_dict(torch.load(args.upload_state, weights_only=True))
    spec = HardenSpec(
        dataset="builtin:mnist",
        method=args.methods,
        batch_size=args.batch_size,
        robust={
            "epochs": args.epochs,
            "warmup_epochs": args.warmup,
            "fast": args.fast and not args.pgd,
            "steps": args.steps,
            "epsilon": max(args.epsilons),
            "teacher": args.robust_teacher,
        },
        evaluation={
            "preset": "autoattack",
            "epsilons_linf": args.epsilons,
            "samples": args.samples,
            "samples_slow": args.samples,
        },
    )
    print("spec:", spec.model_dump_json(include={"method", "robust", "batch_size"}))
    with tempfile.TemporaryDirectory() as tmp:
        model_file = Path(tmp) / "upload.pt"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            torch.jit.save(torch.jit.script(upload), str(model_file))
        started = time.perf_counter()
        stages: list[str] = []

        def show(stage: str, done: int, total: int) -> None:
            if not stages or stages[-1] != stage:  # one line per stage, on stderr
                stages.append(stage)
                print(f"[{time.perf_counter() - started:6.0f} s] {stage}", file=sys.stderr)

        if args.upload:
            model_file = args.upload
        result = run(spec, model_file, None, Path(tmp) / "out", on_progress=show)
        elapsed = time.perf_counter() - started
        if args.keep_model:
            shutil.copyfile(result.artifacts["model.onnx"], args.keep_model)
        if args.out:
            args.out.write_text(result.report.model_dump_json(indent=2))
    report = result.report
    uploaded = report.models["uploaded"].clean_accuracy
    up_worst = {
        row.epsilon: row.uploaded_worst_case
        for row in (report.verdict.strongest if report.verdict else [])
        if row.norm == "linf"
    }
    header = " | ".join(f"AA ε={eps:g}" for eps in args.epsilons)
    print(f"| method | clean | {header} | verdict | training s |")
    print("|---|---|" + "---|" * len(args.epsilons) + "---|---|")

    def pct(value: float | None) -> str:
        return "-" if value is None else f"{100 * value:.1f}%"

    cells = " | ".join(pct(up_worst.get(eps)) for eps in args.epsilons)
    name = "upload" if args.upload_state or args.upload else "upload (undefended)"
    print(f"| {name} | {pct(uploaded)} | {cells} | - | - |")
    for method, clean, worst, label, seconds in _rows(report):
        cells = " | ".join(pct(worst.get(eps)) for eps in args.epsilons)
        print(f"| {method} | {pct(clean)} | {cells} | {label} | {seconds:.0f} |")
    print(f"whole job: {elapsed:.0f} s; notes: {json.dumps(report.notes)}")


if __name__ == "__main__":
    main()
