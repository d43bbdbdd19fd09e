"""Overhead of core.hardening.distillation (run as the pipeline runs it, through the hardening
method interface and the run plan) against a minimal hand-written PyTorch loop doing the same work.

Both sides, in this one process and alternately: scale the upload's last layer by T, train the
teacher at T on hard labels, compute soft labels, train a re-initialised student at T on them.
Same model, same data tensors, epochs, batch size, optimiser (Adam), losses and seeds. The pipeline
side also checks cancellation and reports progress every step, as a real job does.

    python bench/distill_overhead.py [--dataset builtin:digits] [--arch papernot_mnist]

The last line is ``ratio pipeline/plain: X.XX``: best pipeline time over best plain time (the
minimum is the run least disturbed by other load on the machine).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from core.contract.spec import HardenSpec
from core.datasets.dataset import Dataset
from core.datasets.references import load_dataset
from core.device import pick_device
from core.hardening.distillation import DefensiveDistillation
from core.hardening.student import DistillationPlan
from core.intake.zoo import build_zoo_model
from core.plan import RunPlan


@dataclass
class _Upload:
    """Just enough of core.intake.upload.LoadedModel for distill(): the loader is not timed."""

    module: nn.Module
    builder: nn.Module

    def fresh_copy(self, *, reinitialise: bool) -> nn.Module:
        if not reinitialise:
            return copy.deepcopy(self.module)
        fresh = copy.deepcopy(self.builder)
        for layer in fresh.modules():
            if hasattr(layer, "reset_parameters"):
                layer.reset_parameters()
        return fresh


def _plain_train(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    temperature: float,
    epochs: int,
    batch_size: int,
    generator: torch.Generator,
) -> None:
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(inputs), generator=generator).to(inputs.device)
        for start in range(0, len(inputs), batch_size):
            index = order[start : start + batch_size]
            loss = F.cross_entropy(model(inputs[index]) / temperature, targets[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    model.eval()


def plain(upload: _Upload, data: Dataset, plan: RunPlan) -> float:
    """The reference: the method written as the shortest correct PyTorch loop. Returns seconds."""
    spec, device = plan.spec, torch.device(plan.device)
    started = time.perf_counter()
    torch.manual_seed(spec.seed)
    generator = torch.Generator().manual_seed(spec.seed)
    inputs, labels = data.x_train.to(device), data.y_train.to(device)
    teacher = upload.fresh_copy(reinitialise=False).to(device)
    last = [m for m in teacher.modules() if isinstance(m, nn.Linear)][-1]
    with torch.no_grad():
        last.weight.mul_(spec.distillation.temperature)
        last.bias.mul_(spec.distillation.temperature)
    temperature, batch = spec.distillation.temperature, plan.batch_size
    schedule = DistillationPlan.resolve(plan)
    _plain_train(teacher, inputs, labels, temperature, schedule.teacher_epochs, batch, generator)
    with torch.no_grad():
        logits = torch.cat([teacher(inputs[i : i + 1024]) for i in range(0, len(inputs), 1024)])
        soft_labels = torch.softmax(logits / temperature, dim=1)
    student = upload.fresh_copy(reinitialise=True).to(device)
    epochs = schedule.student_epochs
    _plain_train(student, inputs, soft_labels, temperature, epochs, batch, generator)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - started


def pipeline(upload: _Upload, data: Dataset, plan: RunPlan) -> float:
    """core.hardening.distillation.DefensiveDistillation.harden with a progress callback and a
    cancel check. Returns seconds."""
    device = torch.device(plan.device)
    started = time.perf_counter()
    steps = [0]

    def on_progress(stage: str, done: int, total: int) -> None:
        steps[0] = done

    DefensiveDistillation().harden(
        upload,  # type: ignore[arg-type]  # only fresh_copy is used
        data,
        plan,
        on_progress=on_progress,
        should_cancel=lambda: False,
    )
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="builtin:digits")
    parser.add_argument("--arch", default="papernot_mnist")
    parser.add_argument("--teacher-epochs", type=int, default=1)
    parser.add_argument("--student-epochs", type=int, default=2, help="0: the spec's auto rule")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default=None)
    args = parser.parse_args()
    device = pick_device(args.device)
    data = load_dataset(args.dataset)
    torch.manual_seed(0)
    model = build_zoo_model(args.arch, num_classes=data.num_classes, input_shape=data.input_shape)
    upload = _Upload(module=model.eval(), builder=model)
    spec = HardenSpec(
        dataset=args.dataset,
        teacher_epochs=args.teacher_epochs,
        student_epochs=args.student_epochs or None,
        batch_size=args.batch_size,
        evaluation={"enabled": False},
    )
    plan = RunPlan.resolve(
        spec, dataset=args.dataset, train_samples=len(data.y_train), device=str(device)
    )
    schedule = DistillationPlan.resolve(plan)
    print(
        f"{args.arch} on {args.dataset} ({plan.train_samples} train), {plan.device}, "
        f"teacher {schedule.teacher_epochs} + student {schedule.student_epochs} epochs, "
        f"batch {plan.batch_size}"
    )
    plain(upload, data, plan)  # warm-up: allocator, kernels, first-call costs
    plain_times: list[float] = []
    pipeline_times: list[float] = []
    for repeat in range(args.repeats):
        # Alternate the order so drift in machine load hits both sides alike.
        if repeat % 2 == 0:
            plain_s, pipeline_s = plain(upload, data, plan), pipeline(upload, data, plan)
        else:
            pipeline_s, plain_s = pipeline(upload, data, plan), plain(upload, data, plan)
        plain_times.append(plain_s)
        pipeline_times.append(pipeline_s)
        print(
            f"repeat {repeat + 1}: plain {plain_s:.2f}s  pipeline {pipeline_s:.2f}s  "
            f"ratio {pipeline_s / plain_s:.3f}"
        )
    print(
        f"median: plain {statistics.median(plain_times):.2f}s  "
        f"pipeline {statistics.median(pipeline_times):.2f}s"
    )
    print(f"ratio pipeline/plain: {min(pipeline_times) / min(plain_times):.2f}")


if __name__ == "__main__":
    main()
