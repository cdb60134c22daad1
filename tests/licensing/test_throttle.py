"""The per-key throttle: over the rate, 429 with Retry-After in the JSON error shape."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from django.core.cache import cache
from rest_framework.test import APIClient

from licensing.auth import ApiKeyThrottle

pytestmark = pytest.mark.django_db


@pytest.fixture
def two_per_minute(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # The rate is configuration (TOLLGATE_THROTTLE_RATE); DRF reads it once at import.
    monkeypatch.setattr(ApiKeyThrottle, "THROTTLE_RATES", {"api_key": "2/min"})
    cache.clear()
    yield
    cache.clear()


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
