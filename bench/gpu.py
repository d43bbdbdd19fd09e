"""Is a GPU job spending its time in kernels? Ratios measured in one run (issue 14).

(a) Our distillation and adversarial-training steps against a minimal plain-PyTorch loop doing
    the same work (bench/gpu_training.py), on the zoo's ResNet-18 with generated CIFAR-10-shaped
    data; then our distillation with each device option (core.compute) on and off.
(b) Our PGD, APGD and CW-L2 against torchattacks' on the same model, samples and parameters
    (bench/gpu_attacks.py); skipped, saying so, where torchattacks is not installed (it is in
    the ``bench`` extra, not in ``dev``).
(c) The whole default job on builtin:mnist, end to end through core.pipeline.run, in seconds,
    with its stage timings and the evaluation's sample count.

    python bench/gpu.py                  # on a GPU worker: sized for under 8 minutes
    python bench/gpu.py --tiny           # any CPU, seconds (tests/bench/test_gpu_bench.py)
    python bench/gpu.py --json out.json  # also write the figures as JSON

Every figure is printed with the device it was measured on; nothing is compared to numbers
measured elsewhere.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import train  # noqa: E402
from bench.distill_overhead import _Upload  # noqa: E402
from bench.gpu_attacks import (  # noqa: E402
    AttackSettings,
    compare_attacks,
    torchattacks_available,
)
from bench.gpu_training import compare, time_options  # noqa: E402
from core.compute import Compute  # noqa: E402
from core.contract.spec import HardenSpec  # noqa: E402
from core.datasets.dataset import Dataset
from core.datasets.references import load_dataset  # noqa: E402
from core.device import pick_device, supports_bfloat16  # noqa: E402
from core.intake.zoo import build_zoo_model  # noqa: E402
from core.pipeline import run  # noqa: E402
from core.plan import RunPlan  # noqa: E402


@dataclass(frozen=True)
class Size:
    """How big each part runs."""

    arch: str  # the zoo architecture of parts (a) and (b)
    upload_epochs: int  # how long the upload of (a) and (b) trains on the generated data
    images: int  # generated training images (and as many test images / 4)
    image_side: int
    batch: int
    student_epochs: int
    repeats: int
    attack_samples: int
    attack: AttackSettings
    job_dataset: str
    job_spec: dict[str, Any]


FULL = Size(
    arch="resnet18",
    upload_epochs=1,
    images=10_240, image_side=32, batch=256, student_epochs=2, repeats=3, attack_samples=1000,
    attack=AttackSettings(), job_dataset="builtin:mnist", job_spec={},
)  # fmt: skip
# Seconds on a 2-core CPU: every part runs, with Papernot's small CNN on 8x8 inputs, few steps.
TINY = Size(
    arch="papernot_mnist",
    upload_epochs=100,
    images=48, image_side=8, batch=16, student_epochs=1, repeats=1, attack_samples=8,
    attack=AttackSettings(epsilon=0.3, step_size=0.1, steps=3, cw_steps=3),
    job_dataset="builtin:digits",
    job_spec={
        "teacher_epochs": 0, "student_epochs": 1,
        "evaluation": {
            "attacks": ["fgsm_ce", "pgd_linf_margin", "cw_l2"], "samples": 8, "samples_slow": 4,
            "pgd_steps": 2, "cw_binary_steps": 1, "cw_iterations": 2,
            "epsilons_linf": [0.1], "epsilons_l2": [1.0],
        },
    },
)  # fmt: skip


def generated_cifar(size: Size, device: torch.device) -> Dataset:
    """CIFAR-10-shaped images a ResNet can learn: a fixed random pattern per class plus noise."""
    gen = torch.Generator().manual_seed(0)
    shape = (3, size.image_side, size.image_side)
    patterns = torch.rand((10, *shape), generator=gen)

    def draw(count: int) -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.randint(0, 10, (count,), generator=gen)
        noise = torch.rand((count, *shape), generator=gen)
        return (0.8 * patterns[labels] + 0.2 * noise).clamp(0, 1), labels

    x_train, y_train = draw(size.images)
    x_test, y_test = draw(max(size.images // 4, size.attack_samples))
    return Dataset(
        x_train.to(device), y_train.to(device), x_test, y_test, 10,
        [str(k) for k in range(10)], "generated:cifar10-shaped", shape,
    )  # fmt: skip


def trained_upload(data: Dataset, device: torch.device, size: Size) -> _Upload:
    """The zoo's ``size.arch`` trained on the generated data (an upload to harden)."""
    torch.manual_seed(0)
    model = build_zoo_model(size.arch, num_classes=10, input_shape=data.input_shape).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    batches = [
        torch.randperm(len(data.x_train)).split(size.batch) for _ in range(size.upload_epochs)
    ]
    for index in (index for epoch in batches for index in epoch):
        index = index.to(device)
        loss = F.cross_entropy(model(data.x_train[index]), data.y_train[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    builder = build_zoo_model(size.arch, num_classes=10, input_shape=data.input_shape)
    return _Upload(module=model.eval(), builder=builder.to(device))


def training_part(size: Size, device: torch.device, out: dict[str, Any]) -> _Upload:
    data = generated_cifar(size, device)
    upload = trained_upload(data, device, size)
    compute = Compute.resolve(str(device), bfloat16_supported=supports_bfloat16(device))
    spec = HardenSpec.model_validate(
        {
            "dataset": "builtin:digits",  # not loaded: the generated data stands in for it
            "batch_size": size.batch, "teacher_epochs": 1, "student_epochs": size.student_epochs,
            "robust": {"epsilon": 8 / 255, "epochs": 1, "warmup_epochs": 0},
        }
    )  # fmt: skip
    plan = RunPlan.resolve(
        spec, dataset="generated", train_samples=len(data.y_train), device=str(device),
        compute=compute,
    )  # fmt: skip
    out["training"] = {"compute": asdict(compute), "images": size.images, "batch": size.batch}
    for method in ("distillation", "adversarial"):
        plain_s, ours_s = compare(method, upload, data, plan, size.repeats)
        out["training"][method] = {"plain_s": plain_s, "ours_s": ours_s, "ratio": plain_s / ours_s}
        print(
            f"(a) {method:12s} plain {plain_s:7.2f}s  ours {ours_s:7.2f}s  "
            f"throughput ours/plain {plain_s / ours_s:.2f}  ({asdict(compute)})",
            flush=True,
        )
    options = time_options(upload, data, plan, size.repeats)
    base = options["all off (float32)"]
    out["options"] = {name: {"s": s, "speedup": base / s} for name, s in options.items()}
    for name, seconds in options.items():
        print(f"(a) distillation, {name:18s} {seconds:7.2f}s  speed-up {base / seconds:.2f}")
    return upload


def attack_part(size: Size, device: torch.device, upload: _Upload, out: dict[str, Any]) -> None:
    data = generated_cifar(size, device)
    x = data.x_test[: size.attack_samples].to(device)
    y = data.y_test[: size.attack_samples].to(device)
    if not torchattacks_available():
        print("(b) torchattacks is not installed (bench extra): timing ours only")
    rows = compare_attacks(upload.module, x, y, size.attack, size.repeats)
    out["attacks"] = {"samples": len(x), "settings": asdict(size.attack), "rows": []}
    for row in rows:
        out["attacks"]["rows"].append({**asdict(row), "speed_ratio": row.speed_ratio})
        peer = (
            f"torchattacks {row.peer_s:.3f}s ({row.peer_success:.0%})  speed ratio "
            f"{row.speed_ratio:.2f}"
            if row.peer_s is not None and row.speed_ratio is not None
            else "torchattacks: not run"
        )
        print(f"(b) {row.name:6s} ours {row.ours_s:.3f}s ({row.ours_success:.0%})  {peer}")


def job_part(size: Size, device: torch.device, out: dict[str, Any]) -> None:
    """The default job (FULL: the spec's defaults) on an upload trained here, end to end."""
    with tempfile.TemporaryDirectory() as folder:
        model_file = Path(folder) / "upload.pt"
        # The upload: Papernot's CNN on builtin:mnist (the zoo's MLP on the tiny run's digits),
        # trained here on the device, as bench/common.py trains its baseline.
        data = load_dataset(size.job_dataset)
        arch = "papernot_mnist" if size.job_dataset == "builtin:mnist" else "mlp"
        torch.manual_seed(0)
        model = build_zoo_model(arch, num_classes=10, input_shape=data.input_shape).to(device)
        x, y = data.x_train.to(device), data.y_train.to(device)
        train(model, x, y, temperature=1.0, epochs=5, seed=0)
        sample = torch.zeros(1, *data.input_shape)
        torch.jit.save(torch.jit.trace(model.cpu().eval(), sample), str(model_file))
        spec = HardenSpec.model_validate({"dataset": size.job_dataset, **size.job_spec})
        started = time.perf_counter()
        report = run(spec, model_file, None, Path(folder) / "out", device=str(device)).report
        seconds = time.perf_counter() - started
    samples = report.evaluation.samples if report.evaluation else 0
    out["job"] = {
        "dataset": size.job_dataset, "seconds": seconds, "timings_s": report.timings_s,
        "evaluation_samples": samples, "device": report.device,
    }  # fmt: skip
    stages = ", ".join(f"{k} {v:.1f}s" for k, v in report.timings_s.items())
    print(f"(c) default job on {size.job_dataset}: {seconds:.1f}s end to end ({stages}); "
          f"{samples} evaluation samples, on {report.device}")  # fmt: skip


def machine(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} ({device})"
    return f"CPU {platform.machine()}, {torch.get_num_threads()} torch threads"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="small sizes: any CPU, seconds")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: auto)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--parts", default="abc", help="which parts to run (default: abc)")
    args = parser.parse_args(argv)
    device = pick_device(args.device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    size = TINY if args.tiny else FULL
    out: dict[str, Any] = {
        "machine": machine(device), "device": str(device), "tiny": args.tiny,
        "torch": torch.__version__, "python": sys.version.split()[0],
        "torchattacks": torchattacks_available(),
    }  # fmt: skip
    print(f"bench/gpu.py on {out['machine']}, torch {torch.__version__}, {size.arch}", flush=True)
    started = time.perf_counter()
    upload = None
    if "a" in args.parts or "b" in args.parts:
        upload = training_part(size, device, out) if "a" in args.parts else None
        if "b" in args.parts:
            if upload is None:
                upload = trained_upload(generated_cifar(size, device), device, size)
            attack_part(size, device, upload, out)
    if "c" in args.parts:
        job_part(size, device, out)
    out["seconds"] = time.perf_counter() - started
    print(f"total {out['seconds']:.0f}s")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2, default=str))
    return out


if __name__ == "__main__":
    main()
