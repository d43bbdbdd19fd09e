"""The ``baseline`` section of a job spec: the model a new one is compared against.

Torch-free (the API validates it). A baseline is either a previous job of the same key (its
hardened ``model.onnx`` from the artifact store) or a version of an MLflow registered model named
by alias (e.g. the ``champion`` in production), downloaded from the job's MLflow tracking server
(core/contract/mlflow_settings.py says how it is addressed). The worker resolves it to a file;
that file is hostile input like any upload and goes through the same intake (core/intake).
"""

from __future__ import annotations

import re

from pydantic import Field, field_validator

from core.contract.mlflow_settings import check_alias
from core.contract.strict_model import StrictModel

# Job ids are the service's uuid4 hex (app/infra/db.py); anything else could name a path.
_JOB_ID = re.compile(r"[0-9a-f]{32}")


class JobBaseline(StrictModel):
    """A previous job's hardened model.onnx (a job of the same API key, succeeded)."""

    job: str = Field(description="The id of a succeeded job of the same API key.")

    @field_validator("job")
    @classmethod
    def _job(cls, job: str) -> str:
        if not _JOB_ID.fullmatch(job):
            raise ValueError(f"baseline.job {job!r} is not a job id (32 hexadecimal digits)")
        return job


class MlflowBaseline(StrictModel):
    """The version an alias of an MLflow registered model points at, from the job's MLflow
    tracking server (the job's ``mlflow.tracking_uri`` or the service's default)."""

    mlflow_model: str = Field(min_length=1, max_length=255, description="Registered model name.")
    alias: str = Field("champion", description="The alias whose version is the baseline.")

    @field_validator("alias")
    @classmethod
    def _alias(cls, alias: str) -> str:
        return check_alias(alias)


BaselineRef = JobBaseline | MlflowBaseline
