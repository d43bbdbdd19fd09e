"""Big datasets stay on disk: training draws its rows by index (no copy of the training set),
and a large normalised copy goes to a scratch file, equal to the in-memory one."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from core.contract.spec import HardenSpec, Normalization
from core.hardening import normalization
from core.hardening.normalization import normalized_inputs
from core.hardening.training import train_epochs
from core.plan import RunPlan


def test_training_on_rows_sees_those_rows_only_each_once_per_epoch() -> None:
    inputs = torch.arange(40, dtype=torch.float32).view(40, 1, 1, 1)
    targets = torch.zeros(40, dtype=torch.int64)
    rows = torch.arange(0, 40, 2)  # the even rows; the odd ones are held out
    seen: list[int] = []
    model = nn.Sequential(nn.Flatten(), nn.Linear(1, 2))

    def batch_loss(module: nn.Module, x: Tensor, target: Tensor) -> Tensor:
        seen.extend(int(v) for v in x.flatten())
        return nn.functional.cross_entropy(module(x), target)

    spec = HardenSpec(batch_size=7)
    plan = RunPlan.resolve(spec, dataset="test", train_samples=40)
    losses = train_epochs(
        model, inputs, targets, batch_loss=batch_loss, epochs=2, plan=plan, stage="student",
        generator=torch.Generator().manual_seed(0), on_progress=lambda *a: None,
        should_cancel=lambda: False, rows=rows,
    )  # fmt: skip
    assert len(losses) == 2
    evens = list(range(0, 40, 2))
    assert sorted(seen[:20]) == evens and sorted(seen[20:]) == evens


def test_a_large_normalised_copy_goes_to_a_scratch_file(monkeypatch) -> None:
    generator = torch.Generator().manual_seed(0)
    inputs = torch.rand(50, 3, 4, 4, generator=generator)
    settings = Normalization(mean=[0.5, 0.4, 0.3], std=[0.2, 0.25, 0.3])
    in_memory = normalized_inputs(inputs, settings)
    monkeypatch.setattr(normalization, "IN_MEMORY_BYTES", 1024)
    monkeypatch.setattr(normalization, "NORMALIZE_CHUNK_BYTES", 7 * 3 * 4 * 4 * 4)  # 7 rows
    before = Path("/proc/self/maps").read_text().count("harden-images-")
    on_disk = normalized_inputs(inputs, settings)
    assert torch.allclose(on_disk, in_memory)
    assert Path("/proc/self/maps").read_text().count("harden-images-") > before
