"""A student worth deploying: at the default config it keeps the upload's accuracy (within 1.5
points) on an MLP and on a small BatchNorm residual net, keeps the distillation's T-times logits,
stops when its loss has converged, and deploys as the bare network with T folded in."""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from core.audit.evaluate import evaluate
from core.contract.spec import HardenSpec
from core.hardening.scaling import OutputScale
from core.hardening.training import Convergence
from core.modules import logits_of
from tests.core.hardening.test_distillation import _Upload, distill
from tests.core.model_files import digits, trained_mlp

# The bar: a default job's student within 1.5 points of the upload's test accuracy, and
# the distillation's effect kept (mean |logit| at least 10x the upload's at T=100).
MAX_DROP = 0.015
MIN_LOGIT_RATIO = 10.0


class _Residual(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))


def _residual_net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1, bias=False),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        _Residual(16),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(64, 10),
    )


@functools.cache
def _trained_residual_state() -> dict[str, torch.Tensor]:
    data = digits()
    torch.manual_seed(0)
    model = _residual_net()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(40):
        for index in torch.randperm(len(data.x_train), generator=generator).split(128):
            loss = F.cross_entropy(model(data.x_train[index]), data.y_train[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def trained_residual() -> nn.Module:
    """A small residual net with BatchNorm trained at T=1 on digits (about 98-99%), eval mode."""
    model = _residual_net()
    model.load_state_dict(_trained_residual_state())
    return model.eval()


def _accuracy(model: nn.Module) -> float:
    data = digits()
    return float((logits_of(model, data.x_test).argmax(1) == data.y_test).float().mean())


@pytest.mark.parametrize("make_upload", [trained_mlp, trained_residual], ids=["mlp", "residual_bn"])
def test_a_default_student_keeps_the_uploads_accuracy_and_the_t_times_logits(
    make_upload: object,
) -> None:
    data = digits()
    upload = _Upload(make_upload())  # type: ignore[operator]
    result = distill(upload, data, HardenSpec(dataset="builtin:digits"))
    uploaded, student = _accuracy(upload.module), _accuracy(result.student)
    assert uploaded > 0.94
    assert student >= uploaded - MAX_DROP, (uploaded, student, result.record.student.stop)
    ratio = float(
        logits_of(result.student, data.x_test).abs().mean()
        / logits_of(upload.module, data.x_test).abs().mean()
    )
    assert ratio >= MIN_LOGIT_RATIO, ratio
    # Auto: it stopped because the loss converged, long before the step bound.
    assert result.record.student.stop == "converged"
    check = result.record.student.check
    assert check is not None and check.held_out_samples == 143  # a tenth of 1,437 digits
    assert not isinstance(result.student, OutputScale)
    if check.fell_back:
        # Warm-started from the teacher (T already in its last layer), on all 12 batches.
        assert result.record.student_deployed == "the trained network as is"
        assert result.record.student.steps == len(result.losses["student"]) * 12
    else:
        # The scratch student: T folded into its last linear layer, no wrapper left; it trained
        # on 11 batches (1,294 digits) to its plateau, then finished on all 12 (5 epochs).
        assert result.record.student_deployed.startswith("T folded into")
        assert result.record.student.steps == check.scratch_epochs * 11 + 5 * 12
        assert len(result.losses["student"]) == check.scratch_epochs + 5


def test_the_papers_plain_recipe_stays_available_and_is_recorded() -> None:
    data = digits()
    spec = HardenSpec(
        dataset="builtin:digits",
        student_parametrization="plain",
        student_epochs=2,
        student_max_drop=None,  # the paper's recipe exactly: no check, no replacement
    )
    result = distill(_Upload(trained_mlp()), data, spec)
    assert not isinstance(result.student, OutputScale)
    assert result.record.student_deployed == "the trained network as is"
    assert result.record.student.stop == "epochs as set" and len(result.losses["student"]) == 2
    # Two plain epochs at T=100 barely move a fresh network: its logits stay near their
    # initial size, where the output-scaled student starts T-fold (what makes it train fast).
    scaled = distill(
        _Upload(trained_mlp()),
        data,
        HardenSpec(dataset="builtin:digits", student_epochs=2, student_max_drop=None),
    )
    plain_logits = logits_of(result.student, data.x_test).abs().mean()
    scaled_logits = logits_of(scaled.student, data.x_test).abs().mean()
    assert scaled_logits > 10 * plain_logits


def _geometric(first: float, factor: float, epochs: int) -> list[float]:
    return [first * factor**epoch for epoch in range(epochs)]


def test_convergence_waits_while_the_loss_still_falls_and_stops_once_it_is_flat() -> None:
    rule = Convergence()
    falling = _geometric(2.0, 0.8, 30)  # each epoch removes 20% of what is left
    assert not any(rule.reached(falling[:n]) for n in range(1, 21))
    flat = falling[:12] + [falling[11]] * 6
    assert rule.reached(flat)
    # Never before min_epochs, however flat.
    assert not any(rule.reached([1.0] * n) for n in range(1, rule.min_epochs))
    assert rule.reached([1.0] * rule.min_epochs)


def test_convergence_compares_the_loss_above_its_floor() -> None:
    # Soft labels' entropy is what the cross-entropy tends to: a loss of entropy + tiny is done.
    entropy = 1.7
    rule = Convergence(offset=entropy)
    assert rule.excess(entropy + 0.25) == pytest.approx(0.25)
    assert rule.excess(entropy - 0.01) == 0.0
    assert rule.reached([entropy + 1.0, entropy + 0.0005])  # below the floor: stop at once
    # Without the offset the same losses look far from done.
    assert not Convergence().reached([entropy + 1.0, entropy + 0.0005])


@pytest.mark.parametrize("student_init", ["scratch", "teacher"])
def test_the_default_student_is_still_audited_as_masked(student_init: str) -> None:
    # The output scale changes how the student trains, not what distillation does to it: the
    # deployed logits are T-fold, the paper's attacks fail, the attacks that see through gradient
    # masking do not, and the verdict says masked. The same holds for a student warm-started
    # from the teacher, which the check deploys in place of a scratch student that fell short.
    data = digits()
    upload = trained_mlp()
    spec = HardenSpec(dataset="builtin:digits", student_init=student_init)  # type: ignore[arg-type]
    result = distill(_Upload(upload), data, spec)
    spec = HardenSpec(
        dataset="builtin:digits",
        evaluation={
            "samples": 100,
            "attacks": ["fgsm_ce", "pgd_linf_ce", "pgd_linf_margin", "jsma_softmax", "apgd_dlr"],
            "epsilons_linf": [0.1, 0.3],
            "pgd_steps": 20,
        },
    )
    evaluation, verdict = evaluate(upload, result.student, data, spec, device="cpu")
    assert verdict.label == "masked", verdict.headline
    student = {a.attack: a for a in evaluation.models["student"].attacks}
    margin = student["pgd_linf_margin"].points[-1].robust_accuracy
    cross_entropy = student["pgd_linf_ce"].points[-1].robust_accuracy
    assert margin < cross_entropy  # the loss that does not saturate wins
