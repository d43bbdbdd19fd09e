"""The per-sample worst case over attacks: a sample is robust at a budget only if every attack
run on it there failed.

This is how AutoAttack reports robust accuracy (Croce & Hein 2020): the minimum over attacks of
each one's robust accuracy can only overstate it, since different attacks fool different samples.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor

from core.audit.schema import ThreatNorm, WorstCase
from core.report.comparison import BudgetOutcomes

Budget = tuple[ThreatNorm, float]


@dataclass
class SampleOutcomes:
    """Per budget, each attack's per-sample robustness on one model (True: correctly classified
    and not fooled), in the order the attacks ran."""

    by_budget: dict[Budget, list[tuple[str, Tensor]]] = field(default_factory=dict)

    def add(self, attack: str, norm: ThreatNorm, epsilon: float, robust: Tensor) -> None:
        """Record one attack's outcome at one budget (L0 is not a threat model here: skipped)."""
        if norm != "l0":
            self.by_budget.setdefault((norm, epsilon), []).append((attack, robust.detach().cpu()))

    def per_budget(self) -> list[BudgetOutcomes]:
        """Per budget, the per-sample worst case itself (on the samples every attack there ran
        on): what a paired comparison with another model on the same samples needs."""
        return [
            BudgetOutcomes(norm=norm, epsilon=epsilon, robust=_every(outcomes).tolist())  # type: ignore[arg-type]
            for (norm, epsilon), outcomes in sorted(self.by_budget.items())
        ]

    def worst_case(self) -> list[WorstCase]:
        """Per budget, sorted by norm then epsilon: the worst case and the minimum over attacks,
        both on the samples every attack there ran on (slow attacks run on a prefix)."""
        rows = []
        for (norm, epsilon), outcomes in sorted(self.by_budget.items()):
            every = _every(outcomes)
            samples = len(every)
            means = [(float(robust[:samples].float().mean()), name) for name, robust in outcomes]
            lowest, lowest_name = min(means)
            rows.append(
                WorstCase(
                    norm=norm,  # type: ignore[arg-type]
                    epsilon=epsilon,
                    samples=samples,
                    attacks=list(dict.fromkeys(name for name, _ in outcomes)),
                    robust_accuracy=float(every.float().mean()),
                    min_mean_robust_accuracy=lowest,
                    min_mean_attack=lowest_name,
                )
            )
        return rows


def _every(outcomes: list[tuple[str, Tensor]]) -> Tensor:
    """Robust to every attack, on the samples every attack ran on (slow ones ran on a prefix)."""
    samples = min(len(robust) for _, robust in outcomes)
    every = outcomes[0][1][:samples].clone()
    for _, robust in outcomes[1:]:
        every &= robust[:samples]
    return every
