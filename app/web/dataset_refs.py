"""A job's dataset reference, checked when the job is submitted: a registered dataset must be
the caller's (and match its pin); an https:// URL must name a public host, as webhooks must
(app/infra/netguard.py), and plain http:// is refused unless the operator allows it.
The worker fetches the file (worker/dataset_fetch.py) and checks the address again.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.infra.artifacts import is_artifact_bucket
from app.infra.dataset_store import DatasetStore
from app.infra.db import Dataset
from app.infra.netguard import NonPublicAddressError, UnresolvableHostError, public_addresses
from app.web.deps import Services
from core.contract.fetched_refs import (
    REGISTERED_PREFIX,
    RegisteredRef,
    RemoteRef,
    parse_fetched_reference,
)
from core.contract.spec import HardenSpec
from core.errors import DatasetError
from core.names import BUILTIN_DATASETS

DATASET_PATH_HINT = (
    "upload the .npz or archive as the 'dataset' part, register it once with POST /datasets "
    "and name it dataset:<id>, give an s3:// or https:// URL, or use " + ", ".join(BUILTIN_DATASETS)
)
REGISTER_HINT = (
    "GET /datasets lists yours; register a file with POST /datasets (harden datasets upload "
    "FILE) and name it dataset:<id>"
)
DATASET_URL_HINT = (
    "use an https:// URL of a public host, or s3://bucket/key; for a file server inside the "
    "network an operator sets HARDEN_DATASET_URL_ALLOW_PRIVATE=true (and, for plain http://, "
    "HARDEN_DATASET_URL_ALLOW_HTTP=true)"
)


@dataclass(frozen=True)
class FetchedDataset:
    """What the job row records of a fetched dataset: the registered dataset's id, and the
    sha256 the file must have (a registered file's, or a remote reference's pin)."""

    dataset_id: str | None
    sha256: str | None


def check_fetched_dataset(services: Services, owner: str, spec: HardenSpec) -> FetchedDataset:
    """Check a ``dataset:``, ``s3://`` or ``https://`` reference (the spec validated its form)."""
    ref = parse_fetched_reference(spec.dataset)
    if isinstance(ref, RegisteredRef):
        dataset = resolve_registered(services, owner, ref, spec.dataset_sha256)
        return FetchedDataset(dataset.id, dataset.sha256)
    settings = services.settings
    if ref.scheme == "s3" and is_artifact_bucket(ref.host, settings):
        raise DatasetError(
            f"config.dataset: s3://{ref.host} is this service's artifact store, which jobs do "
            "not read from",
            hint="register the dataset with POST /datasets, or name a copy in another bucket",
        )
    if ref.scheme != "s3":
        check_dataset_url(
            ref,
            allow_private=settings.dataset_url_allow_private,
            allow_http=settings.dataset_url_allow_http,
        )
    return FetchedDataset(None, ref.sha256 or spec.dataset_sha256)


def check_dataset_url(ref: RemoteRef, *, allow_private: bool, allow_http: bool) -> None:
    """Refuse an http(s) dataset URL the worker must not fetch (422)."""
    if ref.scheme == "http" and not allow_http:
        raise DatasetError(
            f"config.dataset: {ref.url!r} is plain http://, which this service does not fetch",
            hint=DATASET_URL_HINT,
        )
    if allow_private:
        return
    try:
        public_addresses(ref.host, ref.port)
    except NonPublicAddressError as exc:
        raise DatasetError(f"config.dataset: {exc}", hint=DATASET_URL_HINT) from exc
    except UnresolvableHostError as exc:
        raise DatasetError(
            f"config.dataset: {exc}",
            hint="check the host name: the service resolves it when the job is submitted",
        ) from exc


def resolve_registered(
    services: Services, owner: str, ref: RegisteredRef, pin: str | None
) -> Dataset:
    """The owner's dataset a ``dataset:`` reference names (422 when there is none, or when
    ``pin`` is not its sha256)."""
    store = DatasetStore(services.store.engine)
    if ref.dataset_id is not None:
        dataset = store.get(ref.dataset_id, owner)
        named = f"{REGISTERED_PREFIX}{ref.dataset_id}"
    else:
        dataset = store.find_by_sha256(owner, ref.sha256 or "")
        named = f"{REGISTERED_PREFIX}sha256:{ref.sha256}"
    if dataset is None:
        raise DatasetError(
            f"no registered dataset {named} belongs to this API key", hint=REGISTER_HINT
        )
    if pin is not None and pin != dataset.sha256:
        raise DatasetError(
            f"{named} has sha256 {dataset.sha256}, not the pinned {pin}",
            hint="name the dataset you meant, or drop dataset_sha256 from the config",
        )
    return dataset
