"""Every entry of the attack registry: it agrees with the spec's names, its fields are coherent,
and run through its own runner on a tiny model it stays inside its budget and the input range and
only counts as fooled samples that were classified correctly and really are fooled."""

from __future__ import annotations

from dataclasses import fields
from typing import get_args

import pytest
import torch
from torch import Tensor, nn

from core.audit.attacks.base import AttackResult
from core.audit.registry import REGISTRY, Attack
from core.audit.runs import AttackCall
from core.contract.attacks import CATALOGUE
from core.contract.evaluation import AttackName, EvaluationSpec
from tests.core.audit.shifted import Shifted
from tests.core.robust_models import digits, distilled, undefended

TOL = 1e-5
# A range other than [0, 1]: a runner that forgot to pass the bounds on would clip to [0, 1]
# and move samples at -1 by a whole unit, far outside every budget below.
BOUNDS = (-1.0, 1.0)
SETTINGS = EvaluationSpec(
    epsilons_linf=[0.1],
    epsilons_l2=[1.0],
    pgd_steps=5,
    cw_binary_steps=2,
    cw_iterations=10,
    jsma_max_fraction=0.1,
    square_queries=30,
    seed=3,
)
ATTACKS = list(REGISTRY.values())


@pytest.fixture(scope="module")
def batch() -> tuple[nn.Module, Tensor, Tensor]:
    data = digits()
    return Shifted(undefended()), data.x_test[:24] * 2 - 1, data.y_test[:24]


def _size(norm: str, delta: Tensor) -> Tensor:
    flat = delta.flatten(1)
    if norm == "linf":
        return flat.abs().max(1).values
    if norm == "l2":
        return flat.norm(dim=1)
    return (flat != 0).double().mean(1)  # l0: the fraction of features changed


def test_the_registry_is_the_catalogue_with_runners_and_the_spec_names_it() -> None:
    assert list(get_args(AttackName)) == list(CATALOGUE) == list(REGISTRY)
    for name, attack in REGISTRY.items():
        info = CATALOGUE[name]
        assert name == attack.name and callable(attack.run)
        assert all(getattr(attack, f.name) == getattr(info, f.name) for f in fields(info))


@pytest.mark.parametrize("attack", ATTACKS, ids=[a.name for a in ATTACKS])
def test_entry_fields_are_coherent(attack: Attack) -> None:
    counterpart = attack.loss_counterpart
    if counterpart is not None:
        # The same attack in the same norm, following a loss that does not saturate instead.
        assert counterpart in REGISTRY and counterpart != attack.name
        assert REGISTRY[counterpart].norm == attack.norm
        assert attack.loss == "ce" and REGISTRY[counterpart].loss != "ce"
    if attack.transfer_from is not None:
        source = REGISTRY[attack.transfer_from]
        # The transfer runs once per budget of its source's adversarials.
        assert source.transfer_from is None and not source.minimum_norm
        assert source.norm == attack.norm
        assert source.budgets(SETTINGS) == attack.budgets(SETTINGS)
    # The verdict reads a minimum-norm attack at each budget through its perturbation sizes.
    assert not attack.minimum_norm or attack.measures_perturbation
    # Only a minimum-norm attack runs without a budget.
    assert (attack.budgets(SETTINGS) == [None]) == attack.minimum_norm
    # An attack that reads no gradient of its target cannot be stopped by masked gradients.
    assert not attack.black_box or attack.sees_through_masking


def _run(
    attack: Attack, model: nn.Module, x: Tensor, y: Tensor, epsilon: float | None
) -> tuple[AttackResult, list[tuple[int, int]]]:
    """One run of ``attack`` through its runner, and the (step, total) its hook saw."""
    source_adversarial = None
    if attack.transfer_from is not None:
        # Crafted on another model, as the audit crafts them on the uploaded one.
        source_call = AttackCall(
            model=Shifted(distilled(100.0)), x=x, labels=y, epsilon=epsilon, settings=SETTINGS,
            bounds=BOUNDS, num_classes=10,
        )  # fmt: skip
        source_adversarial = REGISTRY[attack.transfer_from].run(source_call).adversarial
    steps: list[tuple[int, int]] = []
    call = AttackCall(
        model=model, x=x, labels=y, epsilon=epsilon, settings=SETTINGS, bounds=BOUNDS,
        num_classes=10, on_step=lambda step, total: steps.append((step, total)),
        source_adversarial=source_adversarial,
    )  # fmt: skip
    return attack.run(call), steps


@pytest.mark.parametrize("attack", ATTACKS, ids=[a.name for a in ATTACKS])
def test_entry_runs_within_its_budget_and_range(batch, attack: Attack) -> None:
    model, x, y = batch
    with torch.no_grad():
        correct = model(x).argmax(1) == y
    for epsilon in attack.budgets(SETTINGS):
        result, steps = _run(attack, model, x, y, epsilon)
        adversarial = result.adversarial
        assert adversarial.shape == x.shape
        if epsilon is not None:
            assert float(_size(attack.norm, adversarial - x).max()) <= epsilon + TOL
        assert float(adversarial.min()) >= BOUNDS[0] - TOL
        assert float(adversarial.max()) <= BOUNDS[1] + TOL
        # Success only ever counts samples that were classified correctly before the attack...
        assert torch.equal(result.correct_before, correct)
        assert not bool((result.success & ~result.correct_before).any())
        # ...and only samples its stored adversarial really fools (as the target, if targeted).
        with torch.no_grad():
            predicted = model(adversarial).argmax(1)[result.success]
        if attack.targeted:
            assert result.target is not None
            assert torch.equal(predicted, result.target.to(predicted.device)[result.success])
        else:
            assert bool((predicted != y[result.success]).all())
        # The runner passes the progress hook on (a transfer only replays adversarials: no steps).
        assert steps or attack.transfer_from is not None
        assert all(0 <= step <= total for step, total in steps)
