"""The real ``core.pipeline.run`` on tiny inputs, recorded and steerable (test helper).

A job on builtin:digits with the specs below takes well under a second on one CPU core, so the
service's tests run the product's own pipeline instead of a stand-in.
"""

from __future__ import annotations

import functools
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from core.names import CancelFn, ProgressFn

# The models are tiny: one thread is faster than two fighting over the shared cores (as in
# tests/core/robust_models.py).
torch.set_num_threads(1)

#: One teacher epoch, one student epoch (12 optimizer steps each on digits), no attacks.
QUICK_SPEC: dict[str, Any] = {
    "dataset": "builtin:digits",
    "teacher_epochs": 1,
    "student_epochs": 1,
    "evaluation": {"enabled": False},
}

#: An audit small enough for the service's tests (about a second on digits): two attacks, one
#: of them past the masking, at one budget per norm, on a few samples. It decides a verdict.
TINY_EVALUATION: dict[str, Any] = {
    "attacks": ["fgsm_ce", "pgd_linf_margin", "pgd_l2_margin"],
    "epsilons_linf": [0.1],
    "epsilons_l2": [1.0],
    "samples": 20,
    "samples_slow": 10,
    "pgd_steps": 3,
}


@functools.cache
def digits_torchscript() -> bytes:
    """The bytes of a TorchScript file: tests.core.model_files' digits mlp, trained."""
    from tests.core.model_files import write_model

    with tempfile.TemporaryDirectory() as folder:
        return write_model("torchscript", Path(folder)).read_bytes()


@dataclass(frozen=True)
class Call:
    model: bytes  # the model file's bytes as the worker handed them over
    dataset: Path | None
    device: str | None
    spec: Any


@dataclass
class RecordingPipeline:
    """``core.pipeline.run`` itself, every argument forwarded unchanged.

    Records each call, every progress report the core makes and each result. ``hook(stage,
    done, total)`` runs before a report is forwarded to the worker's callback: it may change the
    job (cancel or delete it) or raise, and the exception then comes out of the real pipeline at
    that point, as one from the core's own code would.
    """

    hook: ProgressFn | None = None
    calls: list[Call] = field(default_factory=list)
    progress: list[tuple[str, int, int]] = field(default_factory=list)
    results: list[Any] = field(default_factory=list)

    def __call__(
        self,
        spec: Any,
        model_file: Path,
        dataset: Path | None,
        out_dir: Path,
        *,
        on_progress: ProgressFn,
        should_cancel: CancelFn,
        device: str | None,
        **compute: Any,  # precision, channels_last, cudnn_benchmark: passed on as they came
    ) -> Any:
        from core.pipeline import run

        self.calls.append(Call(Path(model_file).read_bytes(), dataset, device, spec))

        def progress(stage: str, done: int, total: int) -> None:
            self.progress.append((stage, done, total))
            if self.hook is not None:
                self.hook(stage, done, total)
            on_progress(stage, done, total)

        result = run(
            spec,
            model_file,
            dataset,
            out_dir,
            on_progress=progress,
            should_cancel=should_cancel,
            device=device,
            **compute,
        )
        self.results.append(result)
        return result


def without_seconds(value: object) -> object:
    """A report section with every timing left out: what two runs of one job must share."""
    if isinstance(value, dict):
        return {k: without_seconds(v) for k, v in value.items() if "seconds" not in k}
    if isinstance(value, list):
        return [without_seconds(v) for v in value]
    return value
