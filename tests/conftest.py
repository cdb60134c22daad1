"""Shared fixtures. Every test runs against a real PostgreSQL: DATABASE_URL's server when it
is set, the embedded one otherwise (config/embedded_db.py)."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest
from rest_framework.test import APIClient

from licensing.models import Host, Licensor
from licensing.services import api_key_create
from tests.factories import HostFactory, LicensorFactory

REQUIRE_SERVICES = os.environ.get("REQUIRE_SERVICES") == "1"


def skip_or_fail(reason: str) -> None:
    """Skip a test whose service is missing; under CI (REQUIRE_SERVICES=1) fail instead, so that
    nothing is skipped silently."""
    if REQUIRE_SERVICES:
        pytest.fail(f"REQUIRE_SERVICES=1 but {reason}")
    pytest.skip(reason)


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings: pytest.FixtureRequest) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # type: ignore[attr-defined]


@pytest.fixture(autouse=True)
def _fresh_counters() -> None:
    """Every test starts with empty throttle counters: the per-address counters of failed
    authentication (licensing/auth.py) would otherwise carry one test's wrong keys into the next
    (every test client is 127.0.0.1)."""
    from django.core.cache import cache

    cache.clear()


@pytest.fixture
def api_client() -> APIClient:
    return APIClient()


@pytest.fixture
def host(db: None) -> Host:
    return HostFactory(slug="fireworks", name="Fireworks AI", currency="USD")


@pytest.fixture
def licensor(db: None) -> Licensor:
    return LicensorFactory(slug="minimax", name="MiniMax")


@pytest.fixture
def client_for() -> Callable[..., APIClient]:
    """An APIClient authenticated with a fresh key of the given host or licensor."""

    def make(*, host: Host | None = None, licensor: Licensor | None = None) -> APIClient:
        issued = api_key_create(host=host, licensor=licensor)
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {issued.key}")
        return client

    return make


@pytest.fixture
def host_client(host: Host, client_for: Callable[..., APIClient]) -> APIClient:
    return client_for(host=host)


@pytest.fixture
def licensor_client(licensor: Licensor, client_for: Callable[..., APIClient]) -> APIClient:
    return client_for(licensor=licensor)
