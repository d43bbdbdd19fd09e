"""bench/gpu.py, part (a): our training steps against a minimal plain-PyTorch loop doing the same
work, and each device option (core.compute) switched on and off.

Both sides run the same model, the same generated data tensors (already on the device), batch
size, Adam, losses, seeds and device options, in this process, alternately:

- distillation: the upload's last layer scaled by T, the teacher trained at T on hard labels,
  soft labels, a student (the default output-scale parametrisation: network times T) at T;
- adversarial: PGD adversarial training (L-inf, random start, the inner max in eval mode) and,
  after the epoch, PGD accuracy on the same held-out images (our method's held-out check).

Throughput ratio = plain seconds / our seconds (1.0: no overhead; the issue aims at >= 0.9).
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable
from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bench.distill_overhead import _Upload
from core.compute import Compute
from core.datasets.dataset import Dataset
from core.hardening.distillation import DefensiveDistillation
from core.hardening.robust import AdversarialTraining
from core.hardening.student import DistillationPlan
from core.hardening.training import held_out_split
from core.plan import RunPlan

Step = Callable[[nn.Module, Tensor, Tensor], Tensor]


def synchronized(device: torch.device) -> float:
    """perf_counter once the device has finished what was queued."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def _plain_epochs(
    model: nn.Module,
    x: Tensor,
    targets: Tensor,
    loss_of: Step,
    *,
    epochs: int,
    lr: float,
    batch: int,
    generator: torch.Generator,
    compute: Compute,
) -> None:
    if compute.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator).to(x.device)
        model.train()
        for start in range(0, len(x), batch):
            index = order[start : start + batch]
            inputs = x[index]
            if compute.channels_last:
                inputs = inputs.contiguous(memory_format=torch.channels_last)
            autocast = (
                torch.autocast(x.device.type, dtype=torch.bfloat16)
                if compute.training_precision == "bfloat16"
                else nullcontext()
            )
            with autocast:
                loss = loss_of(model, inputs, targets[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    model.eval()
    if compute.channels_last:
        model.to(memory_format=torch.contiguous_format)


def plain_distillation(upload: _Upload, data: Dataset, plan: RunPlan) -> float:
    """The method as the shortest correct loop; seconds."""
    device, spec = torch.device(plan.device), plan.spec
    started = synchronized(device)
    torch.manual_seed(spec.seed)
    generator = torch.Generator().manual_seed(spec.seed)
    x, y = data.x_train.to(device), data.y_train.to(device)
    temperature = spec.distillation.temperature
    teacher = upload.fresh_copy(reinitialise=False).to(device)
    last = [m for m in teacher.modules() if isinstance(m, nn.Linear)][-1]
    with torch.no_grad():
        last.weight.mul_(temperature)
        last.bias.mul_(temperature)

    def at_temperature(model: nn.Module, inputs: Tensor, target: Tensor) -> Tensor:
        return F.cross_entropy(model(inputs) / temperature, target)

    common = {"batch": plan.batch_size, "generator": generator, "compute": plan.compute}
    schedule = DistillationPlan.resolve(plan)
    _plain_epochs(
        teacher, x, y, at_temperature, epochs=schedule.teacher_epochs,
        lr=schedule.teacher_learning_rate, **common,  # type: ignore[arg-type]
    )  # fmt: skip
    with torch.no_grad():
        logits = torch.cat([teacher(x[i : i + 1024]) for i in range(0, len(x), 1024)])
        soft = torch.softmax(logits / temperature, dim=1)
    network = upload.fresh_copy(reinitialise=True).to(device)

    def student(model: nn.Module, inputs: Tensor, target: Tensor) -> Tensor:
        return F.cross_entropy(model(inputs) * temperature / temperature, target)

    _plain_epochs(
        network, x, soft, student, epochs=schedule.student_epochs, lr=spec.learning_rate,
        **common,  # type: ignore[arg-type]
    )  # fmt: skip
    return synchronized(device) - started


def _plain_pgd(
    model: nn.Module, x: Tensor, y: Tensor, plan: RunPlan, gen: torch.Generator
) -> Tensor:
    robust = plan.spec.robust
    epsilon = plan.spec.robust_epsilon()
    step = robust.step_size or 2.5 * epsilon / robust.steps
    noise = torch.rand(x.shape, generator=gen, device=gen.device).to(x.device)
    x_adv = (x + (2 * noise - 1) * epsilon).clamp(0, 1)
    for _ in range(robust.steps):
        x_adv.requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(model(x_adv), y, reduction="sum"), x_adv)
        x_adv = x_adv.detach() + step * grad.sign()
        x_adv = (x + (x_adv - x).clamp(-epsilon, epsilon)).clamp(0, 1)
    return x_adv.detach()


def plain_adversarial(upload: _Upload, data: Dataset, plan: RunPlan) -> float:
    """PGD adversarial training and the held-out PGD check, as the shortest loop; seconds."""
    device, spec = torch.device(plan.device), plan.spec
    started = synchronized(device)
    torch.manual_seed(spec.seed)
    cpu = torch.Generator().manual_seed(spec.seed)
    gen = torch.Generator(device=device).manual_seed(spec.seed)
    train_rows, held_rows = held_out_split(len(data.y_train), cpu)
    x, y = data.x_train.to(device), data.y_train.to(device)
    model = upload.fresh_copy(reinitialise=False).to(device)

    def adversarial(module: nn.Module, inputs: Tensor, target: Tensor) -> Tensor:
        module.eval()
        x_adv = _plain_pgd(module, inputs, target, plan, gen)
        module.train()
        return F.cross_entropy(module(x_adv), target)

    _plain_epochs(
        model, x[train_rows.to(device)], y[train_rows.to(device)], adversarial,
        epochs=spec.robust.epochs, lr=spec.learning_rate, batch=plan.batch_size,
        generator=cpu, compute=plan.compute,
    )  # fmt: skip
    held_x, held_y = x[held_rows.to(device)], y[held_rows.to(device)]
    for _ in range(spec.robust.epochs):
        robust = model(_plain_pgd(model, held_x, held_y, plan, gen)).argmax(1) == held_y
        float(robust.float().mean())
        copy.deepcopy(model.state_dict())
    return synchronized(device) - started


def ours(method: str) -> Callable[[_Upload, Dataset, RunPlan], float]:
    """Our method through its interface, with a progress callback and a cancel check."""
    harden = DefensiveDistillation() if method == "distillation" else AdversarialTraining()

    def timed(upload: _Upload, data: Dataset, plan: RunPlan) -> float:
        device = torch.device(plan.device)
        started = synchronized(device)
        harden.harden(
            upload,  # type: ignore[arg-type]  # only fresh_copy is used
            data, plan, on_progress=lambda *_: None, should_cancel=lambda: False,
        )  # fmt: skip
        return synchronized(device) - started

    return timed


PLAIN = {"distillation": plain_distillation, "adversarial": plain_adversarial}


def compare(
    method: str, upload: _Upload, data: Dataset, plan: RunPlan, repeats: int
) -> tuple[float, float]:
    """(best plain seconds, best ours seconds) over ``repeats`` alternating runs, after a
    warm-up of each (kernels, allocator, cuDNN autotuning)."""
    plain, mine = PLAIN[method], ours(method)
    torch.backends.cudnn.benchmark = plan.compute.cudnn_benchmark
    plain(upload, data, plan)
    mine(upload, data, plan)
    plain_s, ours_s = [], []
    for repeat in range(repeats):
        if repeat % 2 == 0:
            plain_s.append(plain(upload, data, plan))
            ours_s.append(mine(upload, data, plan))
        else:
            ours_s.append(mine(upload, data, plan))
            plain_s.append(plain(upload, data, plan))
    return min(plain_s), min(ours_s)


def option_variants(device: torch.device) -> dict[str, Compute]:
    """Every option alone and all together, against all off; on the CPU the CUDA-only ones are
    left out (core.compute ignores them there)."""
    off = Compute()
    variants = {"all off (float32)": off, "bfloat16 autocast": Compute("bfloat16")}
    if device.type == "cuda":
        variants["channels_last"] = Compute(channels_last=True)
        variants["cudnn.benchmark"] = Compute(cudnn_benchmark=True)
        variants["all on"] = Compute("bfloat16", True, True)
    return variants


def time_options(upload: _Upload, data: Dataset, plan: RunPlan, repeats: int) -> dict[str, float]:
    """Our distillation's best seconds under each option variant."""
    mine = ours("distillation")
    seconds = {}
    for name, compute in option_variants(torch.device(plan.device)).items():
        varied = dataclasses.replace(plan, compute=compute)
        torch.backends.cudnn.benchmark = compute.cudnn_benchmark
        mine(upload, data, varied)  # warm-up
        seconds[name] = min(mine(upload, data, varied) for _ in range(repeats))
    return seconds
