"""The robustness audit: every attack against the uploaded model and the student, side by side.

Samples are drawn once from the test split with the spec's seed and shared by both models (the
slow attacks use a prefix of them). What each attack is and how one run of it is called live in
:mod:`core.audit.registry`; the verdict is decided in :mod:`core.audit.verdict`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from core.audit.attacks.base import AttackResult, margin
from core.audit.registry import REGISTRY, Attack
from core.audit.runs import AttackCall, norm_budgets, perturbation_sizes
from core.audit.schema import (
    AttackPoint,
    AttackSummary,
    Evaluation,
    GradientAmplitude,
    ModelRobustness,
    Verdict,
)
from core.audit.verdict import decide
from core.audit.worst_case import SampleOutcomes
from core.contract.evaluation import AttackName, EvaluationSpec
from core.contract.evaluation_cost import audit_passes, run_passes
from core.contract.spec import HardenSpec
from core.datasets.dataset import Dataset
from core.device import pick_device
from core.errors import JobCancelledError
from core.names import CancelFn, ProgressFn
from core.report.comparison import PerSampleOutcomes


@dataclass
class _Progress:
    """Turns the attacks' per-step hooks into ``on_progress("evaluate", done, total)`` calls
    and cancellation checks, counted in model passes on one sample
    (core.contract.evaluation_cost.run_passes) over every run of the audit, so that the
    fraction grows with the work done: an APGD-T run weighs its ``pgd_steps x targets`` steps
    on every sample, an FGSM run its one, a Square query a third of a step. A run that stops
    early (every sample fooled) counts its planned passes as done when it returns."""

    on_progress: ProgressFn
    should_cancel: CancelFn
    total: float  # the passes of every run planned
    done: float = 0.0  # the passes of the runs finished
    run: float = 0.0  # the planned passes of the run under way
    last: int = field(default=-1)

    def start_run(self, passes: float) -> None:
        self.run = passes

    def hook(self, step: int, total: int) -> None:
        if self.should_cancel():
            raise JobCancelledError(
                "the job was cancelled during the robustness evaluation",
                hint="submit it again to restart; nothing of this run is kept",
            )
        fraction = min(max(step, 0), total) / total if total > 0 else 0.0
        self._report(self.done + self.run * fraction)

    def finish_run(self) -> None:
        self.done += self.run
        self.run = 0.0
        self.hook(0, 1)

    def skip(self, passes: float) -> None:
        """Passes planned but not run here (the upload's half reused from an earlier audit)."""
        self.done += passes

    def complete(self) -> None:
        """Every run returned: the stage is at its total (the sums of floats may differ)."""
        self._report(self.total)

    def _report(self, done: float) -> None:
        total = round(self.total)
        passes = min(round(done), total)
        if passes != self.last:
            self.last = passes
            self.on_progress("evaluate", passes, total)


def _run_passes(attack: Attack, ev: EvaluationSpec, x: Tensor, num_classes: int) -> float:
    """The planned passes of one run of ``attack`` on the samples ``x``."""
    features = x[0].numel() if len(x) else 1
    return len(x) * run_passes(attack.name, ev, features=features, classes=num_classes)


def draw_samples(data: Dataset, count: int, seed: int) -> tuple[Tensor, Tensor]:
    """``count`` test samples, the same for every model, chosen with ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    index = torch.randperm(len(data.x_test), generator=gen)[: min(count, len(data.x_test))]
    return data.x_test[index], data.y_test[index]


def gradient_amplitude(model: nn.Module, x: Tensor, labels: Tensor) -> GradientAmplitude:
    """Per-sample L1 norms of d softmax(z)_y / dx (the paper's adversarial gradient) and of
    d margin / dx. Samples are independent in eval mode, so one backward of the sum suffices."""
    x = x.detach().requires_grad_(True)
    logits = model(x)
    probs = logits.softmax(1).gather(1, labels[:, None]).sum()
    (g_soft,) = torch.autograd.grad(probs, x, retain_graph=True)
    (g_margin,) = torch.autograd.grad(margin(logits, labels).sum(), x)
    soft = g_soft.flatten(1).abs().sum(1).double().cpu()
    marg = g_margin.flatten(1).abs().sum(1).double().cpu()
    return GradientAmplitude(
        softmax_l1_mean=float(soft.mean()),
        softmax_l1_median=float(soft.median()),
        margin_l1_mean=float(marg.mean()),
        margin_l1_median=float(marg.median()),
        softmax_l1=[float(v) for v in soft],
        margin_l1=[float(v) for v in marg],
    )


def _point(
    result: AttackResult, epsilon: float | None, seconds: float, sizes: Tensor | None = None
) -> AttackPoint:
    correct = int(result.correct_before.sum())
    fooled = int(result.success.sum())
    n = len(result.success)
    median = mean = None
    if sizes is not None and fooled:
        chosen = sizes[result.success].double()
        median, mean = float(chosen.median()), float(chosen.mean())
    return AttackPoint(
        epsilon=epsilon,
        samples=n,
        correct_before=correct,
        success_rate=fooled / correct if correct else 0.0,
        robust_accuracy=(correct - fooled) / n,
        median_perturbation=median,
        mean_perturbation=mean,
        seconds=seconds,
    )


def _thresholded(result: AttackResult, sizes: Tensor, epsilon: float) -> AttackPoint:
    """A minimum-norm attack (CW-L2) read at budget ``epsilon``: only successes within it count."""
    within = AttackResult(
        result.adversarial, result.success & (sizes <= epsilon), result.correct_before
    )
    return _point(within, epsilon, 0.0)


# Adversarials of the uploaded model that a transfer attack applies to the student, by the
# attack that crafted them and its budget.
TransferSources = dict[tuple[AttackName, float | None], Tensor]


@dataclass
class UploadAudit:
    """The uploaded model's half of one audit: a job that runs several methods
    (core.pipeline) audits every method's model beside the same upload on the same samples, so
    the upload is attacked once and its half handed to the next :func:`audit` (the autoattack
    preset on a robust upload takes tens of minutes on a CPU)."""

    settings: EvaluationSpec
    samples: Tensor
    robustness: ModelRobustness
    transfer_sources: TransferSources


def _summary(attack: Attack) -> AttackSummary:
    return AttackSummary(
        attack=attack.name, title=attack.title, norm=attack.norm, loss=attack.loss,
        targeted=attack.targeted, paper=attack.paper_attack,
        sees_through_masking=attack.sees_through_masking,
        perturbation_unit=attack.perturbation_unit, note=attack.note,
    )  # fmt: skip


def _attack_model(
    role: str,
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    ev: EvaluationSpec,
    bounds: tuple[float, float],
    num_classes: int,
    progress: _Progress,
    transfer_sources: TransferSources,
    outcomes: SampleOutcomes,
) -> list[AttackSummary]:
    fast, slow = (x, y), (x[: ev.samples_slow], y[: ev.samples_slow])
    source_names = {REGISTRY[name].transfer_from for name in ev.attacks}
    summaries = []
    for name in ev.attacks:
        attack = REGISTRY[name]
        summary = _summary(attack)
        summaries.append(summary)
        if attack.transfer_from is not None and role == "uploaded":
            # The uploaded model supplies the adversarials: attacking it with them says nothing.
            summary.note = attack.source_note
            continue
        xs, ys = slow if attack.slow else fast
        for epsilon in attack.budgets(ev):
            source_adversarial = None
            if attack.transfer_from is not None:
                source_adversarial = transfer_sources.get((attack.transfer_from, epsilon))
            call = AttackCall(
                model=model, x=xs, labels=ys, epsilon=epsilon, settings=ev, bounds=bounds,
                num_classes=num_classes, on_step=progress.hook,
                source_adversarial=source_adversarial,
            )  # fmt: skip
            progress.start_run(_run_passes(attack, ev, xs, num_classes))
            start = time.perf_counter()
            result = attack.run(call)
            seconds = time.perf_counter() - start
            sizes = None
            if attack.measures_perturbation:
                sizes = perturbation_sizes(attack.norm, result.adversarial, xs)
            summary.points.append(_point(result, epsilon, seconds, sizes))
            if attack.minimum_norm and sizes is not None:
                for e in norm_budgets(attack.norm, ev):
                    summary.points.append(_thresholded(result, sizes, e))
                    fooled = result.success & (sizes <= e)
                    outcomes.add(name, attack.norm, e, result.correct_before & ~fooled)
            elif epsilon is not None:
                outcomes.add(name, attack.norm, epsilon, result.correct_before & ~result.success)
            if role == "uploaded" and name in source_names:
                transfer_sources[(name, epsilon)] = result.adversarial
            progress.finish_run()
    return summaries


def _planned_passes(ev: EvaluationSpec, x: Tensor, num_classes: int, *, upload: bool) -> float:
    """The model passes an audit with the resolved settings ``ev`` plans on the samples ``x``:
    the hardened model's, and the upload's too when ``upload``
    (core.contract.evaluation_cost.audit_passes, which the job's ETA reads)."""
    features = x[0].numel() if len(x) else 1
    both = audit_passes(
        ev, features=features, classes=num_classes, test_samples=len(x), device_type="cpu"
    )
    if upload:
        return both
    return both - _upload_passes(ev, x, num_classes)


def _upload_passes(ev: EvaluationSpec, x: Tensor, num_classes: int) -> float:
    """The upload's share of the audit's passes (every attack but a transfer, which it feeds)."""
    fast, slow = len(x), min(int(ev.samples_slow), len(x))
    return sum(
        _run_passes(REGISTRY[name], ev, x[: slow if REGISTRY[name].slow else fast], num_classes)
        * len(REGISTRY[name].budgets(ev))
        for name in ev.attacks
        if REGISTRY[name].transfer_from is None
    )


def _with_transfer_sources(ev: EvaluationSpec) -> EvaluationSpec:
    """``ev`` with every transfer attack's source attack added just before it where missing."""
    attack_list = list(ev.attacks)
    for name in ev.attacks:
        source = REGISTRY[name].transfer_from
        if source is not None and source not in attack_list:
            attack_list.insert(attack_list.index(name), source)
    if attack_list == ev.attacks:
        return ev
    return ev.model_copy(update={"attacks": attack_list})


def evaluate(
    uploaded: nn.Module, student: nn.Module, data: Dataset, spec: HardenSpec, **options: Any
) -> tuple[Evaluation, Verdict]:
    """Attack both deployed models (raw logits, eval mode) and decide the verdict: :func:`audit`
    (same options) without the upload's half."""
    done = audit(uploaded, student, data, spec, **options)
    return done.evaluation, done.verdict


@dataclass
class Audit:
    """One audit: its evaluation, its verdict, and the upload's half of it (to hand to the audit
    of another method's model on the same upload)."""

    evaluation: Evaluation
    verdict: Verdict
    upload: UploadAudit
    student_outcomes: PerSampleOutcomes  # per sample, for a paired comparison with a baseline


def audit(
    uploaded: nn.Module,
    student: nn.Module,
    data: Dataset,
    spec: HardenSpec,
    *,
    device: str | torch.device | None = None,
    on_progress: ProgressFn | None = None,
    should_cancel: CancelFn | None = None,
    method: str | None = None,
    upload: UploadAudit | None = None,
) -> Audit:
    """Attack both deployed models (raw logits, eval mode), decide the verdict, and return both
    with the upload's half. ``method``: the title of the hardening method that made ``student``,
    named in the verdict when given (the audit is the same for every method). ``upload``: that
    half from an earlier audit of the same job; reused, not attacked again, when its settings and
    samples are these."""
    dev = device if isinstance(device, torch.device) else pick_device(device)
    bounds = (float(spec.input_range[0]), float(spec.input_range[1]))
    # 'auto' sample counts are sized by the device the attacks run on
    # (core.contract.evaluation.AUTO_SAMPLES).
    samples, samples_slow = spec.evaluation.sample_counts(dev.type)
    ev = spec.evaluation.resolved(data.input_shape, bounds, dev.type)
    # A transfer attack reuses its source attack's adversarials on the uploaded model.
    ev = _with_transfer_sources(ev)
    progress = _Progress(
        on_progress or (lambda stage, done, total: None),
        should_cancel or (lambda: False),
        0.0,
    )
    x, y = draw_samples(data, samples, ev.seed)
    x, y = x.to(dev), y.to(dev)
    progress.total = _planned_passes(ev, x, data.num_classes, upload=True)
    started = time.perf_counter()
    transfer_sources: TransferSources = {}
    models: dict[str, ModelRobustness] = {}
    kept = upload if upload and upload.settings == ev and torch.equal(upload.samples, x) else None
    if kept is not None:
        models["uploaded"] = kept.robustness
        transfer_sources.update(kept.transfer_sources)
        progress.skip(_upload_passes(ev, x, data.num_classes))
    # The uploaded model first: the transfer attack on the student needs its adversarials.
    per_sample = None
    for role, model in (("uploaded", uploaded), ("student", student)):
        if role in models:
            continue
        models[role], outcomes = _robustness(
            role, model, x, y, ev, bounds, data.num_classes, progress, transfer_sources
        )
        if role == "uploaded":
            kept = UploadAudit(ev, x, models[role], dict(transfer_sources))
        else:
            per_sample = outcomes
    evaluation = Evaluation(
        samples=len(x),
        samples_slow=min(samples_slow, len(x)),
        preset=ev.preset,
        method=method,
        seed=ev.seed,
        device=str(dev),
        input_range=bounds,
        threat_model=ev.threat_model,
        epsilons_linf=ev.budgets("linf", bounds),
        epsilons_l2=ev.budgets("l2", bounds),
        models=models,
        seconds=time.perf_counter() - started,
    )
    assert kept is not None and per_sample is not None  # the upload was attacked or reused
    progress.complete()
    return Audit(evaluation, decide(evaluation), kept, per_sample)


def _robustness(
    role: str,
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    ev: EvaluationSpec,
    bounds: tuple[float, float],
    num_classes: int,
    progress: _Progress,
    transfer_sources: TransferSources,
) -> tuple[ModelRobustness, PerSampleOutcomes]:
    """Everything the audit measures on one model, and its per-sample outcomes."""
    model = model.to(x.device).eval()
    t0 = time.perf_counter()
    with torch.no_grad():
        logits = model(x)
    outcomes = SampleOutcomes()
    summaries = _attack_model(
        role, model, x, y, ev, bounds, num_classes, progress, transfer_sources, outcomes
    )
    correct = logits.argmax(1) == y
    robustness = ModelRobustness(
        clean_accuracy=float(correct.float().mean()),
        mean_abs_logit=float(logits.abs().mean()),
        gradient=gradient_amplitude(model, x, y),
        attacks=summaries,
        worst_case=outcomes.worst_case(),
        seconds=time.perf_counter() - t0,
    )
    per_sample = PerSampleOutcomes(clean=correct.cpu().tolist(), budgets=outcomes.per_budget())
    return robustness, per_sample


def attack_like_student(
    model: nn.Module,
    data: Dataset,
    spec: HardenSpec,
    upload: UploadAudit,
    *,
    on_progress: ProgressFn | None = None,
    should_cancel: CancelFn | None = None,
) -> PerSampleOutcomes:
    """Attack one more model exactly as an audit attacked its student: the same settings, the
    same samples (drawn again with the same seed and checked equal), the same adversarials of
    the upload for a transfer attack: a baseline beside the job's model (core.audit.baseline)."""
    ev, x = upload.settings, upload.samples
    drawn, y = draw_samples(data, len(x), ev.seed)
    if not torch.equal(drawn.to(x.device), x):
        raise ValueError("the audit's samples cannot be drawn again from this dataset")
    bounds = (float(spec.input_range[0]), float(spec.input_range[1]))
    progress = _Progress(
        on_progress or (lambda stage, done, total: None),
        should_cancel or (lambda: False),
        _planned_passes(ev, x, data.num_classes, upload=False),
    )
    _, per_sample = _robustness(
        "student", model, x, y.to(x.device), ev, bounds, data.num_classes, progress,
        dict(upload.transfer_sources),
    )  # fmt: skip
    progress.complete()
    return per_sample
