"""An audit's shards merged: the per-sample results of every shard (core.audit.shards), in
sample order, turned into the report's sections for one model (core.audit.schema), its
per-sample outcomes and the adversarials a transfer attack replays.

Counts, means and medians are taken over the merged per-sample values, never averaged over
shards, so the merge of N shards reads as the audit of all their samples at once.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from core.audit.registry import REGISTRY, Attack
from core.audit.runs import norm_budgets
from core.audit.schema import AttackPoint, AttackSummary, GradientAmplitude, ModelRobustness
from core.audit.shards import ModelShard, ShardRun
from core.audit.worst_case import SampleOutcomes
from core.contract.evaluation import AttackName, EvaluationSpec
from core.report.comparison import PerSampleOutcomes


def amplitude(soft: Tensor, marg: Tensor) -> GradientAmplitude:
    """The gradient section from per-sample L1 norms of d softmax(z)_y / dx and d margin / dx."""
    return GradientAmplitude(
        softmax_l1_mean=float(soft.mean()),
        softmax_l1_median=float(soft.median()),
        margin_l1_mean=float(marg.mean()),
        margin_l1_median=float(marg.median()),
        softmax_l1=[float(v) for v in soft],
        margin_l1=[float(v) for v in marg],
    )


def _point(
    correct_before: Tensor,
    success: Tensor,
    epsilon: float | None,
    seconds: float,
    sizes: Tensor | None = None,
) -> AttackPoint:
    """One attack at one budget from its per-sample outcomes (``sizes``: of every sample's
    perturbation, where the attack measures it)."""
    correct = int(correct_before.sum())
    fooled = int(success.sum())
    n = len(success)
    median = mean = None
    if sizes is not None and fooled:
        chosen = sizes[success].double()
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


# Adversarials of the uploaded model that a transfer attack applies to the student, by the
# attack that crafted them and its budget.
TransferSources = dict[tuple[AttackName, float | None], Tensor]


def _summary(attack: Attack) -> AttackSummary:
    return AttackSummary(
        attack=attack.name, title=attack.title, norm=attack.norm, loss=attack.loss,
        targeted=attack.targeted, paper=attack.paper_attack,
        sees_through_masking=attack.sees_through_masking,
        perturbation_unit=attack.perturbation_unit, note=attack.note,
    )  # fmt: skip


def merge_model(
    role: str, parts: Sequence[ModelShard], ev: EvaluationSpec, device: torch.device
) -> tuple[ModelRobustness, PerSampleOutcomes, TransferSources]:
    """One model's results of every shard, merged in sample order: its section of the report,
    its per-sample outcomes and (the upload's) the adversarials a transfer attack replays.
    Means and medians are taken over the merged per-sample values, on ``device`` as an audit of
    all samples at once took them there; ``seconds`` are summed."""
    runs = iter(_merged_runs(parts, device))
    outcomes = SampleOutcomes()
    transfer_sources: TransferSources = {}
    summaries = []
    for name in ev.attacks:
        attack = REGISTRY[name]
        summary = _summary(attack)
        summaries.append(summary)
        if attack.transfer_from is not None and role == "uploaded":
            summary.note = attack.source_note
            continue
        for epsilon in attack.budgets(ev):
            run = next(runs, None)
            if run is None or (run.attack, run.epsilon) != (name, epsilon):
                raise ValueError(f"the audit's shards did not run {name} at {epsilon} in order")
            correct, success, sizes = run.correct_before, run.success, run.sizes
            summary.points.append(_point(correct, success, epsilon, run.seconds, sizes))
            if attack.minimum_norm and sizes is not None:
                # A minimum-norm attack (CW-L2) read at each budget: only successes within it.
                for e in norm_budgets(attack.norm, ev):
                    fooled = success & (sizes <= e)
                    summary.points.append(_point(correct, fooled, e, 0.0))
                    outcomes.add(name, attack.norm, e, correct & ~fooled)
            elif epsilon is not None:
                outcomes.add(name, attack.norm, epsilon, correct & ~success)
            if run.adversarial is not None:
                transfer_sources[(name, epsilon)] = run.adversarial
    clean = _interleave([part.clean for part in parts]).to(device)
    robustness = ModelRobustness(
        clean_accuracy=float(clean.float().mean()),
        mean_abs_logit=float(_interleave([part.abs_logits for part in parts]).to(device).mean()),
        gradient=amplitude(
            _interleave([part.softmax_l1 for part in parts]),
            _interleave([part.margin_l1 for part in parts]),
        ),
        attacks=summaries,
        worst_case=outcomes.worst_case(),
        seconds=sum(part.seconds for part in parts),
    )
    per_sample = PerSampleOutcomes(clean=clean.cpu().tolist(), budgets=outcomes.per_budget())
    return robustness, per_sample, transfer_sources


def _merged_runs(parts: Sequence[ModelShard], device: torch.device) -> list[ShardRun]:
    """Each run's per-sample results over every shard, in sample order, on ``device``."""
    if len({len(part.runs) for part in parts}) != 1:
        raise ValueError("the audit's shards hold different numbers of attack runs")
    merged = []
    for runs in zip(*(part.runs for part in parts), strict=True):
        if len({(run.attack, run.epsilon) for run in runs}) != 1:
            raise ValueError("the audit's shards ran different attacks in the same place")

        def joined(name: str, runs: tuple[ShardRun, ...] = runs) -> Tensor | None:
            values = [getattr(run, name) for run in runs]
            if any(value is None for value in values):
                return None
            return _interleave(values).to(device)

        correct, success = joined("correct_before"), joined("success")
        assert correct is not None and success is not None
        merged.append(
            ShardRun(
                attack=runs[0].attack, epsilon=runs[0].epsilon,
                seconds=sum(run.seconds for run in runs), correct_before=correct,
                success=success, sizes=joined("sizes"), adversarial=joined("adversarial"),
            )
        )  # fmt: skip
    return merged


def _interleave(parts: Sequence[Tensor]) -> Tensor:
    """Shard results back in sample order: of N shards, shard k holds samples k, k + N, ..."""
    count = len(parts)
    rows = sum(len(part) for part in parts)
    merged = parts[0].new_empty((rows, *parts[0].shape[1:]))
    for shard, part in enumerate(parts):
        if len(range(shard, rows, count)) != len(part):
            raise ValueError(f"shard {shard} of the audit holds the wrong number of samples")
        merged[shard::count] = part
    return merged
