"""Shared fixtures. Every test runs against a real PostgreSQL: DATABASE_URL's server when it
is set, the embedded one otherwise (config/embedded_db.py)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any, cast

import pytest
from django.db import connection
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


# The machine's Redis databases the tests own, per purpose and per pytest-xdist worker: two test
# files that start Celery workers, flush a broker or count throttle hits never share a database,
# whichever xdist worker runs them (`make test` runs two). Purposes take two databases each from
# db 15 down: celery 15/14, metrics 13/12, procfile 11/10, cache 9/8.
REDIS_PURPOSES = ("celery", "metrics", "procfile", "cache")


def subprocess_database_url() -> str:
    """The test database as a URL, for a process a test starts (run_billing, gunicorn, a second
    connection of its own)."""
    s = connection.settings_dict
    auth = s["USER"] + (f":{s['PASSWORD']}" if s.get("PASSWORD") else "")
    return f"postgres://{auth}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


def redis_test_url(purpose: str) -> str:
    """The Redis URL of `purpose` for this test process: the server of CELERY_TEST_BROKER_URL
    (default 127.0.0.1:6379), a database no other purpose or xdist worker uses."""
    from urllib.parse import urlsplit

    base = urlsplit(os.environ.get("CELERY_TEST_BROKER_URL") or "redis://127.0.0.1:6379/15")
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    index = int(worker) if worker.isdigit() else 0
    if index > 1:
        raise RuntimeError("the tests' Redis databases are laid out for at most 2 xdist workers")
    db = 15 - (REDIS_PURPOSES.index(purpose) * 2 + index)
    return f"{base.scheme}://{base.netloc}/{db}"


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


@pytest.fixture(autouse=True)
def _celery_app_stays_current() -> Iterator[None]:
    """The project's Celery app is the current one after every test. A test that builds another
    app (a producer for a worker it started) must pass `set_as_current=False`: otherwise every
    later test in the process sends its `.delay` calls to that app's broker instead of running
    them in-process, and fails far from the cause (an approval that never invoices)."""
    from celery import current_app

    from config.celery import app

    yield
    leaked = cast(Any, current_app)._get_current_object()  # the proxy's object
    if leaked is not app:
        app.set_current()
        pytest.fail(
            f"the test left Celery app {leaked!r} current; build it with set_as_current=False"
        )


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
