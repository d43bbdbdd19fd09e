"""HTTP-level errors, in the same family as the core's (one handler renders them all)."""

from __future__ import annotations

from core.errors import HardenError


class NotFoundError(HardenError):
    code = "not_found"
    status = 404


class AuthError(HardenError):
    code = "unauthorized"
    status = 401


class JobNotDoneError(HardenError):
    code = "job_not_done"
    status = 409


class ConflictError(HardenError):
    code = "conflict"
    status = 409


class PayloadTooLargeError(HardenError):
    code = "payload_too_large"
    status = 413


class BadRequestError(HardenError):
    code = "bad_request"
    status = 400


class ServiceUnavailableError(HardenError):
    code = "unavailable"
    status = 503


class DatabaseUnavailableError(ServiceUnavailableError):
    """The job store cannot be reached (the database is down or unreachable): retry later."""


class IdempotencyKeyReusedError(ConflictError):
    code = "idempotency_conflict"


class TooManyActiveJobsError(HardenError):
    """The API key already has HARDEN_MAX_ACTIVE_JOBS_PER_KEY jobs queued or running."""

    code = "too_many_active_jobs"
    status = 429


class InvalidRequestError(HardenError):
    """A query parameter, header or path segment that does not validate."""

    code = "invalid_request"
    status = 422


class MethodNotAllowedError(HardenError):
    code = "method_not_allowed"
    status = 405


class NotReadyError(ServiceUnavailableError):
    """GET /readyz: the database or the broker cannot be reached."""

    code = "not_ready"


class InternalError(HardenError):
    """A bug: anything raised that is not a HardenError. Logged; the client sees no details."""

    code = "internal"
    status = 500
