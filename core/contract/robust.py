"""The hardening methods and the ``robust`` section of a job spec: how the methods that train
against attacks train.

Part of :class:`core.contract.spec.HardenSpec`, in its own file and torch-free (the API validates
it).
core.hardening.robust runs what it describes.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from core.contract.methods import HARDENING_METHODS, HardeningMethodName
from core.contract.strict_model import StrictModel

__all__ = ["HARDENING_METHODS", "HardeningMethodName", "RobustTrainingSpec"]


class RobustTrainingSpec(StrictModel):
    """How the methods that train against attacks train: ``adversarial`` (PGD adversarial
    training, Madry et al. 2018), ``trades`` (Zhang et al. 2019) and ``robust_distillation``
    (ARD, Goldblum et al. 2020). Defensive distillation ignores it."""

    norm: Literal["linf", "l2"] = Field("linf", description="Norm of the training budget.")
    epsilon: float | None = Field(
        None,
        gt=0,
        le=1000,
        description=(
            "Training budget in input units. Unset: the largest audited budget of that norm "
            "(evaluation.epsilons_linf or epsilons_l2): train for the strongest threat audited."
        ),
    )
    steps: int = Field(10, ge=1, le=100, description="PGD steps of the inner maximisation.")
    step_size: float | None = Field(
        None, gt=0, le=1000, description="PGD step size. Unset: 2.5 * epsilon / steps (Madry)."
    )
    fast: bool = Field(
        False,
        description=(
            "One FGSM step from a random start at 1.25 * epsilon (Wong et al. 2020) instead of "
            "PGD: about steps/1 times cheaper per batch. Guarded against catastrophic "
            "overfitting: PGD accuracy on a held-out batch each epoch; when it collapses the "
            "best epoch is restored and training goes on with PGD."
        ),
    )
    epochs: int = Field(20, ge=1, le=500, description="Epochs of training against attacks.")
    warmup_epochs: int = Field(
        5,
        ge=0,
        le=500,
        description=(
            "Epochs over which the budget grows linearly from 0 to epsilon: a large budget from "
            "the first step can stall training at chance (seen with epsilon 0.3 on MNIST)."
        ),
    )
    start: Literal["upload", "scratch"] = Field(
        "upload",
        description="'upload': fine-tune the uploaded model; 'scratch': re-initialise it first.",
    )
    trades_beta: float = Field(
        6.0, gt=0, le=100, description="TRADES: weight of the robustness (KL) term (paper: 6)."
    )
    distillation_alpha: float = Field(
        1.0,
        ge=0,
        le=1,
        description=(
            "robust_distillation: weight of the teacher's soft labels at T on adversarial "
            "inputs against the hard labels' cross-entropy on clean inputs (ARD: 1 - alpha)."
        ),
    )
    teacher: Literal["adversarial", "upload"] = Field(
        "adversarial",
        description=(
            "robust_distillation's teacher: 'adversarial' trains one from the upload first "
            "(PGD); 'upload' uses the upload as it is (when it is already robust)."
        ),
    )
