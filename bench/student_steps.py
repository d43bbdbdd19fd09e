"""How many student optimizer steps defensive distillation needs at T=100 (the former auto rule;
bench/student_accuracy.py measures the current default).

At temperature T the student's gradient is divided by T, so what it needs is a number of Adam
steps, not of epochs: a small training set gives few steps per epoch. This trains an upload at
T=1 on ``--dataset``, then runs ``core.pipeline.run`` (evaluation off) once per ``--epochs``
value, every other setting at the spec's defaults (T=100, Adam lr 1e-3, batch 128, 2 teacher
epochs), and prints a markdown table of student steps against test accuracy.

    python bench/student_steps.py [--arch papernot_mnist] [--epochs 30 60 90] [--seeds 0 1]

Its measurements, and the auto default chosen from them, are in bench/results/student_steps.md.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

from core.contract.spec import HardenSpec
from core.contract.training_cost import steps_per_epoch
from core.datasets.dataset import Dataset
from core.datasets.references import load_dataset
from core.intake.zoo import build_zoo_model
from core.pipeline import run


def _upload(data: Dataset, arch: str, epochs: int, directory: Path) -> Path:
    """``arch`` trained at T=1 (Adam lr 1e-3, batch 128), saved as TorchScript."""
    torch.manual_seed(0)
    model = build_zoo_model(arch, num_classes=data.num_classes, input_shape=data.input_shape)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(epochs):
        for index in torch.randperm(len(data.x_train), generator=generator).split(128):
            loss = F.cross_entropy(model(data.x_train[index]), data.y_train[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    path = directory / f"{arch}.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(model.eval()), str(path))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="builtin:digits")
    parser.add_argument("--arch", default="papernot_mnist")
    parser.add_argument("--upload-epochs", type=int, default=30)
    parser.add_argument("--teacher-epochs", type=int, default=None)
    parser.add_argument("--epochs", type=int, nargs="+", default=[30, 60, 90, 120, 180])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = load_dataset(args.dataset)
    batch_size = HardenSpec().batch_size
    batches = steps_per_epoch(len(data.y_train), batch_size)
    print(
        f"{args.arch} on {args.dataset}: {len(data.y_train)} train / {len(data.y_test)} test, "
        f"{batches} steps per epoch at batch {batch_size}, upload trained {args.upload_epochs} "
        f"epochs at T=1, {args.threads} torch thread(s)\n"
    )
    print("| student epochs | steps | seed | uploaded | teacher | student | gap (points) | s |")
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        directory = Path(folder)
        model_file = _upload(data, args.arch, args.upload_epochs, directory)
        for epochs in args.epochs:
            for seed in args.seeds:
                values: dict[str, object] = {
                    "dataset": args.dataset,
                    "student_epochs": epochs,
                    "seed": seed,
                    "evaluation": {"enabled": False},
                }
                if args.teacher_epochs is not None:
                    values["teacher_epochs"] = args.teacher_epochs
                spec = HardenSpec.model_validate(values)
                started = time.perf_counter()
                report = run(spec, model_file, None, directory / "out", device="cpu").report
                seconds = time.perf_counter() - started
                acc = {name: m.clean_accuracy for name, m in report.models.items()}
                gap = 100 * (acc["uploaded"] - acc["student"])
                print(
                    f"| {epochs} | {report.distillation.student_steps} | {seed} | "
                    f"{100 * acc['uploaded']:.1f}% | {100 * acc['teacher']:.1f}% | "
                    f"{100 * acc['student']:.1f}% | {gap:.1f} | {seconds:.0f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
