"""What each hardening method is, torch-free: its name, its stages, whether it trains against
attacks, and what its training costs.

The job contract (core/contract/spec.py: ``method``), the submit-time cost bound
(core/contract/training_cost.py),
the worker's progress (worker/progress.py) and the report read a method's description here and
never branch on its name; the torch implementations in core/hardening/ name their description
(``info``), which names them back (``implementation``; core/hardening/registry.py imports them).
Adding a method is three files: its settings and record types (a module of core/contract/), its
class (a module of core/hardening/), and its description in the catalogue here; the spec's and
the report's sections, the registry, the progress stages and the cost bound derive from it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal, TypeVar

from pydantic import BaseModel, Field, create_model

from core.contract.smoothing import SmoothingRecord, SmoothingSpec

if TYPE_CHECKING:
    from core.contract.spec import HardenSpec


@dataclass(frozen=True)
class Stage:
    """One stage a method reports progress under, with its rough share of a job's time (the
    stages of the job around it weigh 0.42: load, export, the audit and the report)."""

    name: str
    weight: float


@dataclass(frozen=True)
class Section:
    """A section a method owns in the job spec (its settings) or in the report (its record):
    the field's name and its pydantic type. core.contract.spec and core.report.schema add one
    field per section a description declares, so a new method's settings and record need no
    edit of either."""

    field: str
    model: type[BaseModel]
    description: str


_Model = TypeVar("_Model", bound=BaseModel)


def with_sections(
    base: type[_Model], sections: Iterable[Section], *, optional: bool
) -> type[_Model]:
    """``base`` with one field per section: optional (None when absent) for the report's,
    defaults filled in for the spec's. The model keeps ``base``'s name, validators and docs."""
    fields: dict[str, Any] = {
        section.field: (
            (section.model | None, Field(None, description=section.description))
            if optional
            else (
                section.model,
                Field(default_factory=section.model, description=section.description),
            )
        )
        for section in sections
    }
    if not fields:
        return base
    return create_model(  # type: ignore[call-overload,no-any-return]
        base.__name__, __base__=base, __module__=base.__module__, __doc__=base.__doc__, **fields
    )


@dataclass(frozen=True)
class MethodInfo:
    """One hardening method as the contract, the progress and the cost bound see it."""

    name: str
    title: str  # what it is, with its paper; also written into the ONNX metadata
    stages: tuple[Stage, ...]  # in the order it runs them
    # Trains against an attack, so needs a training budget (spec.robust, or the audit's largest)
    trains_against_attacks: bool
    # Its torch class, "module:Class" (core.hardening.registry imports it: no second list).
    implementation: str
    # Trains its model under Gaussian noise, as a base classifier of a smoothed one: the audit
    # certifies by default (core.contract.certification: enabled 'auto').
    trains_under_noise: bool = False
    # Its own spec section (settings no other method reads) and report section; the methods
    # described first share the spec's distillation and robust sections and the report's
    # distillation and robust_training, which predate this.
    settings: Section | None = None
    record: Section | None = None

    def settings_of(self, spec: HardenSpec) -> BaseModel:
        """Its settings in ``spec`` (its own section, which the spec always holds, defaults
        filled in)."""
        if self.settings is None:
            raise LookupError(f"method {self.name} has no settings section of its own")
        value = getattr(spec, self.settings.field)
        assert isinstance(value, self.settings.model)
        return value

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


class _UnderNoise(MethodInfo):
    def training_steps(self, spec: HardenSpec, train_samples: int, batches: int) -> list[int]:
        return [self.settings_of(spec).epochs * batches]  # type: ignore[attr-defined]


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
    implementation="core.hardening.distillation:DefensiveDistillation",
)
ADVERSARIAL: Final = _TrainedAgainstAttacks(
    name="adversarial",
    title="PGD adversarial training (Madry et al., ICLR 2018)",
    stages=(Stage("training", 0.58),),
    trains_against_attacks=True,
    implementation="core.hardening.robust:AdversarialTraining",
)
TRADES: Final = _TrainedAgainstAttacks(
    name="trades",
    title="TRADES (Zhang et al., ICML 2019)",
    stages=(Stage("training", 0.58),),
    trains_against_attacks=True,
    implementation="core.hardening.robust:Trades",
)
ROBUST_DISTILLATION: Final = _RobustDistillation(
    name="robust_distillation",
    title="adversarially robust distillation (Goldblum et al., AAAI 2020)",
    stages=(Stage("teacher", 0.25), Stage("soft_labels", 0.03), Stage("student", 0.30)),
    trains_against_attacks=True,
    implementation="core.hardening.robust:RobustDistillation",
)

RANDOMIZED_SMOOTHING: Final = _UnderNoise(
    name="randomized_smoothing",
    title="randomized smoothing (Cohen, Rosenfeld & Kolter, ICML 2019)",
    stages=(Stage("training", 0.58),),
    trains_against_attacks=False,
    implementation="core.hardening.smoothing:RandomizedSmoothing",
    trains_under_noise=True,
    settings=Section("smoothing", SmoothingSpec, "Randomized smoothing's training under noise."),
    record=Section("smoothing", SmoothingRecord, "Randomized smoothing's training record."),
)

# The catalogue: a method described above and listed here is one a job may name; its spec and
# report sections, its torch class, its progress stages and its cost all follow from this entry.
CATALOGUE: Final[dict[str, MethodInfo]] = {
    info.name: info
    for info in (DISTILLATION, ADVERSARIAL, TRADES, ROBUST_DISTILLATION, RANDOMIZED_SMOOTHING)
}
# Defensive distillation is the paper this service implements and the default (DESIGN.md).
DEFAULT_METHOD: Final = DISTILLATION.name

# The stages every job runs around its method's (core.pipeline), with their shares of its time.
BEFORE_METHOD: Final = (Stage("load", 0.02),)
AFTER_METHOD: Final = (
    Stage("export", 0.05),
    Stage("evaluate", 0.30),
    Stage("certify", 0.10),  # only when the job certifies (core.contract.certification)
    Stage("corruptions", 0.03),  # only when corruptions.enabled (core.contract.corruptions)
    Stage("report", 0.02),
)

if TYPE_CHECKING:
    HardeningMethodName = str
else:
    # Derived from the catalogue: a method listed above is a valid ``method`` at once.
    HardeningMethodName = Literal[tuple(CATALOGUE)]
HARDENING_METHODS: Final = tuple(CATALOGUE)


def job_stages(
    method: str,
    *,
    evaluation: bool = True,
    certification: bool = False,
    corruptions: bool = True,
) -> tuple[Stage, ...]:
    """Every stage a job whose (first) method is ``method`` passes, in order."""
    after = tuple(
        s
        for s in AFTER_METHOD
        if (evaluation or s.name != "evaluate")
        and (certification or s.name != "certify")
        and (corruptions or s.name != "corruptions")
    )
    return (*BEFORE_METHOD, *CATALOGUE[method].stages, *after)


def stage_names() -> tuple[str, ...]:
    """Every stage name any job may report, each once, in a job's order."""
    names: dict[str, None] = {s.name: None for s in BEFORE_METHOD}
    for info in CATALOGUE.values():
        names.update({s.name: None for s in info.stages})
    names.update({s.name: None for s in AFTER_METHOD})
    return tuple(names)
