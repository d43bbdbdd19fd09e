"""The AutoAttack side of the audit: APGD-T and FAB-T, the autoattack preset, the per-sample
worst case, and the rule that only an AutoAttack-strength evaluation may say ``real gain``."""

from __future__ import annotations

import random

import pytest
import torch
from pydantic import ValidationError
from torch import Tensor, nn

from core.audit.attacks.apgd import apgd_targeted
from core.audit.attacks.base import targeted_dlr
from core.audit.attacks.fab import fab_targeted, linf_step_to_hyperplane
from core.audit.attacks.targets import top_targets
from core.audit.evaluate import evaluate
from core.audit.registry import AUTOATTACK_REQUIRED, REGISTRY
from core.audit.verdict import decide
from core.audit.worst_case import SampleOutcomes
from core.contract.evaluation import AUTOATTACK_ATTACKS, DEFAULT_ATTACKS, EvaluationSpec
from core.contract.spec import HardenSpec
from tests.core.audit.test_evaluate import _dataset, _synthetic
from tests.core.robust_models import digits, distilled, undefended


@pytest.fixture(scope="module")
def batch() -> tuple[nn.Module, Tensor, Tensor]:
    data = digits()
    return undefended(), data.x_test[:60], data.y_test[:60]


@pytest.mark.parametrize(
    "attack",
    [
        lambda m, x, y: apgd_targeted(m, x, y, epsilon=0.3, steps=20),
        lambda m, x, y: fab_targeted(m, x, y, epsilon=0.3, steps=20),
    ],
    ids=["apgd_t", "fab_t"],
)
def test_targeted_attacks_fool_an_undefended_model_at_a_large_budget(batch, attack) -> None:
    model, x, y = batch
    result = attack(model, x, y)
    assert float(result.success.sum()) >= 0.95 * float(result.correct_before.sum())


def test_targeted_attacks_are_not_fooled_by_logit_scaling(batch) -> None:
    """Distillation's factor-T logits change nothing for APGD-T and FAB-T (scale-invariant)."""
    model, x, y = batch
    scaled = nn.Sequential(model, _Scale(100.0))
    for attack in (apgd_targeted, fab_targeted):
        plain = attack(model, x, y, epsilon=0.1, steps=10, target_classes=3)
        big = attack(scaled, x, y, epsilon=0.1, steps=10, target_classes=3)
        assert abs(int(plain.success.sum()) - int(big.success.sum())) <= 2


class _Scale(nn.Module):
    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: Tensor) -> Tensor:
        return x * self.factor


def test_targeted_dlr_is_scale_invariant_and_points_at_the_target() -> None:
    logits = torch.randn(8, 10, generator=torch.Generator().manual_seed(0))
    labels, targets = torch.zeros(8, dtype=torch.long), torch.ones(8, dtype=torch.long)
    assert torch.allclose(
        targeted_dlr(logits, labels, targets), targeted_dlr(50 * logits, labels, targets)
    )
    # Raising the target's logit raises the loss the attack climbs.
    raised = logits.clone()
    raised[:, 1] += 1.0
    assert bool(
        (targeted_dlr(raised, labels, targets) > targeted_dlr(logits, labels, targets)).all()
    )


@pytest.mark.parametrize("classes", [3, 10])
def test_top_targets_are_the_most_likely_other_classes(classes: int) -> None:
    logits = torch.randn(16, classes, generator=torch.Generator().manual_seed(1))
    targets = top_targets(logits, 9)
    assert targets.shape == (16, min(9, classes - 1))
    assert not bool((targets == logits.argmax(1, keepdim=True)).any())
    chosen = logits.gather(1, targets)
    assert bool((chosen[:, :-1] >= chosen[:, 1:]).all())


def test_fab_projection_reaches_the_hyperplane_with_the_smallest_linf_step() -> None:
    gen = torch.Generator().manual_seed(2)
    x = torch.rand(64, 1, 4, 4, generator=gen)
    w = torch.randn(64, 1, 4, 4, generator=gen)
    offset = torch.randn(64, generator=gen)
    for bounds in ((0.0, 1.0), (-1.0, 2.0)):
        step = linf_step_to_hyperplane(x, w, offset, bounds)
        moved = x + step
        assert float(moved.min()) >= bounds[0] - 1e-6 and float(moved.max()) <= bounds[1] + 1e-6
        reached = (w * step).flatten(1).sum(1)
        size = step.flatten(1).abs().max(1).values
        # Where the range allows the hyperplane, it is reached; no L-inf step smaller than
        # |offset| / ||w||_1 can reach it (Hoelder), and the range only makes it larger.
        ok = torch.isclose(reached, offset, atol=1e-4)
        lower = offset.abs() / w.flatten(1).abs().sum(1)
        assert bool((size[ok] >= lower[ok] - 1e-6).all())
        if bounds == (-1.0, 2.0):  # room everywhere: always feasible, at exactly that bound
            assert bool(ok.all()) and torch.allclose(size, lower, atol=1e-5)


def test_worst_case_is_per_sample_and_never_above_the_minimum_over_attacks() -> None:
    gen = torch.Generator().manual_seed(3)
    for _ in range(20):
        outcomes = SampleOutcomes()
        for name in ("a", "b", "c"):
            outcomes.add(name, "linf", 0.1, torch.rand(30, generator=gen) > 0.4)
        outcomes.add("slow", "linf", 0.1, torch.rand(12, generator=gen) > 0.4)
        outcomes.add("jsma", "l0", 0.1, torch.zeros(30, dtype=torch.bool))  # L0: not a threat here
        (row,) = outcomes.worst_case()
        assert row.samples == 12 and row.attacks == ["a", "b", "c", "slow"]
        assert row.robust_accuracy <= row.min_mean_robust_accuracy


def test_preset_fills_autoattack_and_refuses_to_weaken_it() -> None:
    preset = EvaluationSpec(preset="autoattack", samples=40)
    assert tuple(preset.attacks) == AUTOATTACK_ATTACKS
    assert (preset.pgd_steps, preset.target_classes, preset.square_queries) == (100, 9, 5000)
    assert preset.samples_slow == preset.samples == 40
    # More is allowed: more attacks, more steps.
    more = EvaluationSpec(preset="autoattack", attacks=[*AUTOATTACK_ATTACKS, "transfer"],
                          pgd_steps=200)  # fmt: skip
    assert more.pgd_steps == 200 and "transfer" in more.attacks
    for weaker in ({"attacks": ["apgd_ce", "square"]}, {"square_queries": 1000},
                   {"pgd_steps": 10}, {"target_classes": 3}, {"samples": 80, "samples_slow": 20},
                   {"preset": "strong"}):  # fmt: skip
        with pytest.raises(ValidationError):
            HardenSpec(evaluation={"preset": "autoattack", **weaker})
    # The default evaluation is unchanged: no APGD-T or FAB-T, Square at 500 queries.
    default = EvaluationSpec()
    assert default.preset == "default" and tuple(default.attacks) == DEFAULT_ATTACKS
    assert "apgd_t" not in default.attacks and default.square_queries == 500
    # A spec as run (written to the report) validates again unchanged.
    assert EvaluationSpec(**preset.model_dump()) == preset


def _autoattack_spec() -> HardenSpec:
    return HardenSpec(
        dataset="builtin:digits",
        evaluation={"preset": "autoattack", "samples": 40, "epsilons_linf": [0.1, 0.3]},
    )


@pytest.fixture(scope="module")
def masked_under_preset():
    return evaluate(
        undefended(), distilled(100.0), _dataset(), _autoattack_spec(), device="cpu",
        method="defensive distillation",
    )  # fmt: skip


def test_preset_runs_every_attack_on_the_same_samples_worst_case_per_sample(
    masked_under_preset,
) -> None:
    evaluation, _ = masked_under_preset
    assert evaluation.preset == "autoattack" and evaluation.samples_slow == evaluation.samples
    for model in evaluation.models.values():
        assert {a.attack for a in model.attacks} == set(AUTOATTACK_ATTACKS)
        assert [(w.norm, w.epsilon) for w in model.worst_case] == [("linf", 0.1), ("linf", 0.3)]
        for row in model.worst_case:
            assert row.samples == evaluation.samples
            means = [
                p.robust_accuracy
                for a in model.attacks
                for p in a.points
                if p.epsilon == row.epsilon
            ]
            assert row.min_mean_robust_accuracy == pytest.approx(min(means))
            assert row.robust_accuracy <= min(means) + 1e-12


def test_masked_model_is_never_a_real_gain_under_the_preset(masked_under_preset) -> None:
    evaluation, verdict = masked_under_preset
    assert verdict.label == "masked"
    assert "defensive distillation" in verdict.headline  # the method, named because it is known
    assert not any(r.autoattack_missing for r in verdict.strongest)


@pytest.mark.parametrize("seed", range(40))
def test_verdict_is_never_real_gain_with_masking_signs_or_without_autoattack(seed: int) -> None:
    """Random gains, random attack sets: ``real gain`` only with the AutoAttack components and
    healthy gradients; a masked model (vanishing softmax gradients) never gets it, preset or not."""
    rng = random.Random(seed)
    student = [rng.uniform(0.0, 0.9), rng.uniform(0.0, 0.9)]
    strong = [n for n, a in REGISTRY.items() if a.norm == "linf" and a.sees_through_masking]
    linf = [n for n, a in REGISTRY.items() if a.norm == "linf" and a.transfer_from is None]
    attack = rng.choice(strong)
    # Half the time every AutoAttack component is there, so that both outcomes are exercised.
    also = tuple(rng.sample(linf, rng.randint(0, len(linf))))
    if rng.random() < 0.5:
        also += ("apgd_ce", rng.choice(["apgd_dlr", "apgd_t"]), "square")
    masked = rng.random() < 0.5
    evaluation = _synthetic(student, 1e-9 if masked else 0.2, samples=1000, attack=attack,
                            also=also)  # fmt: skip
    verdict = decide(evaluation)
    roles = {REGISTRY[name].autoattack_role for name in (attack, *also)}
    if masked:
        assert verdict.label == "masked"
    if not set(AUTOATTACK_REQUIRED) <= roles:
        assert verdict.label != "real gain" and not verdict.gains
    if verdict.label == "real gain":
        assert all(not row.autoattack_missing for row in verdict.gains)


def test_gain_without_autoattack_says_what_is_missing() -> None:
    verdict = decide(_synthetic([0.60, 0.20], 0.2, also=("apgd_dlr",)))
    assert verdict.label == "no measurable gain" and not verdict.gains
    missing = [line for line in verdict.evidence if "AutoAttack" in line]
    assert missing and "APGD-CE" in missing[0] and "Square" in missing[0]
    assert "preset 'autoattack'" in missing[0]
    # With the components, the same numbers are a real gain.
    assert decide(_synthetic([0.60, 0.20], 0.2)).label == "real gain"
