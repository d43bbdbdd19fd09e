"""One error family for everything the core refuses.

Each error carries a stable ``code`` (for clients and the job store), a human ``message`` saying
what went wrong, a ``hint`` saying how to fix it, and the HTTP status an API should answer with.
The web layer has one handler that maps these to problem+json; the worker records them on the job.
(Pattern from kornia's BaseError and safetensors' messages.)
"""

from __future__ import annotations

from typing import Any


class HardenError(Exception):
    """Base of every error the core raises on purpose."""

    code = "harden_error"
    status = 422

    def __init__(self, message: str, *, hint: str = "", **fields: Any) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.fields = fields

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.hint:
            out["hint"] = self.hint
        out.update({k: v for k, v in self.fields.items() if v is not None})
        return out


class InvalidSpecError(HardenError):
    code = "invalid_spec"


class DatasetError(HardenError):
    """A dataset reference or upload that cannot be used (missing array, bad labels, NaN...)."""

    code = "invalid_dataset"


class UnsupportedModelError(HardenError):
    """A model file whose format is unknown or whose contents cannot be loaded."""

    code = "unsupported_model"


class UnsafeModelError(UnsupportedModelError):
    """A model file that would execute code when loaded (a pickle). Refused without loading it."""

    code = "unsafe_model"


class ModelDatasetMismatchError(HardenError):
    """The model does not map the dataset's inputs to one logit per class."""

    code = "model_dataset_mismatch"


class JobCancelledError(HardenError):
    """Raised inside the pipeline when ``should_cancel()`` turns true."""

    code = "cancelled"
    status = 409


class DeviceError(HardenError):
    """The device a worker or a run was told to use does not exist on this machine: an
    operator's setting (HARDEN_DEVICE, --device), not the job's fault."""

    code = "device_unavailable"
    status = 503


class AuditHandedOff(Exception):  # noqa: N818 - a signal, not an error of the job
    """Raised out of an audit by a shard broker that computes shards for another process's audit
    (a helper: worker/shards.py): the shards it could claim are done and the merge is not its
    own. Never a failure of the job."""
