"""A job's expected work, stage by stage, and the ETA it gives at the job's measured pace
(torch-free: the web process computes the ETA of every job it shows).

The overall progress weighs its stages by fixed shares (core.contract.methods), but a job's real
shares vary by orders of magnitude: 20 epochs of PGD training cost 11 passes a batch where
distillation costs one, and the autoattack preset attacks 9 targets with APGD-T where the
default runs FGSM. Extrapolating that fraction (time so far x (1 - progress) / progress) is wrong
by the ratio of the real share to the fixed one, at every stage. So the ETA is priced instead:

* every stage's *expected* work in one unit, the **sample pass** (one forward and backward pass
  of the job's model on one sample): a training step is ``batch_size`` of them (the methods'
  own step counts: core.contract.training_cost), an attack step one (the audit's own plan:
  core.contract.evaluation_cost.audit_steps), a forward-only pass (soft labels, certification
  draws, corrupted images) :data:`FORWARD_ONLY` of one; load, export and report are small fixed
  shares (:data:`FIXED_SHARES`);
* the work done is the finished stages' work plus the current stage's fraction of its own (the
  stage reports its progress in real units: steps planned, attack steps, images);
* ETA = time so far x work left / work done: the job's measured throughput (sample passes a
  second, whatever the machine, the model and the load) applied to the work left.

The plan is an expectation, not the submit-time bound: an auto student is expected to train
:data:`EXPECTED_AUTO_STUDENT_EPOCHS` epochs (its bound is ~20 times that), attacks to run all
their steps (they stop early once every sample is fooled, so the evaluation of a weak model is
overestimated; the measured pace absorbs part of it). bench/eta.py measures the error.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from core.contract.corruptions import COLOUR_CORRUPTIONS, GRAYSCALE_CORRUPTIONS
from core.contract.evaluation_cost import audit_steps
from core.contract.methods import CATALOGUE, Stage, job_stages
from core.contract.spec import HardenSpec
from core.contract.training_cost import (
    BUILTIN_TRAIN_SAMPLES,
    UNKNOWN_TRAIN_SAMPLES,
    steps_per_epoch,
)

# A forward pass without a backward one costs about a third of a sample pass.
FORWARD_ONLY = 1 / 3
# An auto student (student_epochs unset) trains until its loss converges, then a low-rate finish:
# the ten students of bench/results/student_accuracy.md ran 6 to 59 epochs, median 25. Charged
# as a set epoch count is (core.contract.training_cost.student_epochs_charged: twice plus the
# finish where the scratch check may replace it), 12 is 29 epochs on a checked student.
EXPECTED_AUTO_STUDENT_EPOCHS = 12
# The stages that do a fixed amount of work whatever the spec (reading the data and the model,
# exporting and checking the ONNX file, writing the report and its plots), as shares of a job.
FIXED_SHARES = {"load": 0.02, "export": 0.03, "report": 0.03}
# No ETA before this many seconds, nor while loading: reading the data and the model says
# nothing of the pace of training or attacks.
ETA_MIN_SECONDS = 5.0
NO_PACE_STAGES = frozenset({"load"})


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
    (worker/progress.py's ProgressReporter): the ETA reads the stage's own fraction back out of
    that progress with them (:func:`stage_fraction`)."""
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
    """The expected work of each stage of a job, in sample passes, in the job's order."""

    work: dict[str, float]

    def done(self, stage: str, fraction: float) -> float | None:
        """The work done once ``stage`` is ``fraction`` done; None for a stage not planned."""
        if stage not in self.work:
            return None
        names = list(self.work)
        before = sum(self.work[name] for name in names[: names.index(stage)])
        return before + self.work[stage] * min(max(fraction, 0.0), 1.0)

    def remaining_s(self, stage: str, fraction: float, elapsed_s: float) -> float | None:
        """Seconds until the job ends at its pace so far: ``elapsed_s`` (time running) x work
        left / work done. None while there is no pace to measure yet (loading, or under
        :data:`ETA_MIN_SECONDS`) and for a stage not planned."""
        if stage in NO_PACE_STAGES or elapsed_s < ETA_MIN_SECONDS:
            return None
        done = self.done(stage, fraction)
        if done is None or done <= 0:
            return None
        left = max(sum(self.work.values()) - done, 0.0)
        return elapsed_s * left / done


def job_plan(spec: HardenSpec, shape: DataShape | None = None) -> JobPlan:
    """The expected work of ``spec``'s stages on a dataset of ``shape`` (default: what
    :func:`data_shape` knows of the spec's)."""
    shape = shape or data_shape(spec)
    spec = spec.for_input_shape(shape.input_shape)
    method = CATALOGUE[spec.methods[0]]
    batches = steps_per_epoch(shape.train_samples, spec.batch_size)
    expected = spec
    if spec.distillation.student_epochs is None:
        settings = spec.distillation.model_copy(
            update={"student_epochs": EXPECTED_AUTO_STUDENT_EPOCHS}
        )
        expected = spec.model_copy(update={"distillation": settings})
    steps = method.training_steps(expected, shape.train_samples, batches)
    variable: dict[str, float] = {
        stage.name: count * spec.batch_size
        for stage, count in zip(method.stages, steps, strict=True)
    }
    if "soft_labels" in variable:  # one pass of the teacher over the training set, forward only
        variable["soft_labels"] = shape.train_samples * FORWARD_ONLY
    if spec.evaluation.enabled:
        variable["evaluate"] = float(
            audit_steps(
                spec.evaluation,
                features=shape.input_shape[0] * shape.input_shape[1] * shape.input_shape[2],
                classes=shape.classes,
                test_samples=shape.test_samples,
            )
        )
    if spec.certifies:
        draws, images = spec.certification.counts("cpu")
        per_model = min(images, shape.test_samples) * (spec.certification.n0 + draws)
        variable["certify"] = 2 * per_model * FORWARD_ONLY
    if spec.corruptions.enabled:
        cells = len(spec.corruptions.severities) * _corruption_count(spec, shape)
        images = min(spec.corruptions.samples, shape.test_samples)
        variable["corruptions"] = 2 * cells * images * FORWARD_ONLY
    variable_total = sum(variable.values())
    fixed_total = sum(FIXED_SHARES.values())
    # A fixed share of the job: work / (1 - fixed) is the whole job's.
    whole = variable_total / (1 - fixed_total) if variable_total > 0 else 1.0
    work: dict[str, float] = {}
    for stage in progress_stages(spec):
        if stage.name in FIXED_SHARES:
            work[stage.name] = FIXED_SHARES[stage.name] * whole
        elif stage.name in variable:
            work[stage.name] = variable[stage.name]
    return JobPlan(work)


def _corruption_count(spec: HardenSpec, shape: DataShape) -> int:
    """The corruptions the job applies: its names that the input's family has (colour for
    three channels, else grayscale: core.audit.corruptions.family_of)."""
    family = COLOUR_CORRUPTIONS if shape.input_shape[0] == 3 else GRAYSCALE_CORRUPTIONS
    names = family if spec.corruptions.names is None else spec.corruptions.names
    return len({name for name in names if name in family})
