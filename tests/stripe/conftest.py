"""Stripe tests run the real stripe client against localstripe, in-process (localstripe_ext.py).

`stripe_server` starts it once per test process; `stripe_world` empties it and points the
settings at it for one test. Nothing here reaches beyond 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.billing.conftest import (  # noqa: F401 - fixtures shared with billing's tests
    _wipe_books_before_flush,
    import_catalog,
    minimax_world,
)
from tests.conftest import skip_or_fail

WEBHOOK_SECRET = "whsec_tollgate_test"
API_KEY = "sk_test_tollgate"


@pytest.fixture(scope="session")
def stripe_server() -> Iterator[Any]:
    try:
        from tests.stripe.localstripe_ext import LocalStripe
    except ImportError as exc:  # localstripe is a dev dependency (pyproject)
        skip_or_fail(f"localstripe is not installed: {exc}")
    server = LocalStripe().start()
    yield server
    server.stop()


@pytest.fixture
def stripe_world(stripe_server: Any, settings: Any) -> Any:
    """An empty Stripe, the settings pointing at it, and every event captured signed."""
    from tests.stripe import localstripe_ext

    localstripe_ext.reset()
    settings.STRIPE_API_KEY = API_KEY
    settings.STRIPE_API_BASE = stripe_server.base
    settings.STRIPE_WEBHOOK_SECRET = WEBHOOK_SECRET
    settings.STRIPE_DAYS_UNTIL_DUE = 30
    stripe_server.capture_webhooks(secret=WEBHOOK_SECRET)
    return stripe_server


def sign(payload: bytes, *, secret: str = WEBHOOK_SECRET, at: int | None = None) -> str:
    """A Stripe-Signature header for `payload`, as Stripe computes it (HMAC-SHA256 of "t.body")."""
    timestamp = int(time.time()) if at is None else at
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + payload, hashlib.sha256)
    return f"t={timestamp},v1={digest.hexdigest()}"


def event_body(event_type: str, obj: dict[str, Any], *, event_id: str) -> bytes:
    """A webhook body of the shape Stripe sends (what a test builds by hand, e.g. an unknown
    invoice); deliveries of real objects come from localstripe itself."""
    return json.dumps(
        {
            "id": event_id,
            "object": "event",
            "type": event_type,
            "api_version": "2026-10-28",
            "created": int(time.time()),
            "livemode": False,
            "data": {"object": obj},
        }
    ).encode()
