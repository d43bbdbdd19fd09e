"""The ``distillation`` section of a job spec: defensive distillation's own settings (Papernot et
al. 2016), torch-free. core.hardening.distillation runs what it describes; robust_distillation
reads its temperature and student architecture too.

Until report version 2 these fields were top-level spec fields; core.contract.spec.HardenSpec still
accepts them there, moved into this section with a deprecation note.
"""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import Field

from core.contract.strict_model import StrictModel

# The names of core.intake.zoo.ZOO, here so that the API (no torch) refuses an unknown
# architecture at submit instead of a worker failing the job later (core.intake.zoo derives ZOO
# from these names).
# A student's architecture (this section) or a safetensors upload's (the spec's architecture).
ZooArchitecture = Literal["mlp", "papernot_cifar", "papernot_mnist", "resnet18"]
ZOO_ARCHITECTURES: tuple[ZooArchitecture, ...] = get_args(ZooArchitecture)

# The scratch student's accuracy check (student_max_drop) holds out a tenth of the training set,
# at most STUDENT_CHECK_MOST images, and runs only when that is at least STUDENT_CHECK_LEAST: a
# point of accuracy is then at least one image (core.hardening.distillation).
STUDENT_CHECK_MOST = 1000
STUDENT_CHECK_LEAST = 100

# student_epochs=None ("auto"): the student trains until its soft-label loss stops improving
# (core.hardening.training.Convergence), bounded by STUDENT_STEPS_MAX optimizer steps and
# STUDENT_EPOCHS_MAX epochs, whichever comes first; core.plan.student_epoch_budget applies the
# bound. A step count fitted to one architecture left others 10-50 points below their upload
# (bench/results/student_accuracy.md).
STUDENT_STEPS_MAX = 20_000
STUDENT_EPOCHS_MAX = 500


class DistillationSpec(StrictModel):
    """Defensive distillation: the teacher at T, its soft labels, the student at T."""

    temperature: float = Field(
        100.0,
        ge=1.0,
        le=1000.0,
        description="Distillation temperature T (paper's MNIST choice: 100); robust_distillation "
        "matches its teacher's soft labels at this T too. Allowed: 1..1000.",
    )
    teacher_epochs: int = Field(
        2,
        ge=0,
        le=500,
        description="Epochs fine-tuning the T-scaled upload at T; 0 uses the scaled copy as is.",
    )
    student_epochs: int | None = Field(
        None,
        ge=1,
        le=STUDENT_EPOCHS_MAX,
        description=(
            "Epochs training the student at T on the soft labels. Unset (null): auto, train "
            "until the soft-label loss stops improving (no 2% gain over 5 epochs), at most "
            f"{STUDENT_STEPS_MAX} optimizer steps and {STUDENT_EPOCHS_MAX} epochs; the report "
            "records why it stopped. Measured: bench/results/student_accuracy.md."
        ),
    )
    student_parametrization: Literal["output_scale", "plain"] = Field(
        "output_scale",
        description=(
            "'output_scale' (default): the student is a normally initialised network times a "
            "fixed T, folded into its last linear layer at export: the same function class, "
            "objective and deployed logits as the paper's student, reached in far fewer steps. "
            "'plain': the paper's recipe, where the network itself must grow its logits T-fold "
            "(thousands of Adam steps; BatchNorm networks stay far below the upload); with "
            "student_max_drop null too, its student is deployed whatever its accuracy. "
            "Compared in bench/results/student_accuracy.md."
        ),
    )
    teacher_learning_rate: float | None = Field(
        None,
        gt=0,
        le=10.0,
        description=(
            "Learning rate fine-tuning the teacher from the trained upload. Unset: "
            "learning_rate / 10, as fine-tuning usually is: Adam's steps do not shrink with the "
            "gradient, and at the full rate two epochs at T=100 cost Papernot's CNN 1.7 points "
            "on builtin:digits (0.3 at a tenth; bench/results/student_accuracy.md)."
        ),
    )
    student_init: Literal["scratch", "teacher"] = Field(
        "scratch",
        description="'scratch' re-initialises the student (the paper); 'teacher' warm-starts it.",
    )
    student_max_drop: float | None = Field(
        0.015,
        ge=0,
        le=1,
        description=(
            "How much accuracy (a fraction: 0.015 is 1.5 points) a student trained from scratch "
            "may lose. It trains on all but a held-out tenth of the training set (at most "
            f"{STUDENT_CHECK_MOST} images); when its accuracy there is further than this below "
            "the upload's test accuracy, and by more than one standard error of the two "
            "estimates (noise alone does not fail it), even after its low-learning-rate finish, "
            "a student warm-started from the teacher is trained "
            "and deployed instead, and the report's distillation.student_check says so. A "
            "scratch student's accuracy depends on its initial weights: on a hard generated set "
            "an MLP's lands anywhere in 78-97% by seed (bench/results/student_accuracy.md). "
            "null: no check, every training image goes to the scratch student (the paper's "
            "plain recipe). Applies to student_init 'scratch' with the upload's architecture, "
            f"on at least {STUDENT_CHECK_LEAST * 10} training images."
        ),
    )
    student_architecture: ZooArchitecture | None = Field(
        None,
        description="Optional zoo architecture for the student (robust_distillation's too); "
        "default: the teacher's own.",
    )
