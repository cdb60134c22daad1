"""The per-key throttle: over the rate, 429 with Retry-After in the JSON error shape; with the
per-process memory cache and with Redis (CACHE_URL), whose counters every process shares."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.cache import cache
from django.db import connection
from rest_framework.test import APIClient

from licensing.auth import ApiKeyThrottle
from licensing.services import api_key_create
from tests.conftest import redis_test_url, skip_or_fail

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[2]


def _redis_url() -> str:
    """A Redis database for the tests (they delete every throttle counter in it, nothing else):
    CACHE_TEST_URL, else the tests' own database (tests/conftest.py, redis_test_url). Never
    CACHE_URL itself, which may hold a running server's counters."""
    url = os.environ.get("CACHE_TEST_URL") or redis_test_url("cache")
    try:
        import redis

        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
    except Exception as exc:
        skip_or_fail(f"no Redis at {url} ({exc!r})")
    return url


@pytest.fixture(params=["memory", "redis"])
def cache_backend(request: pytest.FixtureRequest, settings: Any) -> str | None:
    """The cache as config/settings.py builds it without and with CACHE_URL; the Redis URL, or
    None for the memory cache."""
    if request.param == "memory":
        return None
    url = _redis_url()
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": url}
    }
    return url


def _forget_counters(redis_url: str | None) -> None:
    """No counter of an earlier test (key ids repeat between test databases). In Redis only the
    throttle's keys go: the database may be shared, e.g. with the Celery tests' broker."""
    if redis_url is None:
        cache.clear()
        return
    import redis

    client = redis.Redis.from_url(redis_url)
    for name in client.scan_iter(match="*throttle_api_key_*"):
        client.delete(name)


@pytest.fixture
def two_per_minute(monkeypatch: pytest.MonkeyPatch, cache_backend: str | None) -> Iterator[None]:
    # The rate is configuration (TOLLGATE_THROTTLE_RATE); DRF reads it once at import.
    monkeypatch.setattr(ApiKeyThrottle, "THROTTLE_RATES", {"api_key": "2/min"})
    _forget_counters(cache_backend)
    yield
    _forget_counters(cache_backend)


def test_it_answers_429_with_retry_after_past_the_rate(
    two_per_minute: None, host, client_for: Callable[..., APIClient]
) -> None:
    # given a key that used its two requests of the minute
    client = client_for(host=host)
    assert client.get("/api/v1/models").status_code == 200
    assert client.post("/api/v1/usage", {"records": []}, format="json").status_code == 200

    # when it calls again
    response = client.get("/api/v1/usage/summary?period=2026-10")

    # then it is throttled, told when to come back, in the JSON error shape
    assert response.status_code == 429
    assert 0 < int(response["Retry-After"]) <= 60
    assert response.json()["error"]["code"] == "throttled"


def test_the_rate_is_per_key(
    two_per_minute: None, host, client_for: Callable[..., APIClient]
) -> None:
    # given one key that used its rate
    first = client_for(host=host)
    for _ in range(2):
        first.get("/api/v1/models")
    assert first.get("/api/v1/models").status_code == 429

    # then another key of the same host is not throttled
    assert client_for(host=host).get("/api/v1/models").status_code == 200


# Another server process: the project's settings from the environment, one request by Django's
# test client, its status printed.
_OTHER_PROCESS = """
import sys, django
django.setup()
from django.test import Client
response = Client().get("/api/v1/models", HTTP_AUTHORIZATION="Bearer " + sys.argv[1])
print(response.status_code)
"""


def _status_in_another_process(key: str, cache_url: str | None) -> int:
    s = connection.settings_dict
    auth = s["USER"] + (f":{s['PASSWORD']}" if s.get("PASSWORD") else "")
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DATABASE_URL": f"postgres://{auth}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}"
        f"/{s['NAME']}",
        "TOLLGATE_THROTTLE_RATE": "2/min",
    }
    env.pop("CACHE_URL", None)
    if cache_url is not None:
        env["CACHE_URL"] = cache_url
    done = subprocess.run(
        [sys.executable, "-c", _OTHER_PROCESS, key],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return int(done.stdout.strip().splitlines()[-1])


@pytest.mark.django_db(transaction=True)
def test_a_key_throttled_in_one_process_is_throttled_in_another_only_with_redis(
    two_per_minute: None, cache_backend: str | None, host
) -> None:
    # given a key that used its two requests of the minute in this process
    key = api_key_create(host=host).key
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    assert [client.get("/api/v1/models").status_code for _ in range(2)] == [200, 200]

    # when another server process, configured from the environment, serves its next request
    status = _status_in_another_process(key, cache_backend)

    # then it shares the counters through Redis (CACHE_URL) and throttles; the memory cache is
    # per process, so there the other process lets it through (README: "lenient with several")
    assert status == (429 if cache_backend else 200)
