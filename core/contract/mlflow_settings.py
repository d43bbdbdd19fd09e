"""The ``mlflow`` section of a job spec: where the service hands the hardened model over.

Part of :class:`core.contract.spec.HardenSpec` (kept in its own file, torch- and mlflow-free: the
API
validates it). The worker does the logging (worker/mlflow_handoff.py); the service settings
``HARDEN_MLFLOW_*`` fill in what a job leaves unset and decide which tracking servers a job may
name (app/infra/mlflow_target.py).
"""

from __future__ import annotations

import re

from pydantic import Field, HttpUrl, field_validator

from core.contract.strict_model import StrictModel

# MLflow's own rule for alias names: letters, digits, '_' and '-', not 'latest' nor 'v<digits>'
# (those name versions); checked here so a bad alias is a 422 at submit, not a job warning.
_ALIAS = re.compile(r"[A-Za-z0-9_-]{1,255}")
_RESERVED_ALIAS = re.compile(r"(?i)latest|v\d+")


class MlflowSpec(StrictModel):
    """MLflow hand-off of a succeeded job: a run with the spec as parameters, the accuracies and
    timings as metrics, report.json and report.html, and model.onnx logged as an ONNX model and
    registered as a new version of ``registered_model`` with the alias and verdict tags."""

    enabled: bool = Field(
        True,
        description="false: no hand-off for this job, even when the service has a default "
        "tracking server (HARDEN_MLFLOW_TRACKING_URI).",
    )
    tracking_uri: HttpUrl | None = Field(
        None,
        description=(
            "http(s) URL of the MLflow tracking server. Unset: the service's "
            "HARDEN_MLFLOW_TRACKING_URI. The service accepts only hosts its operator allows "
            "(HARDEN_MLFLOW_ALLOWED_HOSTS; 422 otherwise)."
        ),
        examples=["https://mlflow.example.com"],
    )
    experiment: str | None = Field(
        None,
        min_length=1,
        max_length=500,
        description="Experiment the run is logged in (created if missing). Unset: the "
        "service's HARDEN_MLFLOW_EXPERIMENT ('harden').",
    )
    registered_model: str | None = Field(
        None,
        min_length=1,
        max_length=255,
        description="Registered model the hardened model becomes a new version of (created if "
        "missing). Unset: the service's HARDEN_MLFLOW_REGISTERED_MODEL ('harden-student').",
    )
    alias: str = Field(
        "candidate",
        description="Alias moved to the new version (MLflow aliases, not the deprecated stages); "
        "its tags 'verdict' and 'method' say what the audit found.",
    )

    @field_validator("alias")
    @classmethod
    def _alias(cls, alias: str) -> str:
        return check_alias(alias)


def check_alias(alias: str) -> str:
    """``alias`` if MLflow accepts it as an alias name, else a ValueError saying why."""
    if not _ALIAS.fullmatch(alias) or _RESERVED_ALIAS.fullmatch(alias):
        raise ValueError(
            f"alias {alias!r} is not a valid MLflow alias: use letters, digits, '_' and "
            "'-' (not 'latest' nor 'v' followed by digits, which name versions)"
        )
    return alias
