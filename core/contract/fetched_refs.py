"""Dataset references that a service worker fetches before the run: registered datasets
(``dataset:<id>``, ``dataset:sha256:<hex>``, uploaded once with POST /datasets) and remote files
(``s3://bucket/key``, ``https://host/path``; ``http://`` only where the operator allows it), each
optionally pinned by ``#sha256=<hex>``.

Torch-free and network-free: the spec, the API and the worker parse references here; fetching is
the worker's (worker/dataset_fetch.py), since the core reads no network and no environment.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

REGISTERED_PREFIX = "dataset:"
REMOTE_SCHEMES = ("s3", "https", "http")
SHA256_PIN = "#sha256="
_SHA256 = re.compile(r"[0-9a-f]{64}")
_DATASET_ID = re.compile(r"[0-9a-f]{32}")
FORMS = (
    "dataset:<id> or dataset:sha256:<hex> (a dataset registered with POST /datasets), "
    "s3://bucket/key or https://host/path, optionally ending in #sha256=<hex>"
)


@dataclass(frozen=True)
class RegisteredRef:
    """``dataset:<id>`` (``dataset_id`` set) or ``dataset:sha256:<hex>`` (``sha256`` set)."""

    dataset_id: str | None
    sha256: str | None


@dataclass(frozen=True)
class RemoteRef:
    """A file the worker downloads: ``url`` without the pin, ``sha256`` the pin (or None)."""

    scheme: str  # 's3', 'https' or 'http'
    url: str
    host: str  # the bucket for s3://
    port: int | None
    path: str  # the object key for s3:// (no leading '/')
    sha256: str | None


def is_fetched_reference(ref: str) -> bool:
    """Whether ``ref`` names a registered dataset or a remote file (well-formed or not)."""
    if ref.startswith(REGISTERED_PREFIX):
        return True
    scheme, separator, _ = ref.partition("://")
    return bool(separator) and scheme.lower() in REMOTE_SCHEMES


def parse_fetched_reference(ref: str) -> RegisteredRef | RemoteRef:
    """Parse a registered or remote reference; ValueError says what is malformed and how the
    reference should look."""
    if ref.startswith(REGISTERED_PREFIX):
        return _registered(ref)
    return _remote(ref)


def _registered(ref: str) -> RegisteredRef:
    rest = ref.removeprefix(REGISTERED_PREFIX).lower()
    if rest.startswith("sha256:"):
        digest = rest.removeprefix("sha256:")
        if not _SHA256.fullmatch(digest):
            raise ValueError(
                f"{ref!r} is not a sha256 reference: use dataset:sha256:<64 hex digits> as "
                "POST /datasets answered it"
            )
        return RegisteredRef(None, digest)
    if not _DATASET_ID.fullmatch(rest):
        raise ValueError(
            f"{ref!r} is not a registered dataset's reference: use dataset:<id> with the 32-hex "
            "id POST /datasets answered (GET /datasets lists yours)"
        )
    return RegisteredRef(rest, None)


def _remote(ref: str) -> RemoteRef:
    location, pin = ref, None
    if SHA256_PIN in ref:
        location, _, pin = ref.partition(SHA256_PIN)
        pin = pin.lower()
        if not _SHA256.fullmatch(pin):
            raise ValueError(
                f"the pin of {ref!r} is not a sha256: end the reference in #sha256=<64 hex "
                "digits> (sha256sum FILE prints it), or leave the pin out"
            )
    elif "#" in ref:
        raise ValueError(
            f"{ref!r} has a fragment other than #sha256=<hex>: remove it, or pin the file with "
            "#sha256=<64 hex digits>"
        )
    try:
        parts = urlsplit(location)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"{ref!r} is not a valid URL ({exc})") from exc
    scheme = parts.scheme.lower()
    if scheme == "s3":
        key = parts.path.removeprefix("/")
        if not parts.netloc or not key or key.endswith("/") or parts.query:
            raise ValueError(f"{ref!r} does not name an S3 object: use s3://bucket/key/of/file.npz")
        _check_key_segments(ref, key)
        return RemoteRef("s3", location, parts.netloc, None, key, pin)
    if not parts.hostname or parts.username is not None or parts.password is not None:
        raise ValueError(
            f"{ref!r} needs a host and no user:password@ part: use https://host/path/file.npz "
            "(credentials in URLs end up in logs and job records)"
        )
    return RemoteRef(scheme, location, parts.hostname, port, parts.path, pin)


def _check_key_segments(ref: str, key: str) -> None:
    """Refuse ``.``, ``..`` and empty segments in an S3 key (percent-encoded ones too): S3 keys
    are literal, but S3-compatible servers and proxies may normalise them, so
    ``s3://bucket/../../key`` could name an object other than the one the reference shows."""
    for segment in key.split("/"):
        if segment == "" or unquote(segment) in (".", ".."):
            shown = repr(segment) if segment else "an empty segment (//)"
            raise ValueError(
                f"the S3 key of {ref!r} holds {shown}: name the object by its plain key, "
                "without '.', '..' or empty segments, e.g. s3://bucket/datasets/file.npz"
            )
