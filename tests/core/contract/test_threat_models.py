"""Threat-model presets: chosen from the input shape unless given, explicit budgets override
them, mnist's stay the old defaults, an empty L2 list only where no L2 attack runs, and the
audit states the preset it used."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError
from torch import nn

from core.audit.evaluate import evaluate
from core.contract.evaluation import EvaluationSpec
from core.contract.spec import HardenSpec
from core.contract.threat_models import threat_model_for_shape
from core.datasets.dataset import Dataset


@pytest.mark.parametrize(
    ("shape", "expected"),
    [
        ((1, 28, 28), "mnist"),
        ((1, 8, 8), "mnist"),
        ((3, 32, 32), "cifar"),
        ((4, 32, 32), "cifar"),
        ((3, 63, 200), "cifar"),
        ((3, 64, 64), "imagenet"),
        ((3, 224, 224), "imagenet"),
    ],
)
def test_preset_from_the_input_shape(shape: tuple[int, int, int], expected: str) -> None:
    assert threat_model_for_shape(shape) == expected
    assert EvaluationSpec().for_input_shape(shape).threat_model == expected
    # A preset given in the spec wins over the shape.
    assert EvaluationSpec(threat_model="cifar").for_input_shape(shape).threat_model == "cifar"


def test_mnist_budgets_are_the_old_defaults() -> None:
    spec = EvaluationSpec().resolved((1, 28, 28), (0.0, 1.0), "cpu")
    assert spec.threat_model == "mnist"
    assert spec.epsilons_linf == pytest.approx([0.1, 0.2, 0.3])
    assert spec.epsilons_l2 == pytest.approx([1.0, 2.0, 3.0])


def test_cifar_and_imagenet_budgets_scale_with_the_input_range() -> None:
    cifar = EvaluationSpec().resolved((3, 32, 32), (0.0, 1.0), "cpu")
    assert cifar.epsilons_linf == pytest.approx([2 / 255, 4 / 255, 8 / 255])
    assert cifar.epsilons_l2 == pytest.approx([0.25, 0.5])
    imagenet = EvaluationSpec().resolved((3, 224, 224), (0.0, 255.0), "cpu")
    assert imagenet.epsilons_linf == pytest.approx([1.0, 2.0, 4.0])
    assert imagenet.epsilons_l2 == []


def test_explicit_budgets_override_the_preset() -> None:
    spec = EvaluationSpec(epsilons_linf=[0.05], epsilons_l2=[0.7]).resolved(
        (3, 32, 32), (0, 1), "cpu"
    )
    assert spec.threat_model == "cifar"
    assert (spec.epsilons_linf, spec.epsilons_l2) == ([0.05], [0.7])


def test_empty_l2_budgets_only_without_budgeted_l2_attacks() -> None:
    with pytest.raises(ValidationError, match="epsilons_l2 is empty but attacks include pgd_l2"):
        EvaluationSpec(epsilons_l2=[])
    spec = EvaluationSpec(epsilons_l2=[], attacks=["fgsm_ce", "cw_l2"])
    assert spec.budgets("l2", (0.0, 1.0)) == []


def test_robust_l2_training_needs_an_l2_budget() -> None:
    with pytest.raises(ValidationError, match="set robust.epsilon"):
        HardenSpec(
            method="adversarial",
            robust={"norm": "l2"},
            evaluation={"epsilons_l2": [], "attacks": ["fgsm_ce"]},
        )
    given = HardenSpec(method="adversarial", robust={"norm": "l2", "epsilon": 0.5})
    assert given.robust_epsilon() == 0.5
    # The imagenet preset has no L2 budget: known only once the data is, refused then.
    imagenet = HardenSpec(method="adversarial", robust={"norm": "l2"}).for_input_shape((3, 64, 64))
    with pytest.raises(Exception, match="audits no l2 budget"):
        imagenet.robust_epsilon()


def test_audit_of_imagenet_sized_images_states_the_preset_and_skips_l2() -> None:
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(8, 3, 64, 64, generator=generator)
    y = torch.arange(8) % 2
    data = Dataset(x, y, x, y, 2, ["a", "b"], "test", (3, 64, 64))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 64 * 64, 2))
    spec = HardenSpec(
        evaluation={"samples": 4, "samples_slow": 4, "attacks": ["fgsm_ce", "pgd_l2_ce"]}
    )
    evaluation, _ = evaluate(model, model, data, spec, device="cpu")
    assert evaluation.threat_model == "imagenet"
    assert evaluation.epsilons_linf == pytest.approx([1 / 255, 2 / 255, 4 / 255])
    assert evaluation.epsilons_l2 == []
    attacks = {a.attack: a for a in evaluation.models["student"].attacks}
    assert [p.epsilon for p in attacks["fgsm_ce"].points] == pytest.approx(
        [1 / 255, 2 / 255, 4 / 255]
    )
    assert attacks["pgd_l2_ce"].points == []
