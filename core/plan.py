"""The run plan: a job's spec resolved once, at the start of a run, into what will actually run.

The spec is what the user submitted (``student_epochs`` may be unset, the dataset may come as an
upload); the plan is the spec plus every decision taken from it and from the data: the dataset
reference used, the teacher's epochs, the student's epoch budget (exact when set, a bound when
auto), the batch size and the device. The method, the report, the ONNX metadata and the accuracy
note all read the plan, so they cannot disagree on a number. The student's auto bound is decided
here and nowhere else; when an auto student stops is the method's (it watches the loss). Torch-free,
like the spec.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from core.compute import Compute
from core.contract.dataset_ref import UPLOAD, UploadRef, missing_upload, parse_dataset_ref
from core.contract.fetched_refs import RegisteredRef, RemoteRef
from core.contract.spec import HardenSpec
from core.contract.training_cost import steps_per_epoch, student_epoch_budget
from core.errors import InvalidSpecError


def dataset_reference(spec: HardenSpec, dataset_file: Path | None) -> str:
    """The dataset a run uses: 'upload' when a file came with the job, else the spec's."""
    named = parse_dataset_ref(spec.dataset)
    # A dataset file sent with the job is what the user means unless the spec names another one
    # explicitly; the spec's default (builtin:mnist) must not silently win over an upload.
    if dataset_file is not None:
        if isinstance(named, RegisteredRef | RemoteRef):
            return spec.dataset  # a registered or remote dataset, fetched by the worker
        if "dataset" in spec.model_fields_set and not isinstance(named, UploadRef):
            raise InvalidSpecError(
                f"a dataset file was given and the spec also names dataset {spec.dataset!r}",
                hint="set dataset to 'upload' (or leave it out) to use the file, or send no file",
            )
        return UPLOAD
    if isinstance(named, UploadRef):
        raise missing_upload()
    return spec.dataset


@dataclass(frozen=True)
class RunPlan:
    """What one run does, resolved once; build it with :meth:`resolve`."""

    spec: HardenSpec  # as submitted: student_epochs may be None (auto)
    dataset: str  # the reference loaded: the spec's, or 'upload'
    train_samples: int
    device: str  # e.g. 'cpu', 'cuda', 'cuda:1'
    batch_size: int
    steps_per_epoch: int
    teacher_epochs: int
    teacher_learning_rate: float  # the spec's, else learning_rate / 10 (fine-tuning the upload)
    # Exact when the spec sets student_epochs; when auto, the most it may train (it stops at
    # convergence). What it trained is in the method's result.
    student_epochs: int
    student_epochs_auto: bool  # the spec left student_epochs unset
    # Training precision, memory layout and cuDNN autotuning on the device (core.compute).
    compute: Compute = Compute()

    @classmethod
    def resolve(
        cls,
        spec: HardenSpec,
        *,
        dataset: str,
        train_samples: int,
        device: str = "cpu",
        compute: Compute | None = None,
    ) -> RunPlan:
        """The plan of running ``spec`` on ``train_samples`` training images of ``dataset``."""
        batches = steps_per_epoch(train_samples, spec.batch_size)
        auto = spec.distillation.student_epochs is None
        student_epochs = (
            student_epoch_budget(train_samples, spec.batch_size)
            if spec.distillation.student_epochs is None
            else spec.distillation.student_epochs
        )
        return cls(
            spec=spec,
            dataset=dataset,
            train_samples=train_samples,
            device=device,
            batch_size=spec.batch_size,
            steps_per_epoch=batches,
            teacher_epochs=spec.distillation.teacher_epochs,
            teacher_learning_rate=(
                spec.distillation.teacher_learning_rate
                if spec.distillation.teacher_learning_rate is not None
                else spec.learning_rate / 10
            ),
            student_epochs=student_epochs,
            student_epochs_auto=auto,
            compute=compute or Compute(),
        )

    def spec_as_run(self) -> HardenSpec:
        """The spec with the dataset this run used filled in (the report's ``spec`` section:
        submitting it again reruns the same job; an auto student_epochs stays auto, and stops at
        the same epoch, the run being deterministic for a seed on one device)."""
        return self.spec.model_copy(update={"dataset": self.dataset})
