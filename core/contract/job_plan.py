"""A job's expected work, stage by stage, and the ETA it gives at the job's measured pace
(torch-free: the web process computes the ETA of every job it shows).

The overall progress weighs its stages by fixed shares (core.contract.methods), but a job's real
shares vary by orders of magnitude: 20 epochs of PGD training cost 11 passes a batch where
distillation costs one, and the autoattack preset attacks 9 targets with APGD-T where the
default runs FGSM. Extrapolating that fraction (time so far x (1 - progress) / progress) is wrong
by the ratio of the real share to the fixed one, at every stage. So the ETA is priced instead:

* every stage that scales with the spec gets its *expected* work in one unit, the **sample
  pass** (one training pass of the job's model on one sample): a training step is
  ``batch_size`` of them (the methods' own step counts: core.contract.training_cost), the
  audit's model passes (its own plan, which its progress counts:
  core.contract.evaluation_cost.audit_passes) :data:`ATTACK_PASS` of one each, a certification
  draw a third, a corrupted image :data:`CORRUPTED_IMAGE`; load, export and report get their
  expected seconds (:data:`FIXED_SECONDS`);
* the work done is the finished stages' work plus the running stage's fraction of its own (each
  stage reports its progress in real units: training steps, attack passes, images);
* ETA = work left x seconds per sample pass so far + the fixed stages' seconds left: the job's
  measured throughput (whatever the machine, the model and the load) applied to what is left.

The plan is an expectation, not the submit-time bound: an auto student is expected to train
:data:`EXPECTED_AUTO_STUDENT_EPOCHS` epochs (its bound is ~20 times that), attacks to run all
their steps (they stop early once every sample is fooled, so the evaluation of a weak model is
overestimated; the measured pace absorbs part of it). One pace for the whole job: a stage whose
passes cost more than the others' (small attack batches against large training ones) is learnt
as it runs. bench/eta.py measures the error.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from core.contract.corruptions import COLOUR_CORRUPTIONS, GRAYSCALE_CORRUPTIONS
from core.contract.evaluation_cost import FORWARD_ONLY, audit_passes
from core.contract.methods import CATALOGUE, Stage, job_stages
from core.contract.spec import HardenSpec
from core.contract.training_cost import (
    BUILTIN_TRAIN_SAMPLES,
    UNKNOWN_TRAIN_SAMPLES,
    steps_per_epoch,
)

# The unit is a training pass on one sample (forward, backward through the weights, the
# optimizer's share). Measured against it on Papernot's MNIST CNN on builtin:mnist, 1 thread of
# the 2 shared cores (bench/results/eta.md, "calibration"): an attack pass of the audit (its
# backward stops at the input, and runs stop early on fooled samples) 0.54-0.93 of one, a
# corrupted image (the corruption, then both models' forward) 0.62-0.81, the soft-label stage
# (the teacher's forward over the training set and the student's set-up) about 1 a sample.
ATTACK_PASS = 0.7
CORRUPTED_IMAGE = 0.7
SOFT_LABEL_PASS = 1.0
# An auto student (student_epochs unset) trains until its loss converges, then a low-rate finish:
# the ten students of bench/results/student_accuracy.md ran 6 to 59 epochs, median 25. (The
# student's own bar corrects its estimate every epoch: core.hardening.training.StepMeter.)
EXPECTED_AUTO_STUDENT_EPOCHS = 25
# The stages whose time hardly depends on the spec, in seconds: reading the data and the model
# (about 2 s for builtin:mnist), exporting and checking the ONNX file, writing the report and
# its plots (about 2 s; measured on this 2-core CPU: bench/results/eta.md).
FIXED_SECONDS = {"load": 2.0, "export": 1.0, "report": 2.0}
# No ETA before this many seconds, nor while loading: reading the data and the model says
# nothing of the pace of training or attacks.
ETA_MIN_SECONDS = 5.0
NO_PACE_STAGES = frozenset({"load"})
# A stage's own pace is read once this much of it is done (where its start is known).
STAGE_PACE_FROM = 0.1


@dataclass(frozen=True)
class DataShape:
    """What the plan needs to know of a dataset: its split sizes, input shape and classes."""

    train_samples: int
    test_samples: int
    input_shape: tuple[int, int, int]
    classes: int


# The builtin datasets after their fixed split (core.datasets.references; a test checks them).
BUILTIN_SHAPES = {
    "builtin:mnist": DataShape(BUILTIN_TRAIN_SAMPLES["builtin:mnist"], 1000, (1, 28, 28), 10),
    "builtin:digits": DataShape(BUILTIN_TRAIN_SAMPLES["builtin:digits"], 360, (1, 8, 8), 10),
}
# A dataset the web process cannot look into (uploaded, registered, remote): the larger builtin
# training set, as the cost bound charges it, and the largest zoo input.
UNKNOWN_SHAPE = DataShape(UNKNOWN_TRAIN_SAMPLES, 1000, (3, 32, 32), 10)


def data_shape(spec: HardenSpec) -> DataShape:
    """The spec's dataset as the plan sees it: a builtin's own, else :data:`UNKNOWN_SHAPE`."""
    return BUILTIN_SHAPES.get(spec.dataset, UNKNOWN_SHAPE)


def progress_stages(spec: HardenSpec) -> tuple[Stage, ...]:
    """The stages, with their fixed shares, that a job's overall progress is reported over
    (worker/progress.py's ProgressReporter, which worker/runner.py builds over them): the ETA
    reads the stage's own fraction back out of that progress with
    them (:func:`stage_fraction`; tests/worker/test_progress.py checks both agree)."""
    return job_stages(
        spec.methods[0], evaluation=spec.evaluation.enabled, certification=spec.certifies
    )


def overall_progress(stages: Sequence[Stage], stage: str, fraction: float) -> float | None:
    """The job's 0..1 progress once ``stage`` is ``fraction`` done, over ``stages`` weighted by
    their shares; None for a stage not among them."""
    names = [s.name for s in stages]
    if stage not in names:
        return None
    index = names.index(stage)
    before = sum(s.weight for s in stages[:index])
    total = sum(s.weight for s in stages)
    return (before + stages[index].weight * min(max(fraction, 0.0), 1.0)) / total


def stage_fraction(stages: Sequence[Stage], stage: str, progress: float) -> float | None:
    """The fraction of ``stage`` done at overall ``progress``: :func:`overall_progress` undone
    (clipped to 0..1: progress never goes back, so it may still hold an earlier stage's end)."""
    start = overall_progress(stages, stage, 0.0)
    end = overall_progress(stages, stage, 1.0)
    if start is None or end is None:
        return None
    if end <= start:
        return 1.0
    return min(max((progress - start) / (end - start), 0.0), 1.0)


@dataclass(frozen=True)
class JobPlan:
    """A job's stages in its order: the expected work of those that scale with the spec, in
    sample passes, and the expected seconds of those that do not."""

    work: dict[str, float]
    fixed_s: dict[str, float]
    order: tuple[str, ...]

    def _before(self, stage: str, fraction: float) -> tuple[float, float] | None:
        """(work, fixed seconds) done once ``stage`` is ``fraction`` done."""
        if stage not in self.order:
            return None
        fraction = min(max(fraction, 0.0), 1.0)
        earlier = self.order[: self.order.index(stage)]
        work = sum(self.work.get(name, 0.0) for name in earlier)
        fixed = sum(self.fixed_s.get(name, 0.0) for name in earlier)
        return (
            work + fraction * self.work.get(stage, 0.0),
            fixed + fraction * self.fixed_s.get(stage, 0.0),
        )

    def done(self, stage: str, fraction: float) -> float | None:
        """The work done once ``stage`` is ``fraction`` done; None for a stage not planned."""
        before = self._before(stage, fraction)
        return None if before is None else before[0]

    def remaining_s(
        self,
        stage: str,
        fraction: float,
        elapsed_s: float,
        *,
        stage_elapsed_s: float | None = None,
    ) -> float | None:
        """Seconds until the job ends at its pace so far: the work left at the seconds per
        sample pass measured over the work done (the time running less the fixed stages'
        expected seconds), plus the fixed stages' seconds left. With ``stage_elapsed_s`` (the
        running stage's own time, where the caller knows when it began: ``harden run``) the
        stage's rest goes at its own pace once :data:`STAGE_PACE_FROM` of it is done: a stage
        whose passes cost more or less than the job's so far (attacks on a small batch after
        training on large ones, a machine that got busier) is read at once. None while there is
        no pace to measure yet (loading, under :data:`ETA_MIN_SECONDS`, no work done) and for a
        stage not planned."""
        if stage in NO_PACE_STAGES or elapsed_s < ETA_MIN_SECONDS:
            return None
        before = self._before(stage, fraction)
        if before is None or before[0] <= 0:
            return None
        work, fixed = before
        pace = max(elapsed_s - fixed, 0.0) / work
        work_left = max(sum(self.work.values()) - work, 0.0)
        fixed_left = max(sum(self.fixed_s.values()) - fixed, 0.0)
        stage_work = self.work.get(stage, 0.0)
        if (
            stage_elapsed_s is not None
            and stage_work > 0
            and fraction >= STAGE_PACE_FROM
            and stage_elapsed_s >= ETA_MIN_SECONDS
        ):
            rest = stage_work * (1 - min(fraction, 1.0))
            stage_left = stage_elapsed_s * (1 - min(fraction, 1.0)) / fraction
            return stage_left + max(work_left - rest, 0.0) * pace + fixed_left
        return work_left * pace + fixed_left


def job_plan(
    spec: HardenSpec, shape: DataShape | None = None, *, device_type: str = "cpu"
) -> JobPlan:
    """The expected work of ``spec``'s stages on a dataset of ``shape`` (default: what
    :func:`data_shape` knows of the spec's), run on a device of ``device_type``: 'auto' sample
    and image counts are the device's (a CUDA worker attacks ten times the CPU's samples)."""
    shape = shape or data_shape(spec)
    spec = spec.for_input_shape(shape.input_shape)
    method = CATALOGUE[spec.methods[0]]
    batches = steps_per_epoch(shape.train_samples, spec.batch_size)
    # The student as it is expected to train, not as the bound charges it (an auto student at
    # its bound, a checked one twice): the epochs set, or the auto student's usual count.
    student = spec.distillation.model_copy(
        update={
            "student_epochs": spec.distillation.student_epochs or EXPECTED_AUTO_STUDENT_EPOCHS,
            "student_max_drop": None,
        }
    )
    expected = spec.model_copy(update={"distillation": student})
    steps = method.training_steps(expected, shape.train_samples, batches)
    variable: dict[str, float] = {
        stage.name: count * spec.batch_size
        for stage, count in zip(method.stages, steps, strict=True)
    }
    if "soft_labels" in variable:  # one pass of the teacher over the training set
        variable["soft_labels"] = shape.train_samples * SOFT_LABEL_PASS
    if spec.evaluation.enabled:
        variable["evaluate"] = ATTACK_PASS * audit_passes(
            spec.evaluation,
            features=shape.input_shape[0] * shape.input_shape[1] * shape.input_shape[2],
            classes=shape.classes,
            test_samples=shape.test_samples,
            device_type=device_type,
        )
    if spec.certifies:
        draws, images = spec.certification.counts(device_type)
        per_model = min(images, shape.test_samples) * (spec.certification.n0 + draws)
        variable["certify"] = 2 * per_model * FORWARD_ONLY
    if spec.corruptions.enabled:
        cells = len(spec.corruptions.severities) * _corruption_count(spec, shape)
        images = min(spec.corruptions.samples, shape.test_samples)
        variable["corruptions"] = cells * images * CORRUPTED_IMAGE
    order = tuple(
        stage.name
        for stage in progress_stages(spec)
        if stage.name in variable or stage.name in FIXED_SECONDS
    )
    return JobPlan(
        work={name: variable[name] for name in order if name in variable},
        fixed_s={name: FIXED_SECONDS[name] for name in order if name in FIXED_SECONDS},
        order=order,
    )


def _corruption_count(spec: HardenSpec, shape: DataShape) -> int:
    """The corruptions the job applies: its names that the input's family has (colour for
    three channels, else grayscale: core.audit.corruptions.family_of)."""
    family = COLOUR_CORRUPTIONS if shape.input_shape[0] == 3 else GRAYSCALE_CORRUPTIONS
    names = family if spec.corruptions.names is None else spec.corruptions.names
    return len({name for name in names if name in family})
