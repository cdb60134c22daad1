"""Per-record maxima (docs/ingestion.md, "Per-record maxima"; docs/security.md finding 1): a
record may not carry more tokens, requests or revenue than one real request could, so no host can
send values whose sums overflow the billing run's columns."""

from __future__ import annotations

from typing import Any

import pytest

from tests.usage.conftest import record
from usage.models import UsageRecord
from usage.wire import REQUESTS_MAX, REVENUE_LIMIT, TOKENS_MAX

OVER = [
    ("input_tokens", TOKENS_MAX + 1),
    ("cached_input_tokens", TOKENS_MAX + 1),
    ("output_tokens", TOKENS_MAX + 1),
    ("requests", REQUESTS_MAX + 1),
    ("input_tokens", 2**63 - 1),  # the attack of the review: two of these overflowed bigint sums
    ("revenue", "1000000000000"),
    ("revenue", "1000000000000.000000"),
]


def test_the_maxima_are_the_documented_ones() -> None:
    assert (TOKENS_MAX, REQUESTS_MAX, REVENUE_LIMIT) == (10**12, 10**9, 10**12)


@pytest.mark.parametrize(("field", "value"), OVER, ids=[f"{f}={v}" for f, v in OVER])
@pytest.mark.parametrize("ndjson", [False, True], ids=["json", "ndjson"])
def test_it_rejects_a_value_over_the_maximum_naming_the_field(
    catalog: Any, post: Any, field: str, value: Any, ndjson: bool
) -> None:
    # given a batch of two records, one of them over a per-record maximum (an all-valid batch
    # of the same shape takes the fast path, so both paths are exercised by the pair of tests)
    # when it is posted
    body = post([record("a"), record("b", **{field: value})], ndjson=ndjson).json()

    # then that record is rejected by the field's name and only the other is stored
    assert (body["accepted"], body["rejected"]) == (1, 1), body
    [result] = body["results"]
    assert result["event_id"] == "b"
    assert result["errors"][field][0].startswith("invalid: "), result
    assert UsageRecord.objects.count() == 1


@pytest.mark.parametrize(("field", "value"), OVER, ids=[f"{f}={v}" for f, v in OVER])
def test_a_batch_of_one_over_the_maximum_is_rejected_too(
    catalog: Any, post: Any, field: str, value: Any
) -> None:
    # given / when a single record over a maximum (the shape the fast path would take)
    body = post([record("b", **{field: value})]).json()

    # then it is rejected naming the field, nothing stored
    assert body["rejected"] == 1, body
    assert field in body["results"][0]["errors"]
    assert UsageRecord.objects.count() == 0


def test_it_accepts_exactly_the_maxima(catalog: Any, post: Any) -> None:
    # given a record at every maximum
    at_max = record(
        "max",
        input_tokens=TOKENS_MAX,
        cached_input_tokens=TOKENS_MAX,
        output_tokens=TOKENS_MAX,
        requests=REQUESTS_MAX,
        revenue="999999999999.999999",
    )

    # when it is posted alone (fast path) and with an invalid neighbour (per-record path)
    fast = post([at_max]).json()
    slow = post(
        [
            record("max2", **{k: v for k, v in at_max.items() if k != "event_id"}),
            record("bad", input_tokens=-1),
        ]
    ).json()

    # then both paths accept it
    assert fast["accepted"] == 1, fast
    assert slow["accepted"] == 1, slow
    assert UsageRecord.objects.filter(input_tokens=TOKENS_MAX).count() == 2


@pytest.mark.parametrize(
    ("field", "delta"),
    [
        ("input_tokens", -(TOKENS_MAX + 1)),
        ("output_tokens", TOKENS_MAX + 1),
        ("requests", -(REQUESTS_MAX + 1)),
        ("revenue", "-1000000000000"),
    ],
)
def test_a_correction_delta_is_bounded_in_absolute_value(
    catalog: Any, post: Any, field: str, delta: Any
) -> None:
    # given a stored original
    assert post([record("orig")]).json()["accepted"] == 1

    # when a correction carries a delta beyond the maximum
    body = post([record("fix", corrects="orig", **{field: delta})]).json()

    # then it is rejected naming the field (not as a negative net: the bound comes first)
    assert body["rejected"] == 1, body
    assert body["results"][0]["errors"][field][0].startswith("invalid: "), body
    assert UsageRecord.objects.count() == 1


@pytest.mark.parametrize(
    ("field", "original", "delta"),
    [
        ("input_tokens", TOKENS_MAX, 1),
        ("requests", REQUESTS_MAX, 1),
        ("revenue", "999999999999.999999", "0.000001"),
    ],
)
def test_corrections_cannot_raise_a_net_above_the_maximum(
    catalog: Any, post: Any, field: str, original: Any, delta: Any
) -> None:
    # given an original at a per-record maximum
    assert post([record("orig", **{field: original})]).json()["accepted"] == 1

    # when a correction would take its net above it (each delta alone is within bounds)
    body = post([record("up", corrects="orig", **{field: delta})]).json()

    # then the correction is rejected naming the field, and only the original is stored
    assert body["rejected"] == 1, body
    assert body["results"][0]["errors"][field][0].startswith("invalid: "), body
    assert UsageRecord.objects.count() == 1
