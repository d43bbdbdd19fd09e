"""Progress of trainings that stop at convergence: the estimate of the epochs left and the meter
that shows steps done against the steps expected."""

from __future__ import annotations

from core.hardening.training import Convergence, StepMeter


def _epochs_to_converge(rule: Convergence, losses: list[float]) -> int:
    for count in range(1, len(losses) + 1):
        if rule.reached(losses[:count]):
            return count
    raise AssertionError("never converged")


def test_epochs_left_on_a_geometric_loss_is_close_to_the_truth() -> None:
    rule = Convergence(offset=0.5)
    losses = [0.5 + 2.0 * 0.85**epoch for epoch in range(200)]
    converges_at = _epochs_to_converge(rule, losses)
    for seen in (11, 15, 20):
        estimate = seen + rule.epochs_left(losses[:seen])
        assert abs(estimate - converges_at) <= max(3, 0.2 * converges_at), (seen, estimate)
    assert rule.epochs_left(losses[:converges_at]) == 0


def test_epochs_left_before_enough_epochs_is_at_least_the_rules_minimum() -> None:
    rule = Convergence()
    assert rule.epochs_left([]) >= rule.min_epochs
    assert 3 + rule.epochs_left([3.0, 2.0, 1.5]) >= rule.min_epochs


def test_epochs_left_falls_back_when_the_loss_is_not_shrinking_geometrically() -> None:
    rule = Convergence()
    noisy = [2.0, 1.0] * 8 + [0.9, 0.5]
    assert rule.epochs_left(noisy) >= rule.window
    flat_then_drop = [1.0] * 11 + [0.5]
    assert rule.epochs_left(flat_then_drop) >= 1


def test_the_meter_reports_done_against_an_estimate_that_is_never_below_done() -> None:
    events: list[tuple[str, int, int]] = []
    meter = StepMeter("student", lambda stage, done, total: events.append((stage, done, total)))
    meter.later = 4
    meter.expect(3)
    for _ in range(5):  # more steps than the loop expected
        meter.step()
    meter.expect(2)
    meter.later = 0
    meter.finish()
    assert events[0] == ("student", 0, 7)
    assert all(done <= total for _, done, total in events)
    assert [done for _, done, _ in events] == sorted(done for _, done, _ in events)
    assert events[-1] == ("student", 5, 5)
