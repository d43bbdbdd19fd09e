"""The client's tests run against the API in-process: the same fixtures as tests/app."""

from tests.app.conftest import api, auth, key, settings, store  # noqa: F401
