"""Properties of every attack: budgets, valid range, targets, relative strength, hooks."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from core.audit.attacks.apgd import apgd, apgd_targeted, checkpoints
from core.audit.attacks.base import dlr, margin
from core.audit.attacks.cw import carlini_wagner_l2
from core.audit.attacks.fab import fab_targeted
from core.audit.attacks.gradient import fgsm, pgd
from core.audit.attacks.jsma import changed_fraction, jsma
from core.audit.attacks.square import square_linf
from core.audit.attacks.transfer import transfer
from tests.core.audit.shifted import Shifted
from tests.core.robust_models import digits, undefended

TOL = 1e-5


@pytest.fixture(scope="module")
def batch() -> tuple[nn.Module, Tensor, Tensor]:
    data = digits()
    return undefended(), data.x_test[:60], data.y_test[:60]


LINF_ATTACKS = {
    "fgsm_ce": lambda m, x, y, e, b: fgsm(m, x, y, epsilon=e, bounds=b),
    "fgsm_margin": lambda m, x, y, e, b: fgsm(m, x, y, epsilon=e, loss="margin", bounds=b),
    "pgd_ce": lambda m, x, y, e, b: pgd(m, x, y, epsilon=e, steps=10, bounds=b),
    "pgd_margin": lambda m, x, y, e, b: pgd(m, x, y, epsilon=e, loss="margin", steps=10, bounds=b),
    "apgd_ce": lambda m, x, y, e, b: apgd(m, x, y, epsilon=e, loss="ce", steps=10, bounds=b),
    "apgd_dlr": lambda m, x, y, e, b: apgd(m, x, y, epsilon=e, steps=10, bounds=b),
    "apgd_t": lambda m, x, y, e, b: apgd_targeted(
        m, x, y, epsilon=e, steps=10, target_classes=3, bounds=b
    ),
    "fab_t": lambda m, x, y, e, b: fab_targeted(
        m, x, y, epsilon=e, steps=10, target_classes=3, bounds=b
    ),
    "square": lambda m, x, y, e, b: square_linf(m, x, y, epsilon=e, queries=100, bounds=b),
}
L2_ATTACKS = {
    "pgd_l2_ce": lambda m, x, y, e, b: pgd(m, x, y, epsilon=e, norm="l2", steps=10, bounds=b),
    "pgd_l2_margin": lambda m, x, y, e, b: pgd(
        m, x, y, epsilon=e, norm="l2", loss="margin", steps=10, bounds=b
    ),
}


# Per norm: the attacks, two budgets each is run at, and the per-sample size of a perturbation.
BUDGETS = {
    "linf": (LINF_ATTACKS, (0.05, 0.2), lambda delta: delta.abs().flatten(1).max(1).values),
    "l2": (L2_ATTACKS, (0.3, 1.5), lambda delta: delta.flatten(1).norm(dim=1)),
}


@pytest.mark.parametrize("bounds", [(0.0, 1.0), (-1.0, 1.0)])
@pytest.mark.parametrize(
    ("norm", "name"), [(norm, name) for norm, (table, _, _) in BUDGETS.items() for name in table]
)
def test_attacks_stay_in_budget_and_range(batch, norm, name, bounds) -> None:
    model, x, y = batch
    if bounds != (0.0, 1.0):
        model, x = Shifted(model), x * 2 - 1
    table, epsilons, size = BUDGETS[norm]
    for epsilon in epsilons:
        result = table[name](model, x, y, epsilon, bounds)
        assert float(size(result.adversarial - x).max()) <= epsilon + TOL
        assert float(result.adversarial.min()) >= bounds[0] - TOL
        assert float(result.adversarial.max()) <= bounds[1] + TOL
        # Success only ever counts samples that were classified correctly before the attack.
        assert not bool((result.success & ~result.correct_before).any())


def test_reported_success_is_real(batch) -> None:
    """A sample reported as fooled really is misclassified by its stored adversarial."""
    model, x, y = batch
    for result in (
        pgd(model, x, y, epsilon=0.1, loss="margin", steps=10),
        apgd(model, x, y, epsilon=0.1, steps=10),
        apgd_targeted(model, x, y, epsilon=0.1, steps=10, target_classes=3),
        fab_targeted(model, x, y, epsilon=0.1, steps=10, target_classes=3),
        square_linf(model, x, y, epsilon=0.1, queries=100),
        carlini_wagner_l2(model, x, y, binary_steps=2, iterations=30),
    ):
        with torch.no_grad():
            pred = model(result.adversarial).argmax(1)
        assert bool((pred[result.success] != y[result.success]).all())
        assert bool(
            (
                pred[result.correct_before & ~result.success]
                == y[result.correct_before & ~result.success]
            ).all()
        )


@pytest.mark.parametrize("loss", ["ce", "margin"])
def test_pgd_at_least_as_strong_as_fgsm(batch, loss) -> None:
    model, x, y = batch
    for epsilon in (0.05, 0.1, 0.15):
        one_step = fgsm(model, x, y, epsilon=epsilon, loss=loss)
        iterated = pgd(model, x, y, epsilon=epsilon, loss=loss, steps=20)
        assert int(iterated.success.sum()) >= int(one_step.success.sum())


def test_cw_l2_fools_an_undefended_model(batch) -> None:
    model, x, y = batch
    result = carlini_wagner_l2(model, x, y, binary_steps=5, iterations=100)
    rate = float(result.success.sum() / result.correct_before.sum())
    assert rate >= 0.9
    # Inputs stay in range thanks to the tanh change of variables.
    assert float(result.adversarial.min()) >= 0.0 and float(result.adversarial.max()) <= 1.0


@pytest.mark.parametrize(
    ("outputs", "saliency"), [("softmax", "pairs"), ("logits", "pairs"), ("logits", "target")]
)
@pytest.mark.parametrize("fraction", [0.05, 0.145])
def test_jsma_respects_its_budget_and_only_increases(batch, outputs, saliency, fraction) -> None:
    model, x, y = batch
    result = jsma(
        model, x, y, num_classes=10, outputs=outputs, max_fraction=fraction, saliency=saliency
    )
    changed = changed_fraction(result.adversarial, x)
    assert float(changed.max()) <= fraction + 1e-9
    assert bool((result.adversarial >= x).all())
    assert float(result.adversarial.max()) <= 1.0


@pytest.mark.parametrize("target_mode", ["random", "next"])
def test_targeted_attacks_reach_their_target_when_successful(batch, target_mode) -> None:
    model, x, y = batch
    saliency = jsma(model, x, y, num_classes=10, outputs="logits", target_mode=target_mode)
    assert saliency.target is not None and bool((saliency.target != y).all())
    targets = saliency.target
    cw = carlini_wagner_l2(model, x, y, binary_steps=3, iterations=50, targets=targets)
    for result in (saliency, cw):
        assert int(result.success.sum()) > 0
        with torch.no_grad():
            pred = model(result.adversarial).argmax(1)
        assert bool((pred[result.success] == targets[result.success]).all())
    if target_mode == "next":
        assert bool((targets == (y + 1) % 10).all())


def test_random_targets_are_seeded(batch) -> None:
    model, x, y = batch
    a = jsma(model, x[:10], y[:10], num_classes=10, seed=3, max_fraction=0.05)
    b = jsma(model, x[:10], y[:10], num_classes=10, seed=3, max_fraction=0.05)
    assert a.target is not None and b.target is not None
    assert torch.equal(a.target, b.target) and torch.equal(a.adversarial, b.adversarial)


def test_seeded_attacks_are_reproducible(batch) -> None:
    model, x, y = batch
    for run in (
        lambda s: pgd(model, x, y, epsilon=0.1, steps=5, seed=s),
        lambda s: square_linf(model, x, y, epsilon=0.1, queries=30, seed=s),
    ):
        assert torch.equal(run(7).adversarial, run(7).adversarial)


def test_step_hook_sees_every_step_and_can_stop_the_attack(batch) -> None:
    model, x, y = batch
    steps: list[tuple[int, int]] = []
    carlini_wagner_l2(
        model, x, y, binary_steps=2, iterations=5, on_step=lambda s, t: steps.append((s, t))
    )
    assert steps == [(i, 10) for i in range(1, 11)]

    class Stop(Exception):
        pass

    def stop(step: int, total: int) -> None:
        raise Stop

    for run in (
        lambda: pgd(model, x, y, epsilon=0.01, steps=5, on_step=stop),
        lambda: apgd(model, x, y, epsilon=0.01, steps=5, on_step=stop),
        lambda: jsma(model, x, y, num_classes=10, on_step=stop),
        lambda: square_linf(model, x, y, epsilon=0.01, queries=5, on_step=stop),
    ):
        with pytest.raises(Stop):
            run()


def test_dlr_is_scale_invariant_and_margin_is_not() -> None:
    logits = torch.randn(32, 10, generator=torch.Generator().manual_seed(0))
    labels = torch.randint(0, 10, (32,), generator=torch.Generator().manual_seed(1))
    assert torch.allclose(dlr(100 * logits, labels), dlr(logits, labels), atol=1e-5)
    assert torch.allclose(margin(100 * logits, labels), 100 * margin(logits, labels), rtol=1e-4)
    assert bool(((margin(logits, labels) > 0) == (logits.argmax(1) != labels)).all())


def test_apgd_checkpoints_grow_and_stay_inside() -> None:
    for steps in (10, 40, 100):
        marks = checkpoints(steps)
        assert marks == sorted(marks) and all(0 < m < steps for m in marks)
        gaps = [b - a for a, b in zip(marks, marks[1:], strict=False)]
        assert marks[0] >= 0.2 * steps and min(gaps) >= 1


def test_transfer_uses_source_adversarials(batch) -> None:
    model, x, y = batch
    source = pgd(model, x, y, epsilon=0.2, loss="margin", steps=10)
    applied = transfer(model, x, source.adversarial, y)
    # Transferring to the source itself reproduces the white-box result.
    assert torch.equal(applied.success, source.success)
