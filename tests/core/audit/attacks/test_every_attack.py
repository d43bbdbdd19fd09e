"""Properties every attack has: its budget and the valid range kept, reported success real,
targets reached, seeds reproducible, step hooks called. One attack family's own properties are in
its own file beside this one."""

from __future__ import annotations

import pytest
import torch

from core.audit.attacks.apgd import apgd, apgd_targeted
from core.audit.attacks.cw import carlini_wagner_l2
from core.audit.attacks.fab import fab_targeted
from core.audit.attacks.gradient import fgsm, pgd
from core.audit.attacks.jsma import jsma
from core.audit.attacks.square import square_linf
from tests.core.audit.shifted import Shifted

TOL = 1e-5


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
