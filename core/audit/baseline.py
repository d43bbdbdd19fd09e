"""A baseline beside the job's model: the same attacks, budgets and samples, once per setting.

A job that names a baseline (core/contract/baseline.py: a previous job's model.onnx or an MLflow
champion) has it attacked exactly as its own hardened model was (core.audit.evaluate's
``attack_like_student``), and the two compared sample by sample (core.report.comparison).

The baseline's file is hostile input like any upload: it is loaded by the same intake
(core.intake.upload: format sniffing, operator allowlists, no pickle) inside the same confined
child as the rest of the pipeline.

Attacking a baseline costs as much as attacking the new model, and a champion is compared with
every candidate, so its outcomes are cached under a key of everything they depend on: the
baseline file's sha256, the resolved audit settings, the samples and labels, the input range and
normalisation, the device type, and, when a transfer attack runs, the upload's adversarials it
replays. The cache is read from a folder the caller names (readable to the confined child) and a
new entry is written into the job's output folder; the worker moves it into the cache
(worker/runner.py), so the child needs no write access outside its job.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from core.audit.baseline_input import CACHE_ENTRY, Baseline, cache_entry_document, read_cached
from core.audit.evaluate import Audit, attack_like_student
from core.contract.certification import Certification
from core.contract.corruptions import CorruptionRobustness
from core.contract.spec import HardenSpec
from core.datasets.dataset import Dataset
from core.hardening.normalization import normalized_inputs, with_normalization
from core.intake.upload import check_model_io, load_model
from core.modules import set_training_mode
from core.names import CancelFn, ProgressFn
from core.report.comparison import (
    CertifiedComparison,
    ComparisonToBaseline,
    CorruptionComparison,
    compare,
)


def _digest(tensor: torch.Tensor) -> str:
    return hashlib.sha256(tensor.detach().cpu().contiguous().numpy().tobytes()).hexdigest()


def cache_key(model_sha256: str, spec: HardenSpec, done: Audit, labels: torch.Tensor) -> str:
    """Everything a baseline's per-sample outcomes depend on, hashed."""
    upload = done.upload
    transfer = hashlib.sha256()
    for (attack, epsilon), adversarial in sorted(
        upload.transfer_sources.items(), key=lambda item: (item[0][0], item[0][1] or 0.0)
    ):
        transfer.update(f"{attack}:{epsilon}:{_digest(adversarial)}".encode())
    parts = {
        "model": model_sha256,
        "settings": upload.settings.model_dump(mode="json"),
        "samples": _digest(upload.samples),
        "labels": _digest(labels),
        "input_range": list(spec.input_range),
        "normalization": spec.normalization.model_dump() if spec.normalization else None,
        "device": upload.samples.device.type,
        "transfer": transfer.hexdigest(),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


@dataclass
class BaselineRun:
    """A baseline compared with the job's model: the comparison so far (clean and robust), the
    cache entry written (None: read from the cache), and the baseline itself, taking raw inputs
    (its normalisation in front), for the later stages' figures (corruptions, certificates)."""

    comparison: ComparisonToBaseline
    cache_entry: Path | None
    model: nn.Module


def compare_with_baseline(
    baseline: Baseline,
    data: Dataset,
    spec: HardenSpec,
    done: Audit,
    out_dir: Path,
    *,
    on_progress: ProgressFn | None = None,
    should_cancel: CancelFn | None = None,
) -> BaselineRun:
    """The job's model against ``baseline`` on ``done``'s samples (see BaselineRun)."""
    device = done.upload.samples.device
    loaded = load_model(
        baseline.model_file,
        architecture=spec.architecture,
        num_classes=data.num_classes,
        input_shape=data.input_shape,
    )
    check_model_io(
        loaded.module, normalized_inputs(data.x_test[:2], spec.normalization), data.num_classes
    )
    module = loaded.module.to(device)
    set_training_mode(module, False)
    model = with_normalization(module, spec.normalization)
    key = cache_key(loaded.sha256, spec, done, data.y_test)
    outcomes = read_cached(baseline.cache_dir, key)
    entry = None
    if outcomes is None:
        outcomes = attack_like_student(
            model, data, spec, done.upload, on_progress=on_progress, should_cancel=should_cancel
        )
        entry = out_dir / CACHE_ENTRY
        entry.write_text(cache_entry_document(key, outcomes))
    comparison = compare(
        done.student_outcomes, outcomes, label=baseline.label, sha256=loaded.sha256,
        cached=entry is None,
    )  # fmt: skip
    return BaselineRun(comparison, entry, model)


def with_corruptions(
    comparison: ComparisonToBaseline, cor: CorruptionRobustness
) -> ComparisonToBaseline:
    """``comparison`` with the corruption figures of a corruptions section measured with the
    baseline in the upload's place (``uploaded``: the baseline, ``student``: the job's model)."""
    figures = CorruptionComparison(
        samples=cor.samples,
        new_accuracy=cor.mean_corruption_accuracy["student"],
        baseline_accuracy=cor.mean_corruption_accuracy["uploaded"],
        difference=-cor.drop_points / 100,
        noise=cor.noise_points / 100,
    )
    return comparison.model_copy(update={"corruptions": figures})


def with_certificates(
    comparison: ComparisonToBaseline, job: Certification, baseline: Certification
) -> ComparisonToBaseline:
    """``comparison`` with the certified accuracy per radius of the job's model (from the job's
    certification) and of the baseline (certified alike: same images, noise and settings)."""
    new, theirs = job.models["student"], baseline.models["baseline"]
    rows = [
        CertifiedComparison(
            radius=mine.radius,
            images=job.samples,
            new_certified_accuracy=mine.certified_accuracy,
            baseline_certified_accuracy=other.certified_accuracy,
            difference=mine.certified_accuracy - other.certified_accuracy,
        )  # fmt: skip
        for mine, other in zip(new.certified, theirs.certified, strict=True)
    ]
    return comparison.model_copy(update={"certified": rows})
