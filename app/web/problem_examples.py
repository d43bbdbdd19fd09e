"""The table of refusals: every error a route can answer, as one real example each.

Every entry is one real refusal: the error class that raises it, when it happens, and the
detail and hint the service sends (tests/app/web/test_openapi.py replays most of them against the
app and compares the bodies). app.web.problem_docs turns the entries a route names into its
OpenAPI responses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from app.web.dataset_refs import DATASET_PATH_HINT, DATASET_URL_HINT, REGISTER_HINT
from app.web.errors import (
    AuthError,
    BadRequestError,
    ConflictError,
    IdempotencyKeyReusedError,
    InvalidRequestError,
    JobNotDoneError,
    NotFoundError,
    NotReadyError,
    PayloadTooLargeError,
    ServiceUnavailableError,
)
from app.web.problems import DATABASE_DOWN_ERROR, problem_body
from app.web.submit import evaluation_too_large, too_many_active_jobs, training_too_large
from core.contract.spec import HardenSpec
from core.datasets.npz_file import NPZ_HINT
from core.errors import (
    DatasetError,
    HardenError,
    InvalidSpecError,
    UnsafeModelError,
    UnsupportedModelError,
)

EXAMPLE_JOB_ID = "0b5c1b7f6f7e4b3e9a0c2d4e6f8a1b2c"
EXAMPLE_DATASET_ID = "7d2e9c4a1b3f4e6d8c0a2b4d6f8e1a3c"
DEFAULT_LIMIT = 512 * 1024 * 1024  # Settings.max_upload_bytes' default, as the example shows


@dataclass(frozen=True)
class ProblemExample:
    """One refusal: its error class, when it happens, and the body the service answers."""

    error: type[HardenError]
    when: str
    detail: str
    hint: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def status(self) -> int:
        return self.error.status

    def body(self) -> dict[str, Any]:
        return problem_body(self.status, self.error.code, self.detail, hint=self.hint, **self.extra)


def _field_error(field_name: str, message: str, kind: str) -> dict[str, Any]:
    return {"errors": [{"field": field_name, "message": message, "type": kind}]}


# A config whose evaluation passes the default HARDEN_MAX_EVALUATION_STEPS (replayed in the tests).
COSTLY_CONFIG = {
    "dataset": "builtin:digits",
    "evaluation": {"samples": 10_000, "samples_slow": 10_000, "pgd_steps": 1000},
}
DEFAULT_EVALUATION_LIMIT = 100_000_000  # Settings.max_evaluation_steps' default


def _costly_example() -> ProblemExample:
    error = evaluation_too_large(HardenSpec.model_validate(COSTLY_CONFIG), DEFAULT_EVALUATION_LIMIT)
    assert error is not None
    return ProblemExample(
        InvalidSpecError,
        "the spec's worst-case evaluation passes HARDEN_MAX_EVALUATION_STEPS attack steps",
        error.message,
        error.hint,
        {k: v for k, v in error.fields.items() if k not in ("code", "hint")},
    )


# A config whose training passes the default HARDEN_MAX_TRAINING_STEPS (the 500 + 500
# epochs at batch size 1; replayed in the tests).
LONG_TRAINING_CONFIG = {
    "dataset": "builtin:mnist",
    "teacher_epochs": 500,
    "student_epochs": 500,
    "batch_size": 1,
}
DEFAULT_TRAINING_LIMIT = 1_000_000  # Settings.max_training_steps' default
DEFAULT_ACTIVE_LIMIT = 4  # Settings.max_active_jobs_per_key's default


def _long_training_example() -> ProblemExample:
    error = training_too_large(
        HardenSpec.model_validate(LONG_TRAINING_CONFIG), DEFAULT_TRAINING_LIMIT
    )
    assert error is not None
    return ProblemExample(
        InvalidSpecError,
        "the spec's worst-case training passes HARDEN_MAX_TRAINING_STEPS training steps",
        error.message,
        error.hint,
        {k: v for k, v in error.fields.items() if k not in ("code", "hint")},
    )


def _quota_example() -> ProblemExample:
    error = too_many_active_jobs(DEFAULT_ACTIVE_LIMIT, DEFAULT_ACTIVE_LIMIT)
    return ProblemExample(
        type(error),
        "the API key already has HARDEN_MAX_ACTIVE_JOBS_PER_KEY jobs queued or running",
        error.message,
        error.hint,
        dict(error.fields),
    )


_LIMIT_MESSAGE = "Input should be greater than or equal to 1"
_KEY_MESSAGE = "String should have at most 255 characters"
_TEMPERATURE_MESSAGE = "Input should be greater than or equal to 1"
_PRIVATE_MESSAGE = "127.0.0.1 is not a public address (loopback, private, link-local or reserved)"
_LAYOUT_MESSAGE = "Input should be 'triton' or 'kserve'"
_REQUEST_HINT = "Fix the listed fields; the OpenAPI document at /docs describes each one."
_RANGE_MESSAGE = "input_range must be a JSON list [low, high] with low < high, got '[1, 0]'"

EXAMPLES: dict[str, ProblemExample] = {
    # 400: the upload itself is not a usable form
    "not_multipart": ProblemExample(
        BadRequestError,
        "the body is not multipart/form-data",
        "POST /harden takes multipart/form-data",
        "send the model as a file part named 'model' (curl -F model=@model.pt)",
    ),
    "unknown_part": ProblemExample(
        BadRequestError,
        "a part other than model, dataset and config, or a file part sent twice",
        "unknown form field 'weights'",
        "send the parts 'model' (file), optional 'dataset' (file) and 'config' (JSON text)",
    ),
    "cut_off_upload": ProblemExample(
        BadRequestError,
        "the multipart body is malformed or ends inside a part",
        "the multipart body ended in the middle of a part",
        "the upload was cut off: send it again",
    ),
    # 401: keys mode only
    "no_api_key": ProblemExample(
        AuthError,
        "no 'Authorization: Bearer' header",
        "this endpoint needs an API key",
        "send 'Authorization: Bearer <key>'; an operator creates keys with "
        "'harden keys create --name NAME'",
    ),
    "unknown_api_key": ProblemExample(
        AuthError,
        "the key is unknown or revoked",
        "the API key is not valid (unknown or revoked)",
        "check the key for typos, or ask an operator for a new one",
    ),
    # 404
    "unknown_job": ProblemExample(
        NotFoundError,
        "no job with this id belongs to the caller's API key",
        f"no job {EXAMPLE_JOB_ID!r}",
        "check the id (GET /jobs lists yours); jobs of other API keys are not visible",
    ),
    "unknown_artifact": ProblemExample(
        NotFoundError,
        "the file name is none of the artifacts' (model.onnx, report.json, ...)",
        f"nothing at /jobs/{EXAMPLE_JOB_ID}/weights.bin",
        "check the URL; /docs lists the endpoints",
    ),
    "artifact_lost": ProblemExample(
        NotFoundError,
        "the job succeeded but the file is gone from the artifact store",
        f"report.html of job {EXAMPLE_JOB_ID} is missing from the artifact store",
        "the stored file was removed outside the service: resubmit the job, and tell the operators",
    ),
    # 409
    "idempotency_conflict": ProblemExample(
        IdempotencyKeyReusedError,
        "the Idempotency-Key was used before for a different model, dataset or config",
        "this Idempotency-Key was already used for a different request",
        "use a new Idempotency-Key for a new job; reuse a key only to retry the same request",
        {"job_id": EXAMPLE_JOB_ID},
    ),
    "job_already_ended": ProblemExample(
        ConflictError,
        "the job already succeeded or failed",
        f"job {EXAMPLE_JOB_ID} already succeeded",
        "only queued or running jobs can be cancelled",
    ),
    "job_not_done": ProblemExample(
        JobNotDoneError,
        "the job is still queued or running (or was cancelled)",
        f"job {EXAMPLE_JOB_ID} is running; model.onnx exists once it has succeeded",
        "wait for state 'succeeded' (GET /jobs/{id} or /jobs/{id}/events)",
        {"state": "running"},
    ),
    "job_failed": ProblemExample(
        JobNotDoneError,
        "the job failed: the hint repeats its error",
        f"job {EXAMPLE_JOB_ID} is failed; report.json exists once it has succeeded",
        "the job failed (model_dataset_mismatch: the model outputs NaN or infinite values on "
        "the dataset's inputs); fix and resubmit",
        {"state": "failed"},
    ),
    # 413: refused while streaming, nothing kept
    "model_too_large": ProblemExample(
        PayloadTooLargeError,
        "a file part passes HARDEN_MAX_UPLOAD_BYTES",
        f"the 'model' upload is larger than the limit of {DEFAULT_LIMIT} bytes",
        "send a smaller file, or ask the operator to raise HARDEN_MAX_UPLOAD_BYTES",
        {"limit_bytes": DEFAULT_LIMIT},
    ),
    "config_too_large": ProblemExample(
        PayloadTooLargeError,
        "the 'config' part passes 1 MiB",
        "the 'config' field is larger than 1048576 bytes",
        "the config is a small JSON document",
    ),
    # 422: refused before anything is stored or queued
    "idempotency_key_too_long": ProblemExample(
        InvalidRequestError,
        "the Idempotency-Key header is longer than 255 characters",
        f"The request is invalid: header.idempotency-key: {_KEY_MESSAGE}",
        _REQUEST_HINT,
        _field_error("header.idempotency-key", _KEY_MESSAGE, "string_too_long"),
    ),
    "bad_page": ProblemExample(
        InvalidRequestError,
        "state, limit or offset out of range",
        f"The request is invalid: query.limit: {_LIMIT_MESSAGE}",
        _REQUEST_HINT,
        _field_error("query.limit", _LIMIT_MESSAGE, "greater_than_equal"),
    ),
    "bad_layout": ProblemExample(
        InvalidRequestError,
        "a serving layout's layout, name, version or max_batch_size is out of range",
        f"The request is invalid: query.layout: {_LAYOUT_MESSAGE}",
        _REQUEST_HINT,
        _field_error("query.layout", _LAYOUT_MESSAGE, "literal_error"),
    ),
    "config_not_json": ProblemExample(
        InvalidSpecError,
        "the 'config' part is not a JSON object",
        "the 'config' field is not valid JSON: Expecting property name enclosed in double quotes "
        "at line 1 column 2",
        'send a JSON object, e.g. {"dataset": "builtin:digits", '
        '"distillation": {"temperature": 100}}',
    ),
    "config_out_of_range": ProblemExample(
        InvalidSpecError,
        "a config field has a wrong type or value (errors lists each one)",
        f"The job config is invalid: config.distillation.temperature: {_TEMPERATURE_MESSAGE}",
        "Fix the listed fields of the 'config' JSON; GET /spec/schema shows every field, its "
        "type and its allowed range.",
        _field_error("config.distillation.temperature", _TEMPERATURE_MESSAGE, "greater_than_equal"),
    ),
    "webhook_not_public": ProblemExample(
        InvalidSpecError,
        "config.webhook_url does not resolve to a public address",
        f"The job config is invalid: config.webhook_url: {_PRIVATE_MESSAGE}",
        "use a public https URL, or set HARDEN_WEBHOOK_ALLOW_PRIVATE=true for a receiver inside "
        "your network",
        _field_error("config.webhook_url", _PRIVATE_MESSAGE, "webhook_not_public"),
    ),
    "evaluation_too_large": _costly_example(),
    "training_too_large": _long_training_example(),
    "dataset_path": ProblemExample(
        DatasetError,
        "config.dataset names a path on the server, or 'upload' without a dataset part",
        "the service does not read dataset paths ('/data/cifar.npz')",
        DATASET_PATH_HINT,
    ),
    "unknown_registered_dataset": ProblemExample(
        DatasetError,
        "config.dataset is dataset:<id> or dataset:sha256:<hex> and no such dataset belongs to "
        "the caller's API key",
        f"no registered dataset dataset:{EXAMPLE_DATASET_ID} belongs to this API key",
        REGISTER_HINT,
    ),
    "dataset_url_not_public": ProblemExample(
        DatasetError,
        "config.dataset is an https:// URL whose host is not public, or an http:// URL "
        "(allowed by HARDEN_DATASET_URL_ALLOW_PRIVATE, HARDEN_DATASET_URL_ALLOW_HTTP)",
        "config.dataset: 127.0.0.1 is not a public address (loopback, private, link-local or "
        "reserved)",
        DATASET_URL_HINT,
    ),
    "npz_missing_arrays": ProblemExample(
        DatasetError,
        "the dataset upload is no .npz, zip or tar, or the worker would refuse it: arrays "
        "missing or lying about their size, labels that are no class indices, NaN pixels, "
        "archive entries outside the archive, links, devices, a truncated archive",
        "the .npz file lacks the array(s) x_test (it has: x_train, y_test, y_train)",
        NPZ_HINT,
        {"missing": ["x_test"]},
    ),
    "no_model_part": ProblemExample(
        UnsupportedModelError,
        "the form has no 'model' file part",
        "the request has no 'model' file part",
        "send the model file as multipart part 'model' (curl -F model=@model.pt)",
    ),
    "empty_model": ProblemExample(
        UnsupportedModelError,
        "the model file is empty",
        "the model file is empty",
        "upload a TorchScript, torch.export, ONNX or safetensors file",
    ),
    "unknown_model_format": ProblemExample(
        UnsupportedModelError,
        "the model's format is not recognised from its content",
        "the model file's format is not recognised",
        "accepted formats: TorchScript (torch.jit.save), torch.export (.pt2), ONNX, "
        "safetensors + a zoo name",
    ),
    "pickle_model": ProblemExample(
        UnsafeModelError,
        "the model is a Python pickle (torch.save): refused without opening it",
        "the model file is a Python pickle, which runs arbitrary code when loaded; it was not "
        "opened",
        "re-save the model with torch.jit.save(torch.jit.script(model), path), "
        "torch.export.save(torch.export.export(model, (sample,)), path), torch.onnx.export, or "
        "safetensors.torch.save_file(model.state_dict(), path) plus a zoo architecture name",
        {"format": "pickle"},
    ),
    # registered datasets (POST /datasets)
    "dataset_not_multipart": ProblemExample(
        BadRequestError,
        "the body is not multipart/form-data",
        "POST /datasets takes multipart/form-data",
        "send the dataset as a file part named 'dataset' (curl -F dataset=@data.npz)",
    ),
    "dataset_too_large": ProblemExample(
        PayloadTooLargeError,
        "the dataset passes HARDEN_MAX_UPLOAD_BYTES",
        f"the 'dataset' upload is larger than the limit of {DEFAULT_LIMIT} bytes",
        "send a smaller file, or ask the operator to raise HARDEN_MAX_UPLOAD_BYTES",
        {"limit_bytes": DEFAULT_LIMIT},
    ),
    "no_dataset_part": ProblemExample(
        DatasetError,
        "the form has no 'dataset' file part",
        "the request has no 'dataset' file part",
        "send the dataset as a file part named 'dataset' (curl -F dataset=@data.npz)",
    ),
    "bad_input_range": ProblemExample(
        InvalidRequestError,
        "the 'input_range' part is not a JSON [low, high] with low < high",
        f"The request is invalid: form.input_range: {_RANGE_MESSAGE}",
        "send e.g. input_range=[0, 1] (the range of the models' inputs), or leave it out for "
        "[0, 1]",
        _field_error("form.input_range", _RANGE_MESSAGE, "input_range"),
    ),
    "unknown_dataset": ProblemExample(
        NotFoundError,
        "no dataset with this id belongs to the caller's API key",
        f"no dataset {EXAMPLE_DATASET_ID!r}",
        "check the id (GET /datasets lists yours); datasets of other API keys are not visible",
    ),
    "dataset_in_use": ProblemExample(
        ConflictError,
        "a queued or running job reads the dataset (job_ids lists them)",
        f"dataset {EXAMPLE_DATASET_ID} is read by queued or running jobs: {EXAMPLE_JOB_ID}",
        "wait for those jobs to end, or cancel them (POST /jobs/{id}/cancel), then delete the "
        "dataset",
        {"job_ids": [EXAMPLE_JOB_ID]},
    ),
    # 429
    "too_many_active_jobs": _quota_example(),
    # 503
    "queue_unreachable": ProblemExample(
        ServiceUnavailableError,
        "the broker is down: the job was not created",
        "the job queue is unreachable, the job was not created",
        "retry in a moment (with the same Idempotency-Key)",
    ),
    "database_unreachable": ProblemExample(
        ServiceUnavailableError,
        "the job database is down or unreachable: nothing was changed",
        DATABASE_DOWN_ERROR.message,
        DATABASE_DOWN_ERROR.hint,
    ),
    "not_ready": ProblemExample(
        NotReadyError,
        "the database or the broker is unreachable (checks says which)",
        "not ready: broker unreachable",
        "check HARDEN_DATABASE_URL / HARDEN_BROKER_URL and that those services run",
        {"checks": {"database": True, "broker": False}},
    ),
}
