"""Property-based fuzzing of the service's HTTP API: no request, however odd, gets a 5xx.

schemathesis generates requests from the app's own OpenAPI document (every
operation, parameters that match the schema and ones that don't) and sends them
to the real app, in process, over a real service (the bundled tiny model's
target in a local registry, an SQLite database, a development CA). Each case is
sent once without a key and once with a valid one, so the checks behind the
authentication are fuzzed too. Every error must be a 4xx with ``{"error": ...}``.
``make fuzz`` raises the example count (``PHOTOIMMUNE_FUZZ_EXAMPLES``).
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

import pytest
import schemathesis
from schemathesis.checks import not_a_server_error

from photoimmune.service import Service, ServiceSettings, add_key, create_app

from .helpers import fuzz_settings, service_world

SETTINGS = ServiceSettings(steps=2, max_sync_pixels=32 * 32, rate_per_minute=100_000)


@functools.cache
def fuzzed() -> tuple[Service, str]:
    """The service under test and a valid key, built on first use, removed at exit."""
    registry, keys = service_world()
    base = Path(tempfile.mkdtemp(prefix="photoimmune-service-fuzz-"))
    atexit.register(shutil.rmtree, base, True)
    service = Service.open(f"sqlite:///{base / 'service.db'}", registry, keys, SETTINGS)
    return service, add_key(service.store, "fuzz")


class _LazyService:
    """Stands in for the service in the app: the app exists at import (schemathesis reads
    its OpenAPI document while collecting), the service is only built when a test runs."""

    settings = SETTINGS

    def __getattr__(self, name: str):
        return getattr(fuzzed()[0], name)


APP = create_app(_LazyService())  # type: ignore[arg-type]
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


@pytest.fixture(autouse=True)
def key() -> str:
    return fuzzed()[1]  # built before Hypothesis draws


@schema.parametrize()
@fuzz_settings(15)
def test_schemathesis_operations_never_get_a_5xx(case, key):
    """Each documented operation, valid and invalid parameters, with and without a key."""
    for headers in ({}, {"Authorization": f"Bearer {key}"}):
        response = case.call(headers=headers)
        case.validate_response(response, checks=[not_a_server_error])
        if response.status_code >= 400:
            assert "error" in response.json(), response.text[:500]  # says what was wrong
