"""The run plan: a job's spec resolved once, at the start of a run, into what will actually run.

The spec is what the user submitted (the dataset may come as an upload); the plan is the spec plus
the decisions every method shares, taken from it and from the data: the dataset reference used,
the training set's size, the batch size, its steps per epoch, the device and how it is used. A
method resolves its own numbers from the plan (distillation's epochs:
core.hardening.student.DistillationPlan), so the plan holds nothing one method alone reads.
Torch-free, like the spec.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from core.compute import Compute
from core.contract.dataset_ref import UPLOAD, UploadRef, missing_upload, parse_dataset_ref
from core.contract.fetched_refs import RegisteredRef, RemoteRef
from core.contract.spec import HardenSpec
from core.contract.training_cost import steps_per_epoch
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
        return cls(
            spec=spec,
            dataset=dataset,
            train_samples=train_samples,
            device=device,
            batch_size=spec.batch_size,
            steps_per_epoch=batches,
            compute=compute or Compute(),
        )

    def spec_as_run(self) -> HardenSpec:
        """The spec with the dataset this run used filled in (the report's ``spec`` section:
        submitting it again reruns the same job; an auto student_epochs stays auto, and stops at
        the same epoch, the run being deterministic for a seed on one device)."""
        return self.spec.model_copy(update={"dataset": self.dataset})
