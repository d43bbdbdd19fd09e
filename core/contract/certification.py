"""The ``certification`` section of a job spec: randomized smoothing's certificate for the upload
and the hardened model as base classifiers (Cohen, Rosenfeld & Kolter, ICML 2019), torch-free.

A certificate is a proof about the *smoothed* classifier ``g(x) = argmax_c P(f(x + δ) = c)``,
``δ ~ N(0, σ² I)``: with probability at least ``1 - alpha`` over the noise drawn, ``g`` predicts
the same class within the certified L2 radius. It says nothing about the base network ``f``
alone. core.audit.certify computes it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from core.contract.strict_model import StrictModel

# Cohen et al.'s smallest noise level, in units of inputs in [0, 1] (they train with 0.12-1.0 on
# CIFAR-10 and 0.25-1.0 on ImageNet; 0.25 keeps an MNIST-scale model accurate under noise).
DEFAULT_SIGMA = 0.25
# Noise draws per image for the estimate (the paper's n) by device: 100,000 as the paper on a
# GPU; on a CPU 1,000, whose largest certifiable radius at alpha 0.001 is about 2.46 sigma.
AUTO_DRAWS: dict[str, int] = {"cpu": 1_000, "cuda": 100_000}
# Images certified per model by device, 'auto' (the paper certifies 500 CIFAR-10 images).
AUTO_IMAGES: dict[str, int] = {"cpu": 20, "cuda": 500}


class CertificationSpec(StrictModel):
    """Which images are certified, how many noise draws each, at what confidence."""

    enabled: bool | Literal["auto"] = Field(
        "auto",
        description=(
            "Certify the upload and the hardened model. 'auto': when the job's method trains its "
            "model under noise (randomized_smoothing); certifying any other model costs n "
            "forward passes per image and usually certifies nothing."
        ),
    )
    sigma: float | None = Field(
        None,
        gt=0,
        le=1000,
        description=(
            "Noise level of the smoothed classifiers, in input units. Unset: the noise the "
            "hardened model was trained under, else 0.25 times the width of input_range."
        ),
    )
    n0: int = Field(100, ge=1, le=100_000, description="Draws to select the top class.")
    n: int | Literal["auto"] = Field(
        "auto",
        description="Draws to estimate its probability. 'auto': 1,000 on a CPU, 100,000 on a GPU.",
    )
    alpha: float = Field(
        0.001, gt=0, lt=0.5, description="The certificate's failure probability (Cohen: 0.001)."
    )
    samples: int | Literal["auto"] = Field(
        "auto",
        description="Test images certified per model. 'auto': 20 on a CPU, 500 on a GPU.",
    )
    radii: list[float] = Field(
        default_factory=lambda: [0.25, 0.5, 0.75, 1.0],
        description="L2 radii, in input units, at which certified accuracy is reported.",
    )
    batch_size: int = Field(1000, ge=1, le=100_000, description="Noisy inputs per forward pass.")

    def counts(self, device_type: str) -> tuple[int, int]:
        """(draws per image, images) on a device of ``device_type``; 'auto' sized by it."""
        draws = AUTO_DRAWS.get(device_type, AUTO_DRAWS["cpu"]) if self.n == "auto" else self.n
        images = (
            AUTO_IMAGES.get(device_type, AUTO_IMAGES["cpu"])
            if self.samples == "auto"
            else self.samples
        )
        return draws, images


class CertifiedAt(BaseModel):
    model_config = ConfigDict(extra="forbid")

    radius: float
    certified_accuracy: float = Field(
        ge=0, le=1, description="Images whose certified class is right with at least this radius."
    )


class ModelCertification(BaseModel):
    """One base classifier's smoothed version, certified on the same images as the other."""

    model_config = ConfigDict(extra="forbid")

    certified: list[CertifiedAt]
    smoothed_accuracy: float = Field(
        ge=0, le=1, description="Right and not abstained: certified accuracy at radius 0."
    )
    abstain_rate: float = Field(ge=0, le=1, description="Images CERTIFY abstained on.")
    mean_radius: float = Field(ge=0, description="Mean certified radius of the right ones.")
    radii: list[float] = Field(description="Per image, its certified radius (0: wrong/abstain).")
    seconds_per_image: float = Field(ge=0)


class Certification(BaseModel):
    """The certification section of the report."""

    model_config = ConfigDict(extra="forbid")

    sigma: float
    n0: int
    n: int
    alpha: float
    samples: int
    seed: int
    what: str = Field(
        description="What is certified, in words: the smoothed classifier, never the base one."
    )
    models: dict[str, ModelCertification]
