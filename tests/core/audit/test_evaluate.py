"""The audit and its verdict: a distilled model is flagged as masked, an undefended one gets no
gain against itself, progress and cancellation work, and the verdict rule holds."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from core.audit.evaluate import audit, draw_samples, evaluate
from core.audit.registry import REGISTRY
from core.audit.schema import (
    AttackPoint,
    AttackSummary,
    Evaluation,
    GradientAmplitude,
    ModelRobustness,
)
from core.audit.verdict import decide
from core.contract.evaluation_cost import audit_passes
from core.contract.spec import HardenSpec
from core.datasets.dataset import Dataset
from core.errors import JobCancelledError
from tests.core.robust_models import digits, distilled, undefended


def _dataset() -> Dataset:
    d = digits()
    names = [str(i) for i in range(10)]
    return Dataset(d.x_train, d.y_train, d.x_test, d.y_test, 10, names, "builtin:digits", (1, 8, 8))


def _spec(**evaluation: object) -> HardenSpec:
    settings = {
        "samples": 100,
        "samples_slow": 50,
        "epsilons_linf": [0.1, 0.2, 0.3],
        "epsilons_l2": [0.5, 1.0, 2.0],
        "pgd_steps": 20,
        "cw_iterations": 50,
        "square_queries": 300,
        **evaluation,
    }
    return HardenSpec(dataset="builtin:digits", evaluation=settings)


def _claims_robustness(text: str) -> bool:
    # "robust accuracy" is a measurement; any other "robust" would be a claim.
    return bool(re.search(r"robust(?!\s+accuracy)", text, flags=re.IGNORECASE))


@pytest.fixture(scope="module")
def masked_result():
    return evaluate(undefended(), distilled(100.0), _dataset(), _spec(), device="cpu")


def test_distilled_t100_is_flagged_masked(masked_result) -> None:
    evaluation, verdict = masked_result
    assert verdict.label == "masked"
    assert verdict.paper_attacks_gain
    signs = {s.sign: s.detected for s in verdict.masking_signs}
    assert signs["vanishing softmax gradients"]
    assert not _claims_robustness(verdict.headline)
    assert verdict.evidence and all(sentence.strip() for sentence in verdict.evidence)
    student = evaluation.models["student"]
    uploaded = evaluation.models["uploaded"]
    # Distillation multiplies the logits, which is where the masking comes from.
    assert student.mean_abs_logit > 5 * uploaded.mean_abs_logit
    assert student.gradient.softmax_l1_median < uploaded.gradient.softmax_l1_median


def test_strong_attacks_still_fool_the_distilled_student(masked_result) -> None:
    evaluation, verdict = masked_result
    by_name = {a.attack: a for a in evaluation.models["student"].attacks}
    jsma_paper = by_name["jsma_softmax"].points[0].success_rate
    cw = next(p for p in by_name["cw_l2"].points if p.epsilon is None).success_rate
    assert cw > jsma_paper
    largest = max(evaluation.epsilons_linf)
    strongest = [r for r in verdict.strongest if r.norm == "linf" and r.epsilon == largest]
    assert strongest and strongest[0].student_robust_accuracy < 0.5


def test_undefended_model_gets_no_gain_against_itself() -> None:
    model = undefended()
    evaluation, verdict = evaluate(model, model, _dataset(), _spec(), device="cpu")
    assert verdict.label == "no measurable gain"
    assert not any(s.detected for s in verdict.masking_signs)
    assert all(abs(row.gain) < 1e-9 for row in verdict.strongest)
    assert not _claims_robustness(verdict.headline)


def test_samples_are_shared_and_seeded() -> None:
    data = _dataset()
    x1, y1 = draw_samples(data, 40, seed=5)
    x2, y2 = draw_samples(data, 40, seed=5)
    x3, _ = draw_samples(data, 40, seed=6)
    assert torch.equal(x1, x2) and torch.equal(y1, y2) and not torch.equal(x1, x3)


def test_progress_is_reported_and_cancellation_honoured() -> None:
    calls: list[tuple[str, int, int]] = []
    spec = _spec(attacks=["fgsm_ce", "pgd_linf_margin", "cw_l2", "transfer"], samples=30)
    evaluate(
        undefended(), distilled(100.0), _dataset(), spec, device="cpu",
        on_progress=lambda stage, done, total: calls.append((stage, done, total)),
    )  # fmt: skip
    assert calls and {c[0] for c in calls} == {"evaluate"}
    done = [c[1] for c in calls]
    assert done == sorted(done) and done[-1] == calls[-1][2]

    polls = 0

    def cancel_after_some_steps() -> bool:
        nonlocal polls
        polls += 1
        return polls > 15

    with pytest.raises(JobCancelledError):
        evaluate(
            undefended(), distilled(100.0), _dataset(), spec, device="cpu",
            should_cancel=cancel_after_some_steps,
        )  # fmt: skip
    assert polls == 16  # stopped at the first poll that said cancel


class _Refuses(nn.Module):
    """An upload that must not be run: its audit is to be reused."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise AssertionError("the uploaded model was attacked again")


def test_a_second_method_reuses_the_uploads_half_of_the_audit() -> None:
    # A job running several methods audits each one's model beside the same upload: the upload
    # is attacked once (the transfer attack's sources included), and only on the same samples.
    spec = _spec(attacks=["pgd_linf_margin", "transfer"], samples=30, samples_slow=20)
    kept = audit(undefended(), undefended(), _dataset(), spec, device="cpu")
    first = kept.evaluation
    calls: list[tuple[str, int, int]] = []
    second_audit = audit(
        _Refuses(), distilled(100.0), _dataset(), spec, device="cpu", upload=kept.upload,
        on_progress=lambda stage, done, total: calls.append((stage, done, total)),
    )  # fmt: skip
    second = second_audit.evaluation
    assert second_audit.upload is kept.upload  # handed on, not made anew
    assert second.models["uploaded"] == first.models["uploaded"]
    transfer = next(a for a in second.models["student"].attacks if a.attack == "transfer")
    assert transfer.points  # it had the upload's adversarials to transfer
    assert calls[-1][1] == calls[-1][2]  # progress still ends at its total
    # Other samples (another seed) are a new audit of the upload, not the kept one.
    other_samples = _spec(attacks=["pgd_linf_margin"], samples=30, seed=1)
    with pytest.raises(AssertionError, match="attacked again"):
        audit(_Refuses(), undefended(), _dataset(), other_samples, device="cpu",
              upload=kept.upload)  # fmt: skip


# The AutoAttack components a gain must be measured by before it counts as real.
AUTOATTACK = ("apgd_ce", "apgd_dlr", "square")


def _synthetic(
    student_pgd: list[float],
    student_softmax_grad: float,
    samples: int = 100,
    attack: str = "pgd_linf_margin",
    also: tuple[str, ...] = AUTOATTACK,
) -> Evaluation:
    """Two models, ``attack`` (by default a strong one) and the attacks in ``also``, all leaving
    the same robust accuracy per epsilon (given for the student)."""
    eps = [0.1, 0.2]

    def summary(name: str, robust: list[float]) -> AttackSummary:
        info = REGISTRY[name]
        points = [
            AttackPoint(epsilon=e, samples=samples, correct_before=round(0.95 * samples),
                        success_rate=1 - r / 0.95, robust_accuracy=r, seconds=0.1)
            for e, r in zip(eps, robust, strict=True)
        ]  # fmt: skip
        return AttackSummary(
            attack=name, title=info.title, norm="linf", loss=info.loss,
            paper=info.paper_attack, sees_through_masking=info.sees_through_masking, points=points,
        )  # fmt: skip

    def model(robust: list[float], grad: float) -> ModelRobustness:
        gradient = GradientAmplitude(
            softmax_l1_mean=grad, softmax_l1_median=grad, margin_l1_mean=1, margin_l1_median=1
        )
        attacks = [summary(name, robust) for name in dict.fromkeys([attack, *also])]
        return ModelRobustness(
            clean_accuracy=0.95, mean_abs_logit=5, gradient=gradient, attacks=attacks, seconds=1
        )

    return Evaluation(
        samples=samples, samples_slow=samples, seed=0, device="cpu", input_range=(0, 1),
        epsilons_linf=eps, epsilons_l2=[1.0], seconds=1,
        models={
            "uploaded": model([0.30, 0.05], 0.3),
            "student": model(student_pgd, student_softmax_grad),
        },
    )  # fmt: skip


def test_verdict_rule_real_gain_needs_strongest_gain_and_no_masking() -> None:
    real = decide(_synthetic([0.60, 0.20], 0.2))
    assert real.label == "real gain"
    assert [(g.norm, g.epsilon) for g in real.gains] == [("linf", 0.1), ("linf", 0.2)]
    # Same gain, but the softmax gradients vanished: not trusted.
    assert decide(_synthetic([0.60, 0.20], 1e-9)).label == "masked"
    # Gain below 5 points: nothing measurable.
    assert decide(_synthetic([0.33, 0.06], 0.3)).label == "no measurable gain"


def test_verdict_gain_under_masked_attacks_only_is_not_real() -> None:
    # The same 30-point gain as above, but measured only by cross-entropy PGD, which distillation
    # defeats by saturating the softmax: no attack that sees through masking ran at those budgets.
    verdict = decide(_synthetic([0.60, 0.20], 0.2, attack="pgd_linf_ce", also=()))
    assert verdict.label != "real gain" and not verdict.gains
    assert any("not counted as a gain" in line for line in verdict.evidence)
    assert any("apgd_dlr" in line for line in verdict.evidence)  # says which attack to add


def test_verdict_gain_within_sampling_noise_is_not_real() -> None:
    # +10 points on 20 samples is two samples: far inside the noise of a 20-sample estimate.
    verdict = decide(_synthetic([0.40, 0.15], 0.2, samples=20))
    assert verdict.label == "no measurable gain" and not verdict.gains
    assert any("sampling noise" in line for line in verdict.evidence)
    # The same gain on 2,000 samples is well outside the noise.
    assert decide(_synthetic([0.40, 0.15], 0.2, samples=2000)).label == "real gain"


class _Counted(nn.Module):
    """``model`` counting the samples it is run on (the work done), with a zero input gradient
    (its logits are read off the detached input): no attack fools it by following a gradient,
    so every run goes on for its planned steps."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.samples_run = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.samples_run += len(x)
        return self.model(x.detach()) + 0 * x.flatten(1).sum(1, keepdim=True)


def test_progress_counts_attack_steps_not_attack_runs() -> None:
    # FGSM's runs are one step each, PGD's twenty: six of the twelve runs are FGSM's, but they
    # are a twenty-first of the work, and the progress says so. Its total is the plan that
    # core.contract.evaluation_cost.audit_steps makes from the settings (the job's ETA).
    upload, student = _Counted(undefended()), _Counted(undefended())
    spec = _spec(attacks=["fgsm_ce", "pgd_linf_margin"], samples=40)
    calls: list[tuple[int, int, int]] = []
    evaluate(
        upload, student, _dataset(), spec, device="cpu",
        on_progress=lambda stage, done, total: calls.append(
            (done, total, upload.samples_run + student.samples_run)
        ),
    )  # fmt: skip
    total = calls[-1][1]
    ev = spec.evaluation.resolved((1, 8, 8), (0.0, 1.0), "cpu")
    assert total == round(audit_passes(ev, features=64, classes=10, test_samples=40))
    assert total == 2 * 3 * 40 * (1 + 20)  # two models, three budgets, 40 samples, 1 + 20 steps
    assert all(c[1] == total for c in calls)
    done = [c[0] for c in calls]
    assert done == sorted(done) and done[-1] == total
    work = calls[-1][2]
    # The fraction reported follows the fraction of the model's work done, everywhere.
    assert max(abs(d / total - w / work) for d, _, w in calls) < 0.1


def test_a_run_stopping_early_counts_its_planned_steps() -> None:
    # Every sample is fooled at once (an undefended model, a large budget): the runs stop early,
    # and the progress still ends at its total, never past it.
    spec = _spec(attacks=["pgd_linf_ce"], samples=20, epsilons_linf=[0.9])
    calls: list[tuple[int, int]] = []
    evaluate(
        undefended(), undefended(), _dataset(), spec, device="cpu",
        on_progress=lambda stage, done, total: calls.append((done, total)),
    )  # fmt: skip
    assert calls[-1] == (calls[-1][1], calls[-1][1])
    assert all(done <= total for done, total in calls)
