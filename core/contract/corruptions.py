"""The ``corruptions`` section of a job spec and its report types, torch-free: accuracy of the
upload and the hardened model under common corruptions at five severities.

Adversarially trained models are known to lose accuracy outside their threat model (fog,
contrast, blur: RobustBench's corruption track); this section measures that cost on the job's own
models. The corruption families are CIFAR-10-C/ImageNet-C's for colour inputs (Hendrycks &
Dietterich, ICLR 2019) and MNIST-C's for grayscale ones (Mu & Gilmer, 2019), generated on the fly
from the test split with fixed seeds by core.audit.corruptions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

from core.contract.strict_model import StrictModel

# Three input channels: the colour family; any other channel count: the grayscale family, applied
# to each channel alike.
COLOUR_CORRUPTIONS = (
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "gaussian_blur",
    "contrast",
    "brightness",
    "fog",
    "pixelate",
)
GRAYSCALE_CORRUPTIONS = (
    "shot_noise",
    "impulse_noise",
    "rotate",
    "shear",
    "scale",
    "translate",
    "stripe",
    "fog",
    "brightness",
    "contrast",
)
if TYPE_CHECKING:
    CorruptionName = str
else:  # derived from the two families: a corruption listed above is a valid name at once
    CorruptionName = Literal[tuple(dict.fromkeys(COLOUR_CORRUPTIONS + GRAYSCALE_CORRUPTIONS))]
Severity = Literal[1, 2, 3, 4, 5]
SEVERITIES: tuple[Severity, ...] = (1, 2, 3, 4, 5)


class CorruptionsSpec(StrictModel):
    """Which corruptions, at which severities, on how many test images."""

    enabled: bool = Field(
        True, description="Measure both models' accuracy under common corruptions."
    )
    names: list[CorruptionName] | None = Field(
        None,
        description=(
            "Corruptions to apply. Unset: the colour family (CIFAR-10-C) for 3-channel inputs, "
            "the grayscale family (MNIST-C) otherwise; a name outside the input's family is "
            "skipped with a note."
        ),
    )
    severities: list[Severity] = Field(
        default_factory=lambda: list(SEVERITIES), description="Severities, 1 (mild) to 5."
    )
    samples: int = Field(500, ge=1, le=100_000, description="Test images corrupted (the first).")
    seed: int = Field(0, ge=0, description="Seed of every random corruption.")
    margin: float = Field(
        5.0,
        ge=0,
        le=100,
        description=(
            "Points of mean corruption accuracy the hardened model may lose against the upload "
            "before the verdict says it is weaker under corruptions."
        ),
    )
    batch_size: int = Field(500, ge=1, le=100_000, description="Images per forward pass.")


class CorruptionAccuracy(BaseModel):
    """One corruption at one severity: each model's accuracy on the same corrupted images."""

    model_config = ConfigDict(extra="forbid")

    corruption: str
    severity: int
    uploaded: float
    student: float


class CorruptionDrop(BaseModel):
    """One corruption over its severities: the hardened model's loss against the upload."""

    model_config = ConfigDict(extra="forbid")

    corruption: str
    uploaded: float = Field(description="The upload's mean accuracy over the severities.")
    student: float = Field(description="The hardened model's mean accuracy over the severities.")
    drop_points: float = Field(description="(uploaded - student) x 100, in points.")
    noise_points: float = Field(
        description="1.96 standard errors of that drop, paired per image (same corrupted inputs)."
    )
    weaker: bool = Field(
        description="The drop exceeds both the margin and its noise: hardening cost accuracy here."
    )


class CorruptionRobustness(BaseModel):
    """The report's corruptions section."""

    model_config = ConfigDict(extra="forbid")

    family: Literal["colour", "grayscale"]
    samples: int
    seed: int
    margin_points: float
    clean: dict[str, float] = Field(description="Each model's accuracy on the uncorrupted images.")
    mean_corruption_accuracy: dict[str, float] = Field(
        description="Each model's accuracy over every corruption and severity."
    )
    relative_change: float | None = Field(
        description="(student - uploaded) / uploaded mean corruption accuracy; None if it is 0."
    )
    drop_points: float = Field(description="Mean corruption accuracy lost, in points.")
    noise_points: float = Field(description="1.96 paired standard errors of that drop, in points.")
    per_corruption: list[CorruptionDrop]
    accuracies: list[CorruptionAccuracy]
    seconds: float
    skipped: list[str] = Field(default_factory=list)

    @property
    def weaker_under(self) -> list[str]:
        """The corruptions where hardening cost more than the margin, beyond noise."""
        return [row.corruption for row in self.per_corruption if row.weaker]
