"""POST /api/v1/events: CloudEvents mapped to usage records, then the usage ingest path."""

from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import msgspec
import pytest
from rest_framework.test import APIClient

from licensing.models import Host
from tests.usage.conftest import AT, AT_TEXT, record
from usage.models import UsageRecord

# Decimals written as JSON numbers with their exact text (1E+400 is no float).
ENCODER = msgspec.json.Encoder(decimal_format="number")
SINGLE = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"


def event(event_id: str = "ev-1", **fields: Any) -> dict[str, Any]:
    """A LiteLLM-shaped event; `data=` replaces data, other keywords override (None removes)."""
    base: dict[str, Any] = {
        "specversion": "1.0",
        "type": "litellm_tokens",
        "id": event_id,
        "time": AT_TEXT,
        "subject": "customer-42",
        "source": "litellm-proxy",
        "data": {
            "model": "minimax-m2.7",
            "cost": 0.1,
            "prompt_tokens": 1000,
            "completion_tokens": 200,
            "total_tokens": 1200,
        },
    }
    base.update(fields)
    return {k: v for k, v in base.items() if v is not None}


@pytest.fixture
def commercial(host: Host) -> Host:
    host.default_customer_category = "commercial"
    host.save()
    return host


@pytest.fixture
def send(host_client: APIClient, commercial: Host) -> Callable[..., Any]:
    def send(
        body: Any,
        content_type: str = SINGLE,
        *,
        raw: bytes | None = None,
        gzipped: bool = False,
        **headers: str,
    ) -> Any:
        data = raw if raw is not None else ENCODER.encode(body)
        if gzipped:
            data = gzip.compress(data)
            headers["HTTP_CONTENT_ENCODING"] = "gzip"
        return host_client.post("/api/v1/events", data=data, content_type=content_type, **headers)

    return send


def test_it_stores_a_litellm_event_through_the_default_mapping(catalog: Any, send: Any) -> None:
    # given a host whose usage is commercial by default
    # when LiteLLM's callback sends one event
    response = send(event("chatcmpl-1"))

    # then it is accepted with the answer of POST /api/v1/usage, and stored mapped
    assert response.status_code == 202, response.content
    assert response.json() == {
        "accepted": 1,
        "duplicates": 0,
        "rejected": 0,
        "late": 0,
        "results": [],
    }
    stored = UsageRecord.objects.get(event_id="chatcmpl-1")
    assert stored.model_id == catalog["model"].pk
    assert stored.occurred_at == AT
    assert (stored.input_tokens, stored.output_tokens, stored.cached_input_tokens) == (1000, 200, 0)
    assert (stored.requests, stored.customer_category, stored.currency) == (1, "commercial", "USD")
    # the JSON number 0.1 read from its text, not through a binary float
    assert str(stored.revenue) == "0.100000"
    assert stored.customer_ref == "customer-42"


def test_a_batch_in_each_content_type_and_gzip(catalog: Any, send: Any) -> None:
    assert send([event("b-1"), event("b-2")], BATCH).json()["accepted"] == 2
    assert send(event("j-1"), "application/json").json()["accepted"] == 1
    assert send([event("j-2"), event("j-3")], "application/json").json()["accepted"] == 2
    assert send([event("g-1")], BATCH, gzipped=True).json()["accepted"] == 1
    assert UsageRecord.objects.count() == 6


def test_an_id_that_is_no_event_id_is_hashed_and_a_resend_deduplicates(
    catalog: Any, send: Any
) -> None:
    # given an event whose id has characters an event_id may not hold
    odd = "call/42 é"
    expected = "ce-" + hashlib.sha256(odd.encode()).hexdigest()

    # when it is sent twice
    first = send(event(odd))
    second = send(event(odd))

    # then it is stored once under ce-<sha256>, the resend a duplicate
    assert first.json()["accepted"] == 1
    assert second.status_code == 202
    assert second.json()["results"] == [
        {"index": 0, "event_id": expected, "status": "duplicate", "errors": {}}
    ]
    assert list(UsageRecord.objects.values_list("event_id", flat=True)) == [expected]


def test_duplicates_and_conflicts_span_both_endpoints(catalog: Any, send: Any, post: Any) -> None:
    # given a record posted to /api/v1/usage
    assert post([record("x-1", revenue="0.1", customer_ref="customer-42")]).json()["accepted"] == 1

    # when the same usage arrives as an event, and then another event with that id
    same = send(
        event(
            "x-1",
            data={
                "model": "minimax-m2.7",
                "cost": 0.1,
                "prompt_tokens": 1000,
                "completion_tokens": 200,
            },
        )
    )
    other = send(event("x-1", data={"model": "minimax-m2.7", "cost": 0.2}))

    # then the first is a duplicate and the second a conflict named on the event's id
    assert same.json()["results"][0]["status"] == "duplicate"
    result = other.json()["results"][0]
    assert (result["status"], list(result["errors"])) == ("rejected", ["id"])
    assert result["errors"]["id"][0].startswith("conflict: ")
    assert UsageRecord.objects.get().revenue == Decimal("0.1")


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"time": None}, "time", "required: an RFC 3339 timestamp with an offset"),
        (
            {"time": "yesterday"},
            "time",
            "invalid: must be an RFC 3339 timestamp with an offset, e.g. 2026-10-01T12:00:00Z",
        ),
        ({"id": None}, "id", "required: a string of 1-128 characters A-Z a-z 0-9 . _ : -"),
        ({"id": 42}, "id", "invalid: 1-128 characters of A-Z a-z 0-9 . _ : -"),
        ({"subject": "s" * 129}, "subject", "invalid: must be a string of at most 128 characters"),
        (
            {"data": {"model": "minimax-m2.7", "cost": Decimal("1e-7")}},
            "data.cost",
            "invalid: at most 6 decimal places",
        ),
        (
            {"data": {"model": "minimax-m2.7", "cost": Decimal("1E+400")}},
            "data.cost",
            "invalid: must be below 1000000000000",
        ),
        ({"data": {"model": "minimax-m2.7", "cost": -1}}, "data.cost", "invalid: must be ≥ 0"),
        (
            {"data": {"model": "minimax-m2.7", "prompt_tokens": 1.5}},
            "data.prompt_tokens",
            "invalid: must be an integer from 0 to 1000000000000",
        ),
        ({"data": {"cost": 1}}, "data.model", "required: a model slug or alias"),
        ({"data": {"model": "gpt-17"}}, "data.model", "unknown_model: no model or alias 'gpt-17'"),
        ({"data": "tokens"}, "data", "invalid: must be a JSON object"),
    ],
)
def test_a_bad_event_is_rejected_naming_the_events_field(
    catalog: Any, send: Any, change: dict[str, Any], field: str, message: str
) -> None:
    # given a batch of a good event and a bad one
    bad = {**event("bad-1"), **change}
    bad = {k: v for k, v in bad.items() if v is not None}

    # when it is sent
    response = send([event("good-1"), bad], BATCH)

    # then the good one is stored and the bad one rejected under the event's own field
    assert response.status_code == 202, response.content
    body = response.json()
    assert (body["accepted"], body["rejected"]) == (1, 1)
    assert body["results"][0]["index"] == 1
    assert body["results"][0]["errors"][field] == [message]
    assert list(UsageRecord.objects.values_list("event_id", flat=True)) == ["good-1"]


def test_an_event_that_is_not_an_object_is_rejected_by_position(catalog: Any, send: Any) -> None:
    response = send([7, event("ok-1")], BATCH)

    assert response.json()["results"] == [
        {
            "index": 0,
            "event_id": None,
            "status": "rejected",
            "errors": {"event": ["invalid: must be a JSON object"]},
        }
    ]
    assert response.json()["accepted"] == 1


def test_without_a_category_the_event_is_rejected(catalog: Any, host: Host, send: Any) -> None:
    # given a host without a default category (the fixture set one)
    host.default_customer_category = ""
    host.save()

    response = send(event("nc-1"))

    assert response.json()["results"][0]["errors"] == {
        "customer_category": ["required: one of individual, commercial, research, nonprofit"]
    }


def test_the_hosts_mapping_reads_its_own_fields(catalog: Any, host: Host, send: Any) -> None:
    # given a host that sends net revenue, a tier and a nested country in its events
    host.event_mapping = {
        "revenue": "data.billing.net",
        "customer_category": "data.tier",
        "region": "data.geo.country",
        "requests": "data.calls",
    }
    host.save()
    data = {
        "model": "MiniMaxAI/MiniMax-M2.7",
        "cost": 0.5,
        "billing": {"net": "12.25"},
        "tier": "research",
        "geo": {"country": "DE"},
        "calls": 3,
        "prompt_tokens": 10,
    }

    # when an event arrives, and another with no tier (the default category applies)
    send([event("m-1", data=data), event("m-2", data={**data, "tier": None})], BATCH)

    # then the mapped fields are stored, the defaults still read the rest
    first, second = UsageRecord.objects.order_by("event_id")
    assert (first.revenue, first.customer_category, first.region, first.requests) == (
        Decimal("12.25"),
        "research",
        "DE",
        3,
    )
    assert first.input_tokens == 10
    assert second.customer_category == "commercial"


def test_a_mapped_bad_value_is_named_by_its_path(catalog: Any, host: Host, send: Any) -> None:
    host.event_mapping = {"region": "data.geo.country"}
    host.save()

    response = send(event("r-1", data={"model": "minimax-m2.7", "geo": {"country": "XX"}}))

    assert response.json()["results"][0]["errors"] == {
        "data.geo.country": ["invalid: must be an ISO 3166-1 alpha-2 code such as US or GB"]
    }


@pytest.mark.parametrize(
    ("body", "content_type", "status", "field"),
    [
        (b'{"id": ', SINGLE, 400, None),
        (b"[]", SINGLE, 400, "events"),
        (b"{}", BATCH, 400, "events"),
        (b'"text"', "application/json", 400, "events"),
        (json.dumps([{}] * 10_001).encode(), BATCH, 400, "events"),
        (b"{}", "text/plain", 415, None),
        (b"{}", "application/x-ndjson", 415, None),
    ],
)
def test_a_bad_envelope_stores_nothing(
    catalog: Any, send: Any, body: bytes, content_type: str, status: int, field: str | None
) -> None:
    response = send(None, content_type, raw=body)

    assert response.status_code == status, response.content
    error = response.json()["error"]
    if field:
        assert field in error["fields"]
    assert not UsageRecord.objects.exists()


def test_prefer_return_minimal_answers_204(catalog: Any, send: Any) -> None:
    # OpenMeter's SDKs expect 204 No Content from their ingest calls
    response = send(event("p-1"), HTTP_PREFER="return=minimal")

    assert response.status_code == 204
    assert response.content == b""
    assert UsageRecord.objects.filter(event_id="p-1").exists()


def test_an_empty_batch_is_accepted_as_nothing(catalog: Any, send: Any) -> None:
    response = send([], BATCH)

    assert response.status_code == 202
    assert response.json()["accepted"] == 0


def test_a_charset_parameter_is_accepted(catalog: Any, send: Any) -> None:
    response = send(event("cs-1"), "application/cloudevents+json; charset=utf-8")

    assert response.status_code == 202, response.content
    assert response.json()["accepted"] == 1


def test_a_body_over_10_mib_is_a_413_and_stores_nothing(catalog: Any, send: Any) -> None:
    response = send(None, BATCH, raw=b"[" + b" " * (10 * 1024 * 1024) + b"]")

    assert response.status_code == 413
    assert not UsageRecord.objects.exists()
