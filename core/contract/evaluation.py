"""The ``evaluation`` section of a job spec: the threat model, the attacks and their budgets.

Part of :class:`core.contract.spec.HardenSpec`, in its own file and torch-free (the API validates it
and
refuses an unknown attack at submit). core.audit runs what it describes.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from core.contract.attacks import (
    AUTOATTACK_ATTACKS,
    DEFAULT_ATTACKS,
    L2_BUDGET_ATTACKS,
    AttackName,
)
from core.contract.strict_model import StrictModel
from core.contract.threat_models import (
    PRESET_BUDGETS,
    THREAT_MODEL_RULE,
    ThreatModelName,
    threat_model_for_shape,
)

# The attack names, the default list and AutoAttack's are derived from the attack catalogue
# (torch-free): an attack described there is a valid name here.
__all__ = [
    "AUTOATTACK_ATTACKS",
    "DEFAULT_ATTACKS",
    "L2_BUDGET_ATTACKS",
    "AttackName",
    "EvaluationSpec",
]

EvaluationPreset = Literal["default", "autoattack"]
# What the autoattack preset fixes, as AutoAttack's standard version runs it: 100 iterations of
# APGD-CE, APGD-T and FAB-T, 9 target classes, Square with 5,000 queries. A job may ask for more,
# never for less: the preset's name is a promise about the evaluation's strength.
AUTOATTACK_MINIMUMS: dict[str, int] = {
    "pgd_steps": 100,
    "target_classes": 9,
    "square_queries": 5000,
}

# Evaluation samples by device type for samples / samples_slow 'auto': (fast, slow). The CPU's
# are the fixed defaults the audit always had (the default job, about a minute of attacks on 2
# CPU cores: bench/results/eval_default.md); a GPU attacks ten times as many, so sampling noise
# (about 5 points at 100 samples) no longer decides a verdict. bench/gpu.py times the default
# job's evaluation at these counts on a GPU (bench/results/gpu.md).
AUTO_SAMPLES: dict[str, tuple[int, int]] = {"cpu": (100, 50), "cuda": (1000, 500)}
SampleCount = Annotated[int, Field(ge=1, le=10_000)]


class EvaluationSpec(StrictModel):
    """The threat model and the attack budgets of the robustness audit."""

    enabled: bool = Field(True, description="Run the robustness evaluation at all.")
    preset: EvaluationPreset = Field(
        "default",
        description=(
            "'default': the fields below as given. 'autoattack': AutoAttack's standard version "
            "(Croce & Hein 2020): APGD-CE, APGD-T, FAB-T and Square on the same samples, "
            "robust only if every attack failed on a sample; attacks defaults to those four "
            "(more may be added), pgd_steps to 100, target_classes to 9, square_queries to "
            "5,000 (none may be set lower), samples_slow to samples (it may not differ)."
        ),
    )
    attacks: list[AttackName] = Field(
        default_factory=lambda: list(DEFAULT_ATTACKS),
        description="Attacks to run, for the uploaded model and the student side by side.",
    )
    threat_model: ThreatModelName | None = Field(
        None,
        description=(
            "Preset of the default budgets: 'mnist' (L-inf 0.1/0.2/0.3, L2 1/2/3), 'cifar' "
            "(L-inf 2/255, 4/255, 8/255, L2 0.25/0.5), 'imagenet' (L-inf 1/255, 2/255, 4/255, no "
            "L2), times the width of input_range. Unset: chosen from the input shape ("
            + THREAT_MODEL_RULE
            + "); the report states which. Budgets given below override the preset's."
        ),
    )
    epsilons_linf: list[float] | None = Field(
        None,
        min_length=1,
        max_length=16,
        description="L-infinity budgets, in input units. Unset: the threat model's.",
    )
    epsilons_l2: list[float] | None = Field(
        None,
        max_length=16,
        description=(
            "L2 budgets, in input units. Unset: the threat model's. May be empty when no "
            "budgeted L2 attack (pgd_l2_ce, pgd_l2_margin) runs."
        ),
    )
    samples: SampleCount | Literal["auto"] = Field(
        "auto",
        description=(
            "Test samples attacked by the fast attacks (1..10,000). 'auto': sized by the "
            "device the evaluation runs on, 100 on a CPU, 1,000 on a CUDA GPU (AUTO_SAMPLES)."
        ),
    )
    samples_slow: SampleCount | Literal["auto"] = Field(
        "auto",
        description=(
            "Test samples attacked by the slow ones (JSMA, CW-L2, Square), the first of the "
            "samples (1..10,000). 'auto': 50 on a CPU, 500 on a CUDA GPU; the autoattack "
            "preset attacks all samples with every attack."
        ),
    )
    pgd_steps: int = Field(
        20,
        ge=1,
        le=1000,
        description="Iterations of PGD and APGD, and of APGD-T and FAB-T per target class.",
    )
    target_classes: int = Field(
        9,
        ge=1,
        le=1000,
        description=(
            "APGD-T and FAB-T: the most likely wrong classes attacked in turn (AutoAttack: 9; "
            "fewer when the dataset has fewer other classes)."
        ),
    )
    cw_binary_steps: int = Field(5, ge=1, le=20, description="CW-L2 binary-search steps.")
    cw_iterations: int = Field(100, ge=1, le=10_000, description="CW-L2 Adam steps per search.")
    jsma_max_fraction: float = Field(
        0.145,
        gt=0,
        le=1,
        description="JSMA budget: at most this fraction of input features changed (paper: 14.5%).",
    )
    square_queries: int = Field(500, ge=1, le=100_000, description="Square attack query budget.")
    seed: int = Field(0, ge=0, le=2**31 - 1, description="Seed of the attack sampling.")
    shard_samples: int = Field(
        250,
        ge=1,
        le=10_000,
        description=(
            "Samples per shard of the audit: the drawn samples are dealt out to "
            "ceil(samples / shard_samples) shards, sample i to shard i mod that count, each "
            "attacked with every attack by whichever worker takes it, with random draws seeded "
            "from seed and the shard (shard 0 with seed itself) and merged in sample order, so "
            "the result is the same on one worker or many. It changes the attacks' random "
            "draws, not the work: one shard (shard_samples >= samples) attacks all samples at "
            "once."
        ),
    )

    @field_validator("epsilons_linf", "epsilons_l2")
    @classmethod
    def _positive(cls, values: list[float] | None) -> list[float] | None:
        if values is None:
            return None
        if any(not (0 < v <= 1000) for v in values):
            raise ValueError("every epsilon must be > 0 and <= 1000 (in input units)")
        return sorted(set(values))

    @model_validator(mode="after")
    def _l2_budgets_for_l2_attacks(self) -> EvaluationSpec:
        budgeted = [name for name in self.attacks if name in L2_BUDGET_ATTACKS]
        if self.epsilons_l2 == [] and budgeted:
            raise ValueError(
                f"epsilons_l2 is empty but attacks include {', '.join(budgeted)}, which attack "
                "at L2 budgets: give L2 budgets, leave epsilons_l2 unset (the threat model's), "
                "or leave those attacks out of attacks"
            )
        return self

    def budgets(self, norm: Literal["linf", "l2"], input_range: tuple[float, float]) -> list[float]:
        """The audited budgets of ``norm``: the spec's, else the threat model's preset (mnist's
        until :meth:`for_input_shape` has chosen one) times the width of ``input_range``."""
        given = self.epsilons_linf if norm == "linf" else self.epsilons_l2
        if given is not None:
            return list(given)
        linf, l2 = PRESET_BUDGETS[self.threat_model or "mnist"]
        width = float(input_range[1]) - float(input_range[0])
        return [epsilon * width for epsilon in (linf if norm == "linf" else l2)]

    def sample_counts(self, device_type: str) -> tuple[int, int]:
        """(samples, samples_slow) on a device of ``device_type`` ('cpu', 'cuda'): 'auto' sized
        by AUTO_SAMPLES (the CPU's for any other type), the autoattack preset's slow count equal
        to its fast one."""
        fast_auto, slow_auto = AUTO_SAMPLES.get(device_type, AUTO_SAMPLES["cpu"])
        fast = fast_auto if self.samples == "auto" else self.samples
        slow = slow_auto if self.samples_slow == "auto" else self.samples_slow
        return fast, fast if self.preset == "autoattack" else slow

    def for_input_shape(self, input_shape: tuple[int, int, int]) -> EvaluationSpec:
        """This spec with its threat model chosen from ``input_shape`` where unset."""
        if self.threat_model is not None:
            return self
        return self.model_copy(update={"threat_model": threat_model_for_shape(input_shape)})

    def resolved(
        self, input_shape: tuple[int, int, int], input_range: tuple[float, float], device_type: str
    ) -> EvaluationSpec:
        """This spec as an audit runs it, resolved in one step: its threat model chosen for the
        data, both budget lists filled in, and 'auto' sample counts sized for ``device_type``."""
        chosen = self.for_input_shape(input_shape)
        fast, slow = chosen.sample_counts(device_type)
        return chosen.model_copy(
            update={
                "epsilons_linf": chosen.budgets("linf", input_range),
                "epsilons_l2": chosen.budgets("l2", input_range),
                "samples": fast,
                "samples_slow": slow,
            }
        )

    @field_validator("attacks")
    @classmethod
    def _each_once(cls, names: list[AttackName]) -> list[AttackName]:
        # An attack named twice (or 50,000 times) would only repeat the same work: each runs
        # once, in the order of first mention.
        return list(dict.fromkeys(names))

    @model_validator(mode="before")
    @classmethod
    def _preset(cls, data: object) -> object:
        """Fill in what the autoattack preset fixes; refuse what would weaken it."""
        if not isinstance(data, dict) or data.get("preset") != "autoattack":
            return data
        given = dict(data)
        attacks = given.setdefault("attacks", list(AUTOATTACK_ATTACKS))
        if isinstance(attacks, list | tuple):
            missing = [name for name in AUTOATTACK_ATTACKS if name not in attacks]
            if missing:
                raise ValueError(
                    f"the autoattack preset runs {', '.join(AUTOATTACK_ATTACKS)}; attacks lacks "
                    f"{', '.join(missing)}: add them, or leave attacks unset"
                )
        for name, minimum in AUTOATTACK_MINIMUMS.items():
            value = given.setdefault(name, minimum)
            if isinstance(value, int | float) and value < minimum:
                raise ValueError(
                    f"the autoattack preset needs {name} >= {minimum} (AutoAttack's standard "
                    f"version), got {value}: raise it, or leave it unset"
                )
        samples = given.setdefault("samples", EvaluationSpec.model_fields["samples"].default)
        slow = given.setdefault("samples_slow", samples)
        if str(slow) != str(samples):
            raise ValueError(
                "the autoattack preset runs every attack on the same samples: leave samples_slow "
                f"unset or equal to samples ({samples}), got {slow}"
            )
        return given
