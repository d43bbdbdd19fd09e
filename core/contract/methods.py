"""What each hardening method is, torch-free: its name, its stages, whether it trains against
attacks, and what its training costs.

The job contract (core/contract/spec.py: ``method``), the submit-time cost bound
(core/contract/training_cost.py),
the worker's progress (worker/progress.py) and the report read a method's description here and
never branch on its name; the torch implementations in core/hardening/ name their description
(``info``), and core/hardening/registry.py pairs them. Adding a method is one description here,
one class beside the others, one registry line.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Literal

if TYPE_CHECKING:
    from core.contract.spec import HardenSpec


@dataclass(frozen=True)
class Stage:
    """One stage a method reports progress under, with its rough share of a job's time (the
    stages of the job around it weigh 0.42: load, export, the audit and the report)."""

    name: str
    weight: float


@dataclass(frozen=True)
class MethodInfo:
    """One hardening method as the contract, the progress and the cost bound see it."""

    name: str
    title: str  # what it is, with its paper; also written into the ONNX metadata
    stages: tuple[Stage, ...]  # in the order it runs them
    # Trains against an attack, so needs a training budget (spec.robust, or the audit's largest)
    trains_against_attacks: bool

    def training_steps(self, spec: HardenSpec, train_samples: int, batches: int) -> list[int]:
        """Worst-case training steps of each of its stages (in ``stages``' order) for ``spec``
        on ``train_samples`` images in ``batches`` batches an epoch (core/contract/training_cost.py:
        one forward and backward pass of one model over one batch)."""
        raise NotImplementedError


class _Distillation(MethodInfo):
    def training_steps(self, spec: HardenSpec, train_samples: int, batches: int) -> list[int]:
        from core.contract.training_cost import student_epochs_charged

        return [
            spec.distillation.teacher_epochs * batches,
            batches,  # the teacher's pass for the soft labels
            student_epochs_charged(spec, train_samples) * batches,
        ]


class _TrainedAgainstAttacks(MethodInfo):
    def training_steps(self, spec: HardenSpec, train_samples: int, batches: int) -> list[int]:
        from core.contract.training_cost import against_attacks

        return [against_attacks(spec, batches)]


class _RobustDistillation(MethodInfo):
    def training_steps(self, spec: HardenSpec, train_samples: int, batches: int) -> list[int]:
        from core.contract.training_cost import against_attacks

        teacher = against_attacks(spec, batches) if spec.robust.teacher == "adversarial" else 0
        return [teacher, batches, against_attacks(spec, batches)]


DISTILLATION: Final = _Distillation(
    name="distillation",
    title="defensive distillation (Papernot et al., IEEE S&P 2016)",
    stages=(Stage("teacher", 0.15), Stage("soft_labels", 0.03), Stage("student", 0.40)),
    trains_against_attacks=False,
)
ADVERSARIAL: Final = _TrainedAgainstAttacks(
    name="adversarial",
    title="PGD adversarial training (Madry et al., ICLR 2018)",
    stages=(Stage("training", 0.58),),
    trains_against_attacks=True,
)
TRADES: Final = _TrainedAgainstAttacks(
    name="trades",
    title="TRADES (Zhang et al., ICML 2019)",
    stages=(Stage("training", 0.58),),
    trains_against_attacks=True,
)
ROBUST_DISTILLATION: Final = _RobustDistillation(
    name="robust_distillation",
    title="adversarially robust distillation (Goldblum et al., AAAI 2020)",
    stages=(Stage("teacher", 0.25), Stage("soft_labels", 0.03), Stage("student", 0.30)),
    trains_against_attacks=True,
)

CATALOGUE: Final[dict[str, MethodInfo]] = {
    info.name: info for info in (DISTILLATION, ADVERSARIAL, TRADES, ROBUST_DISTILLATION)
}
# Defensive distillation is the paper this service implements and the default (DESIGN.md).
DEFAULT_METHOD: Final = DISTILLATION.name

# The stages every job runs around its method's (core.pipeline), with their shares of its time.
BEFORE_METHOD: Final = (Stage("load", 0.02),)
AFTER_METHOD: Final = (Stage("export", 0.05), Stage("evaluate", 0.33), Stage("report", 0.02))

if TYPE_CHECKING:
    HardeningMethodName = str
else:
    # Derived from the catalogue: a method listed above is a valid ``method`` at once.
    HardeningMethodName = Literal[tuple(CATALOGUE)]
HARDENING_METHODS: Final = tuple(CATALOGUE)


def job_stages(method: str, *, evaluation: bool = True) -> tuple[Stage, ...]:
    """Every stage a job whose (first) method is ``method`` passes, in order."""
    after = tuple(s for s in AFTER_METHOD if evaluation or s.name != "evaluate")
    return (*BEFORE_METHOD, *CATALOGUE[method].stages, *after)


def stage_names() -> tuple[str, ...]:
    """Every stage name any job may report, each once, in a job's order."""
    names: dict[str, None] = {s.name: None for s in BEFORE_METHOD}
    for info in CATALOGUE.values():
        names.update({s.name: None for s in info.stages})
    names.update({s.name: None for s in AFTER_METHOD})
    return tuple(names)
