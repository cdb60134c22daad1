"""Deeply nested JSON is a 400 in the JSON error shape, not a 500 from a RecursionError
(docs/security.md, finding 8), on the ingest endpoints (msgspec) and on DRF's JSON parser."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from rest_framework.test import APIClient

from billing.models import Settlement
from licensing.models import Host, Licensor
from tests.billing.conftest import (  # noqa: F401 - fixtures
    import_catalog,
    minimax_world,
    post_usage,
    record,
    run_billing,
    settlement_of,
)
from tests.config.test_error_shapes import assert_error_shape
from tests.factories import HostFactory

DEEP = 100_000  # far beyond Python's recursion limit (1,000)


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/json", b'{"records": ' + b"[" * DEEP + b"]" * DEEP + b"}"),
        ("application/json", b"[" * DEEP + b"]" * DEEP),
        ("application/json", b'{"a":' * DEEP + b"1" + b"}" * DEEP),
        ("application/x-ndjson", b"[" * DEEP + b"]" * DEEP + b"\n"),
        ("application/x-ndjson", b'{"event_id": "x"}\n' + b"[" * DEEP + b"]" * DEEP + b"\n"),
    ],
    ids=["records", "top-level", "objects", "ndjson", "ndjson-second-line"],
)
def test_deeply_nested_json_to_the_usage_endpoint_is_a_400(
    db: None, content_type: str, body: bytes, client_for: Callable[..., APIClient]
) -> None:
    # given a host's key
    client = client_for(host=HostFactory())

    # when a body nested 100,000 deep is posted
    response = client.post("/api/v1/usage", data=body, content_type=content_type)

    # then it is a 400 in the JSON error shape, not a 500 (RecursionError)
    assert_error_shape(response, 400, "malformed")


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/cloudevents-batch+json", b"[" * DEEP + b"]" * DEEP),
        ("application/cloudevents+json", b'{"a":' * DEEP + b"1" + b"}" * DEEP),
        ("application/json", b'[{"id": "x", "data": ' + b"[" * DEEP + b"]" * DEEP + b"}]"),
    ],
    ids=["batch", "event", "in-data"],
)
def test_deeply_nested_json_to_the_events_endpoint_is_a_400(
    db: None, content_type: str, body: bytes, client_for: Callable[..., APIClient]
) -> None:
    client = client_for(host=HostFactory())
    response = client.post("/api/v1/events", data=body, content_type=content_type)
    assert_error_shape(response, 400, "malformed")


@pytest.fixture
def settlement(
    minimax_world: tuple[Host, Licensor],  # noqa: F811 - the imported fixture
    client_for: Callable[..., APIClient],
) -> Settlement:
    host, _ = minimax_world
    post_usage(client_for(host=host), [record("c-1", revenue="100.00")])
    run_billing("2026-10")
    return settlement_of(licensor="minimax", host="fireworks", period="2026-10")


def test_deeply_nested_json_to_a_drf_endpoint_is_a_400(
    settlement: Settlement, client_for: Callable[..., APIClient]
) -> None:
    # given the licensor of a settlement
    client = client_for(licensor=settlement.licensor)

    # when a dispute body nested 100,000 deep is posted
    body = b'{"reason": ' + b"[" * DEEP + b"]" * DEEP + b"}"
    response = client.post(
        f"/api/v1/settlements/{settlement.pk}/dispute", data=body, content_type="application/json"
    )

    # then a 400 in the JSON error shape, and the settlement is untouched
    assert_error_shape(response, 400, "malformed")
    settlement.refresh_from_db()
    assert settlement.status == "draft"
