"""Accepting a job: validate everything cheap, store the inputs, insert the row, queue it.

Every check runs before anything persistent happens, so a refused request leaves no row and no
file behind; a failure after the row exists (the broker is down) removes both again.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from app.infra.db import Job, JobState, new_job_id
from app.infra.mlflow_target import HINT as MLFLOW_HINT
from app.infra.mlflow_target import TrackingUriRefused, check_target, resolve_target
from app.infra.netguard import HINT, NonPublicAddressError, UnresolvableHostError, public_addresses
from app.infra.queue import enqueue_job
from app.infra.settings import Settings
from app.infra.store import ActiveJobsQuotaExceeded, IdempotencyConflict
from app.web.dataset_refs import DATASET_PATH_HINT, FetchedDataset, check_fetched_dataset
from app.web.deps import Services
from app.web.errors import (
    IdempotencyKeyReusedError,
    ServiceUnavailableError,
    TooManyActiveJobsError,
)
from app.web.problems import spec_error
from app.web.uploads import ParsedForm, check_dataset_upload
from core.contract.dataset_ref import (
    LocalRef,
    UploadRef,
    missing_dataset,
    missing_upload,
    parse_dataset_ref,
)
from core.contract.evaluation_cost import evaluation_steps
from core.contract.fetched_refs import is_fetched_reference
from core.contract.library_names import dataset_name_refusal
from core.contract.spec import ZOO_ARCHITECTURES, HardenSpec, deprecations
from core.contract.training_cost import (
    BUILTIN_TRAIN_SAMPLES,
    train_samples_at_submit,
    training_steps,
)
from core.errors import DatasetError, InvalidSpecError, UnsafeModelError, UnsupportedModelError
from core.intake.onnx_interface import BUILTIN_SHAPES, check_onnx_fits
from core.intake.sniff import sniff_format

log = logging.getLogger(__name__)


def parse_spec(config_text: str | None, *, dataset_uploaded: bool) -> tuple[HardenSpec, list[str]]:
    """The job spec from the 'config' JSON (the dataset becomes 'upload' when a file came), and
    the deprecation notes of the form it was given in."""
    # A BOM is what Windows editors put in front of a saved spec.json (curl -F config=<file).
    config_text = (config_text or "").removeprefix("\ufeff")
    try:
        config: Any = json.loads(config_text) if config_text.strip() else {}
    except json.JSONDecodeError as exc:
        raise InvalidSpecError(
            f"the 'config' field is not valid JSON: {exc.msg} at line {exc.lineno} column "
            f"{exc.colno}",
            hint='send a JSON object, e.g. {"dataset": "builtin:digits", '
            '"distillation": {"temperature": 100}}',
        ) from exc
    except RecursionError as exc:
        # [[[[...]]]] a few thousand deep exhausts the parser's stack: was a 500.
        raise InvalidSpecError(
            "the 'config' field is nested too deeply to parse",
            hint='send a flat JSON object of the job spec, e.g. {"dataset": "builtin:digits"}; '
            "GET /spec/schema shows its fields",
        ) from exc
    if not isinstance(config, dict):
        raise InvalidSpecError(
            "the 'config' field must be a JSON object",
            hint='send e.g. {"dataset": "builtin:digits"}',
        )
    if dataset_uploaded:
        config["dataset"] = "upload"
    elif "dataset" not in config:
        # The spec's default (builtin:mnist) is for specs read back, never for a submit: a
        # model trained on other data failed in the worker, after a 202.
        raise missing_dataset()
    try:
        spec = HardenSpec.model_validate(config)
    except ValidationError as exc:
        raise spec_error(exc) from exc
    named = parse_dataset_ref(spec.dataset)  # valid: the spec parsed it
    if isinstance(named, UploadRef) and not dataset_uploaded:
        raise missing_upload()
    if isinstance(named, LocalRef):
        refusal = dataset_name_refusal(spec.dataset)  # torchvision:MNIST, hf:mnist, cifar10
        if refusal is not None:
            raise refusal
        # A remote caller must not make the worker read files on the server's disk.
        raise DatasetError(
            f"the service does not read dataset paths ({spec.dataset!r})",
            hint=DATASET_PATH_HINT,
        )
    return spec, deprecations(config)


def check_webhook_url(spec: HardenSpec, *, allow_private: bool) -> None:
    """Refuse a webhook_url whose host is not public (the worker would POST inside the
    operator's network); the worker checks again at delivery."""
    if spec.webhook_url is None or allow_private:
        return
    try:
        public_addresses(spec.webhook_url.host or "", spec.webhook_url.port)
    except NonPublicAddressError as exc:
        raise _webhook_error(exc, "webhook_not_public", HINT) from exc
    except UnresolvableHostError as exc:
        hint = "check the host name: the service resolves it when the job is submitted"
        raise _webhook_error(exc, "webhook_unresolvable", hint) from exc


def check_mlflow_target(spec: HardenSpec, settings: Settings) -> None:
    """Refuse an mlflow section the service cannot honour: no tracking server at all, or a
    tracking_uri whose host the operator does not allow (app/infra/mlflow_target.py)."""
    try:
        target = resolve_target(spec.mlflow, settings)
        if target is not None:
            check_target(target, settings)
    except TrackingUriRefused as exc:
        raise InvalidSpecError(
            f"The job config is invalid: config.mlflow.tracking_uri: {exc}",
            hint=MLFLOW_HINT,
            errors=[
                {
                    "field": "config.mlflow.tracking_uri",
                    "message": str(exc),
                    "type": "mlflow_not_allowed",
                }
            ],
        ) from exc


def _webhook_error(exc: ValueError, kind: str, hint: str) -> InvalidSpecError:
    return InvalidSpecError(
        f"The job config is invalid: config.webhook_url: {exc}",
        hint=hint,
        errors=[{"field": "config.webhook_url", "message": str(exc), "type": kind}],
    )


def check_evaluation_cost(spec: HardenSpec, limit: int) -> None:
    """Refuse a spec whose worst-case evaluation exceeds ``limit`` attack steps."""
    error = evaluation_too_large(spec, limit)
    if error is not None:
        raise error


def evaluation_too_large(spec: HardenSpec, limit: int) -> InvalidSpecError | None:
    """The refusal of a spec whose worst-case evaluation exceeds ``limit`` attack steps
    (core.contract.evaluation_cost), naming the limit and the largest attacks; None within it."""
    return _past_limit(
        evaluation_steps(spec),
        limit,
        what="the robustness evaluation would take up to {total} attack steps",
        variable="HARDEN_MAX_EVALUATION_STEPS",
        field="config.evaluation",
        kind="evaluation_too_large",
        hint="lower evaluation.samples / samples_slow, pgd_steps, cw_iterations or "
        "square_queries, use fewer epsilons, or drop attacks from evaluation.attacks; an "
        "attack step is one model pass on one sample (core/contract/evaluation_cost.py)",
    )


def check_training_cost(spec: HardenSpec, limit: int) -> None:
    """Refuse a spec whose worst-case training exceeds ``limit`` training steps."""
    error = training_too_large(spec, limit)
    if error is not None:
        raise error


def training_too_large(spec: HardenSpec, limit: int) -> InvalidSpecError | None:
    """The refusal of a spec whose worst-case training exceeds ``limit`` training steps
    (core.contract.training_cost), naming the limit and the costliest stages; None within it."""
    samples = train_samples_at_submit(spec)
    known = (
        "" if spec.dataset in BUILTIN_TRAIN_SAMPLES else "a dataset of unknown size, charged as "
    )
    return _past_limit(
        training_steps(spec),
        limit,
        what="the training would take up to {total} training steps "
        f"({known}{samples:,} training images at batch size {spec.batch_size})",
        variable="HARDEN_MAX_TRAINING_STEPS",
        field="config",
        kind="training_too_large",
        hint="raise batch_size, or lower teacher_epochs, student_epochs (unset: auto, which "
        "stops when the student converges), robust.epochs or robust.steps; a training step is "
        "one forward and backward pass over one batch (core/contract/training_cost.py)",
    )


def _past_limit(
    steps: dict[str, int],
    limit: int,
    *,
    what: str,
    variable: str,
    field: str,
    kind: str,
    hint: str,
) -> InvalidSpecError | None:
    """The refusal of a cost of ``steps`` (part -> steps) past ``limit``, naming the limit's
    setting and the three largest parts; None within it."""
    total = sum(steps.values())
    if total <= limit:
        return None
    largest = sorted(steps.items(), key=lambda item: -item[1])[:3]
    parts = ", ".join(f"{name} {count:,}" for name, count in largest if count)
    message = (
        f"{what.format(total=f'{total:,}')}, more than this service's limit of {limit:,} "
        f"({variable}); largest: {parts}"
    )
    return InvalidSpecError(
        f"The job config is invalid: {field}: {message}",
        hint=hint,
        errors=[{"field": field, "message": message, "type": kind}],
        limit_steps=limit,
        steps=total,
    )


def too_many_active_jobs(active: int, limit: int) -> TooManyActiveJobsError:
    """The refusal of a submit past HARDEN_MAX_ACTIVE_JOBS_PER_KEY."""
    return TooManyActiveJobsError(
        f"this API key already has {active} jobs queued or running, the most this service "
        f"allows at once (HARDEN_MAX_ACTIVE_JOBS_PER_KEY={limit})",
        hint="wait for one of them to end (GET /jobs?state=running, GET /jobs?state=queued), or "
        "cancel one (POST /jobs/{id}/cancel), then submit again; an operator can raise "
        "HARDEN_MAX_ACTIVE_JOBS_PER_KEY",
        limit=limit,
        active=active,
    )


def check_model(path: Path, spec: HardenSpec) -> str:
    """The upload's format, by content; pickles, unknown files and a safetensors file without
    the zoo architecture its weights belong to are refused."""
    if path.stat().st_size == 0:
        raise UnsupportedModelError(
            "the model file is empty",
            hint="upload a TorchScript, torch.export, ONNX or safetensors file",
        )
    model_format = sniff_format(path)
    if model_format == "pickle":
        raise UnsafeModelError(
            "the model file is a pickle, which runs code when loaded",
            hint="save it with torch.jit.save(torch.jit.script(model)), torch.export.save or "
            "export it to ONNX",
        )
    if model_format == "safetensors" and spec.architecture is None:
        # The weights carry no code: without the architecture the worker could only fail.
        raise UnsupportedModelError(
            "the model file is safetensors (weights only) and the config names no architecture",
            hint=f'add "architecture" to the config, one of {", ".join(ZOO_ARCHITECTURES)} '
            "(the zoo model the weights were trained with), or upload TorchScript, "
            "torch.export or ONNX",
            format="safetensors",
        )
    return model_format


def submit(
    services: Services, owner: str, form: ParsedForm, idempotency_key: str | None
) -> tuple[Job, bool, list[str]]:
    """Create and queue a job from a parsed form. Returns (job, created, the deprecation notes
    of the config's form)."""
    model = form.files.get("model")
    if model is None:
        raise UnsupportedModelError(
            "the request has no 'model' file part",
            hint="send the model file as multipart part 'model' (curl -F model=@model.pt)",
        )
    dataset = form.files.get("dataset")
    spec, notes = parse_spec(form.fields.get("config"), dataset_uploaded=dataset is not None)
    check_webhook_url(spec, allow_private=services.settings.webhook_allow_private)
    check_mlflow_target(spec, services.settings)
    check_evaluation_cost(spec, services.settings.max_evaluation_steps)
    check_training_cost(spec, services.settings.max_training_steps)
    model_format = check_model(model.path, spec)
    dataset_name, dataset_shape = (
        check_dataset_upload(dataset.path, spec.input_range) if dataset else (None, None)
    )
    if dataset is None:
        dataset_shape = BUILTIN_SHAPES.get(spec.dataset or "")
    if model_format == "onnx" and dataset_shape is not None:
        check_onnx_fits(model.path, *dataset_shape)  # 422 now, not a failure in the worker
    fetched = FetchedDataset(None, dataset.sha256 if dataset else None)
    if dataset is None and is_fetched_reference(spec.dataset):
        fetched = check_fetched_dataset(services, owner, spec)
    spec_json = spec.model_dump(mode="json")

    existing = services.store.find_by_idempotency_key(owner, idempotency_key)
    if existing is not None:
        same = _same_request(existing, model.sha256, fetched.sha256, spec_json)
        return same, False, notes
    # Before the files are stored (an S3 upload); checked again, race-safe, with the insert.
    limit = services.settings.max_active_jobs_per_key
    active = services.store.count_active(owner)
    if active >= limit:
        raise too_many_active_jobs(active, limit)

    job_id = new_job_id()
    try:
        services.artifacts.put(job_id, "inputs/model", model.path, move=True)
        if dataset is not None and dataset_name:
            services.artifacts.put(job_id, f"inputs/{dataset_name}", dataset.path, move=True)
        job = Job(
            id=job_id,
            owner=owner,
            state=JobState.queued,
            progress=0.0,
            spec=spec_json,
            idempotency_key=idempotency_key or None,
            model_sha256=model.sha256,
            model_format=model_format,
            dataset_sha256=fetched.sha256,
            dataset_name=dataset_name,
            dataset_id=fetched.dataset_id,
            artifacts={},
            cancel_requested=False,
            attempts=0,
        )
        services.store.create_within_quota(job, limit)
    except ActiveJobsQuotaExceeded as full:
        services.artifacts.delete_job(job_id)
        raise too_many_active_jobs(full.active, full.limit) from None
    except IdempotencyConflict as race:
        # The same key was used by a concurrent request that won the insert.
        services.artifacts.delete_job(job_id)
        same = _same_request(race.job, model.sha256, fetched.sha256, spec_json)
        return same, False, notes
    except BaseException:
        services.artifacts.delete_job(job_id)
        raise
    try:
        enqueue_job(services.producer, job_id, services.settings.queue)
    except Exception as exc:
        log.exception("could not queue job %s", job_id)
        services.store.delete(job_id)
        services.artifacts.delete_job(job_id)
        raise ServiceUnavailableError(
            "the job queue is unreachable, the job was not created",
            hint="retry in a moment (with the same Idempotency-Key)",
        ) from exc
    return job, True, notes


def _same_request(
    job: Job, model_sha256: str, dataset_sha256: str | None, spec_json: dict[str, Any]
) -> Job:
    if (job.model_sha256, job.dataset_sha256, job.spec) != (
        model_sha256,
        dataset_sha256,
        spec_json,
    ):
        raise IdempotencyKeyReusedError(
            "this Idempotency-Key was already used for a different request",
            hint="use a new Idempotency-Key for a new job; reuse a key only to retry the same "
            "request",
            job_id=job.id,
        )
    return job
