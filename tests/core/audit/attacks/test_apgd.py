"""APGD (core/audit/attacks/apgd.py): its step-size checkpoints."""

from __future__ import annotations

from core.audit.attacks.apgd import checkpoints


def test_apgd_checkpoints_grow_and_stay_inside() -> None:
    for steps in (10, 40, 100):
        marks = checkpoints(steps)
        assert marks == sorted(marks) and all(0 < m < steps for m in marks)
        gaps = [b - a for a, b in zip(marks, marks[1:], strict=False)]
        assert marks[0] >= 0.2 * steps and min(gaps) >= 1
