"""Every field rule of docs/ingestion.md, one bad input per rule, each answered with the field
named; and the envelope errors (400/413/415) that store nothing."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from tests.usage.conftest import record
from usage.models import UsageRecord
from usage.wire import MAX_BODY_BYTES


def _six_minutes_ahead() -> dict[str, Any]:
    """Built when the test runs, not at collection: the server compares with its own clock, and a
    session can start its first test minutes after collecting."""
    return record(occurred_at=(datetime.now(UTC) + timedelta(minutes=6)).isoformat())


# (what, the bad record or a function that builds it, the field that must be named, the code its
# message starts with)
RULES: list[tuple[str, Any, str, str]] = [
    ("event_id missing", record(event_id=None), "event_id", "required"),
    ("event_id empty", record(""), "event_id", "invalid"),
    ("event_id 129 chars", record("e" * 129), "event_id", "invalid"),
    ("event_id bad charset", record("evt/1"), "event_id", "invalid"),
    ("event_id not a string", record(12), "event_id", "invalid"),
    ("model missing", record(model=None), "model", "required"),
    ("model unknown", record(model="no-such-model"), "model", "unknown_model"),
    ("occurred_at missing", record(occurred_at=None), "occurred_at", "required"),
    (
        "occurred_at without offset",
        record(occurred_at="2026-10-01T12:00:00"),
        "occurred_at",
        "invalid",
    ),
    ("occurred_at a date", record(occurred_at="2026-10-01"), "occurred_at", "invalid"),
    (
        "occurred_at impossible",
        record(occurred_at="2026-02-30T00:00:00Z"),
        "occurred_at",
        "invalid",
    ),
    ("occurred_at > 5 min ahead", _six_minutes_ahead, "occurred_at", "in_future"),
    ("customer_category missing", record(customer_category=None), "customer_category", "required"),
    (
        "customer_category unknown",
        record(customer_category="enterprise"),
        "customer_category",
        "invalid",
    ),
    ("input_tokens negative", record(input_tokens=-1), "input_tokens", "invalid"),
    ("input_tokens a string", record(input_tokens="10"), "input_tokens", "invalid"),
    ("input_tokens a float", record(input_tokens=1.5), "input_tokens", "invalid"),
    ("input_tokens a boolean", record(input_tokens=True), "input_tokens", "invalid"),
    ("input_tokens huge", record(input_tokens=10**30), "input_tokens", "invalid"),
    (
        "cached_input_tokens negative",
        record(cached_input_tokens=-5),
        "cached_input_tokens",
        "invalid",
    ),
    ("output_tokens above bigint", record(output_tokens=2**63), "output_tokens", "invalid"),
    ("requests negative", record(requests=-1), "requests", "invalid"),
    ("revenue 7 places", record(revenue="0.1234567"), "revenue", "invalid"),
    ("revenue negative", record(revenue="-1.00"), "revenue", "invalid"),
    ("revenue a float", record(revenue=1.5), "revenue", "invalid"),
    ("revenue exponent", record(revenue="1e3"), "revenue", "invalid"),
    ("revenue NaN", record(revenue="NaN"), "revenue", "invalid"),
    ("revenue huge", record(revenue="1" + "0" * 30), "revenue", "invalid"),
    ("currency not ISO 4217", record(currency="usd"), "currency", "invalid"),
    ("currency unknown code", record(currency="XYZ"), "currency", "invalid"),
    ("currency of other terms", record(currency="EUR"), "currency", "currency_mismatch"),
    ("region not alpha-2", record(region="USA"), "region", "invalid"),
    ("region not assigned", record(region="UK"), "region", "invalid"),
    ("customer_ref too long", record(customer_ref="x" * 129), "customer_ref", "invalid"),
    ("customer_ref NUL byte", record(customer_ref="a\x00b"), "customer_ref", "invalid"),
    ("corrects bad charset", record(corrects="a b"), "corrects", "invalid"),
    ("corrects unknown", record("k-1", corrects="never-sent"), "corrects", "correction_not_found"),
    ("unknown field", record(host="together"), "host", "unknown_field"),
]


@pytest.mark.parametrize(
    ("bad", "field", "code"), [r[1:] for r in RULES], ids=[r[0] for r in RULES]
)
def test_it_rejects_each_rule_naming_the_field(
    catalog: Any, post: Any, bad: Any, field: str, code: str
) -> None:
    # given a batch of one good record and one that breaks a single rule
    if callable(bad):
        bad = bad()
    # when it is posted
    response = post([record("good-1"), bad])

    # then the good one is stored, the bad one is rejected naming the field with the code
    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["accepted"], body["rejected"]) == (1, 1)
    [result] = body["results"]
    assert result["index"] == 1
    assert result["status"] == "rejected"
    assert field in result["errors"], result
    assert result["errors"][field][0].startswith(code + ": "), result
    assert UsageRecord.objects.count() == 1


def test_it_rejects_a_record_that_is_not_an_object(catalog: Any, post: Any) -> None:
    # given / when a batch holds a string instead of an object
    body = post(["not a record"]).json()

    # then it is rejected as a record
    assert body["results"] == [
        {
            "index": 0,
            "event_id": None,
            "status": "rejected",
            "errors": {"record": ["invalid: must be a JSON object"]},
        }
    ]


def _raw(
    host_client: Any, body: bytes, content_type: str = "application/json", **extra: Any
) -> Any:
    return host_client.post("/api/v1/usage", data=body, content_type=content_type, **extra)


@pytest.mark.parametrize(
    "body",
    [
        b'{"records": [',
        b"[]",
        b'{"records": {}}',
        b'{"record": []}',
        b'{"records": [], "host": "together"}',
        b'{"records": [1e400]}',
        b"\xff\xfe",
        b"",
    ],
    ids=[
        "truncated",
        "a list",
        "records not a list",
        "no records",
        "extra key",
        "inf",
        "not utf-8",
        "empty",
    ],
)
def test_it_answers_a_malformed_envelope_with_400_and_stores_nothing(
    catalog: Any, host_client: Any, body: bytes
) -> None:
    # given / when a malformed envelope is posted
    response = _raw(host_client, body)

    # then 400 in the JSON error shape, nothing stored
    assert response.status_code == 400, response.content
    assert response.json()["error"]["code"] == "malformed"
    assert UsageRecord.objects.count() == 0


def test_it_refuses_10001_records_as_a_whole(catalog: Any, post: Any) -> None:
    # given 10,001 valid records
    records = [record(f"many-{i}") for i in range(10_001)]

    # when posted
    response = post(records)

    # then 400 naming records, and not one of them stored
    assert response.status_code == 400
    assert "records" in response.json()["error"]["fields"]
    assert UsageRecord.objects.count() == 0


def test_it_answers_a_body_over_10_mb_with_413(catalog: Any, host_client: Any) -> None:
    # given a body of 10 MiB + 1 byte
    padding = b" " * (MAX_BODY_BYTES + 1 - len(b'{"records": []}'))
    body = b'{"records": []' + padding + b"}"
    assert len(body) == MAX_BODY_BYTES + 1

    # when posted
    response = _raw(host_client, body)

    # then 413 in the JSON error shape
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"


def test_it_answers_a_gzip_bomb_with_413(catalog: Any, host_client: Any) -> None:
    # given a small gzip body that inflates beyond 10 MiB
    body = gzip.compress(b'{"records": []' + b" " * (MAX_BODY_BYTES + 10) + b"}")
    assert len(body) < 100_000

    # when posted
    response = _raw(host_client, body, HTTP_CONTENT_ENCODING="gzip")

    # then 413
    assert response.status_code == 413


def test_it_answers_another_content_type_with_415(catalog: Any, host_client: Any) -> None:
    # given / when a valid batch is posted as text/plain, and as JSON with an unknown encoding
    body = orjson.dumps({"records": [record()]})
    plain = _raw(host_client, body, "text/plain")
    brotli = _raw(host_client, body, HTTP_CONTENT_ENCODING="br")

    # then both are 415 and nothing is stored
    assert plain.status_code == 415
    assert plain.json()["error"]["code"] == "unsupported_media_type"
    assert brotli.status_code == 415
    assert UsageRecord.objects.count() == 0


def test_it_answers_a_bad_ndjson_line_with_400(catalog: Any, host_client: Any) -> None:
    # given NDJSON whose second line is not JSON
    body = orjson.dumps(record("l-1")) + b"\n{oops\n"

    # when posted
    response = _raw(host_client, body, "application/x-ndjson")

    # then 400 naming the line, and the good first line is not stored either
    assert response.status_code == 400
    assert "line 2" in response.json()["error"]["message"]
    assert UsageRecord.objects.count() == 0


def test_it_needs_a_host_key(catalog: Any, api_client: Any, licensor_client: Any) -> None:
    # given / when posting without a key and with a licensor's key
    body = orjson.dumps({"records": [record()]})
    anonymous = api_client.post("/api/v1/usage", data=body, content_type="application/json")
    licensor = licensor_client.post("/api/v1/usage", data=body, content_type="application/json")

    # then 401 and 403, nothing stored
    assert anonymous.status_code == 401
    assert licensor.status_code == 403
    assert UsageRecord.objects.count() == 0
