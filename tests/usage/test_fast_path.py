"""The fast path (`columns.decode_valid` + `services.usage_batch_ingest_valid`) is an optimisation
only: it must take exactly what the per-record path takes, store the same values with the same
content hash, and leave everything else to the per-record path, which names the problems."""

from __future__ import annotations

import json
from collections import Counter
from datetime import timedelta
from typing import Any, get_args

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.vocabulary import CUSTOMER_CATEGORIES
from tests.factories import HostFactory, LicensedModelFactory, LicenseFactory, LicenseVersionFactory
from tests.usage.conftest import AT, NOW, record
from usage import columns, wire
from usage.api import BATCHES_BY_PATH
from usage.models import UsageKey, UsageRecord
from usage.services import usage_batch_ingest


def _body(records: list[Any]) -> bytes:
    # json, not orjson: it writes integers beyond 64 bits, which both paths must refuse.
    return json.dumps({"records": records}).encode()


def _slow(records: list[Any]) -> list[wire.Record | wire.Rejection]:
    return [wire.validate_record(i, r, now=NOW, host_currency="USD") for i, r in enumerate(records)]


def _assert_same_as_slow_path(records: list[Any], batch: columns.ValidBatch) -> None:
    """Every record valid on the slow path, with the values and hash the fast path would store."""
    assert_batch_holds(_slow(records), batch)


def assert_batch_holds(slow_records: list[Any], batch: columns.ValidBatch) -> None:
    """`batch` holds, column by column, the per-record path's valid records `slow_records`."""
    assert len(batch) == len(slow_records)
    for i, slow in enumerate(slow_records):
        assert isinstance(slow, wire.Record), slow
        at = batch.occurred_at[i]
        assert (batch.event_id[i], batch.model[i], at) == (
            slow.event_id,
            slow.model,
            slow.occurred_at,
        )
        assert batch.occurred_text[i] == slow.occurred_at.isoformat()
        counts = (
            batch.input_tokens[i],
            batch.cached_input_tokens[i],
            batch.output_tokens[i],
            batch.requests[i],
        )
        assert counts == (
            slow.input_tokens,
            slow.cached_input_tokens,
            slow.output_tokens,
            slow.requests,
        )
        assert batch.customer_category[i] == slow.customer_category
        assert columns.normalized_revenue(batch.revenue[i]) == format(slow.revenue.normalize(), "f")
        assert (
            batch.currency[i] or "USD",
            batch.region[i] or "",
            batch.customer_ref[i] or "",
        ) == (slow.currency, slow.region, slow.customer_ref)
        assert slow.corrects == ""


TRICKY_VALID = [
    record("a.b_c:d-e"),
    record("x" * 128),
    record("offset", occurred_at=(AT + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%S+02:00")),
    record("minus", occurred_at=(AT - timedelta(hours=5)).strftime("%Y-%m-%dT%H:%M:%S-05:00")),
    record("frac1", occurred_at=AT.strftime("%Y-%m-%dT%H:%M:%S.1Z")),
    record("frac6", occurred_at=AT.strftime("%Y-%m-%dT%H:%M:%S.000001Z")),
    record("frac0", occurred_at=AT.strftime("%Y-%m-%dT%H:%M:%S.000000Z")),
    record("rev0", revenue="0"),
    record("rev000", revenue="0.000"),
    record("rev100", revenue="100"),
    record("rev100.0", revenue="100.0"),
    record("revmax", revenue="999999999999.999999"),
    record("revsmall", revenue="0.000001"),
    record("nulls", region=None, customer_ref=None, currency=None),
    {**record("explicit-null"), "region": None, "currency": None, "customer_ref": None},
    {**record("explicit-null-corrects"), "corrects": None},
    {**record("empty-corrects"), "corrects": ""},
    record("all", region="GB", currency="USD", customer_ref="ünïcode " + "é" * 100),
    record("counts", input_tokens=0, cached_input_tokens=10**12, requests=0, output_tokens=7),
    record("no-counts", input_tokens=None, output_tokens=None, revenue=None),
    *[record(f"cat-{c}", customer_category=c) for c in CUSTOMER_CATEGORIES],
]


def test_it_decodes_a_valid_batch_to_what_the_per_record_path_stores() -> None:
    # given a batch of valid but unusual records
    # when the fast path decodes it
    batch = columns.decode_valid(_body(TRICKY_VALID), "application/json", now=NOW)

    # then it takes all of them, with the per-record path's values
    assert batch is not None
    _assert_same_as_slow_path(TRICKY_VALID, batch)


def test_it_decodes_ndjson_like_the_envelope() -> None:
    # given the same records as NDJSON
    body = b"\n".join(json.dumps(r).encode() for r in TRICKY_VALID) + b"\n"

    # when the fast path decodes it
    batch = columns.decode_valid(body, "application/x-ndjson", now=NOW)

    # then it holds the same records
    assert batch is not None
    _assert_same_as_slow_path(TRICKY_VALID, batch)


LEFT_TO_THE_SLOW_PATH = [
    ("7 fractional digits", record(occurred_at=AT.strftime("%Y-%m-%dT%H:%M:%S.1234567Z"))),
    ("lower-case z", record(occurred_at=AT.strftime("%Y-%m-%dT%H:%M:%Sz"))),
    ("space separator", record(occurred_at=AT.strftime("%Y-%m-%d %H:%M:%SZ"))),
    ("offset +14:60", record(occurred_at=AT.strftime("%Y-%m-%dT%H:%M:%S+14:60"))),
    ("no offset", record(occurred_at=AT.strftime("%Y-%m-%dT%H:%M:%S"))),
    ("30 February", record(occurred_at="2026-02-30T00:00:00Z")),
    ("before year 1 in UTC", record(occurred_at="0001-01-01T00:30:00+01:00")),
    ("in the future", record(occurred_at=(NOW + timedelta(minutes=6)).isoformat())),
    ("explicit null count", {**record(), "input_tokens": None}),
    ("explicit null revenue", {**record(), "revenue": None}),
    ("integral revenue number", record(revenue=12)),
    ("float revenue", record(revenue=1.5)),
    ("negative revenue", record(revenue="-1")),
    ("leading zero revenue", record(revenue="01.5")),
    ("exponent revenue", record(revenue="1e3")),
    ("7 places", record(revenue="1.0000001")),
    ("10^14", record(revenue="100000000000000")),
    ("10^12", record(revenue="1000000000000")),
    ("tokens over the maximum", record(output_tokens=10**12 + 1)),
    ("requests over the maximum", record(requests=10**9 + 1)),
    ("unicode digit revenue", record(revenue="\u0663")),
    ("boolean count", record(input_tokens=True)),
    ("float count", record(input_tokens=1.0)),
    ("huge count", record(input_tokens=2**63)),
    ("negative count", record(input_tokens=-1)),
    ("a correction", record("fix", corrects="evt-1", input_tokens=-1)),
    ("unknown field", record(input_token=5)),
    ("newline in event_id", record("a\nb")),
    ("event_id 129", record("e" * 129)),
    ("empty region", record(region="")),
    ("UK", record(region="UK")),
    ("empty currency", record(currency="")),
    ("lower-case currency", record(currency="usd")),
    ("NUL in customer_ref", record(customer_ref="a\x00b")),
    ("customer_ref 129", record(customer_ref="r" * 129)),
    ("empty model", record(model="")),
    ("category", record(customer_category="enterprise")),
    ("not an object", "evt-1"),
]


@pytest.mark.parametrize(
    ("bad",), [(r,) for _, r in LEFT_TO_THE_SLOW_PATH], ids=[w for w, _ in LEFT_TO_THE_SLOW_PATH]
)
def test_it_leaves_any_batch_with_an_unusual_record_to_the_per_record_path(bad: Any) -> None:
    # given a valid batch with one unusual record at the end
    records = [record("ok-1"), record("ok-2"), bad]

    # when the fast path decodes it
    batch = columns.decode_valid(_body(records), "application/json", now=NOW)

    # then it declines the batch
    assert batch is None


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"[]",
        b'{"records": []}',
        b'{"records": [], "x": 1}',
        b'{"records": {}}',
        b"\xff",
        _body([record(f"e{i}") for i in range(wire.MAX_RECORDS + 1)]),
    ],
)
def test_it_leaves_a_bad_envelope_to_the_per_record_path(body: bytes) -> None:
    # given an envelope the slow path refuses or answers specially, when the fast path decodes it
    # then it declines it
    assert columns.decode_valid(body, "application/json", now=NOW) is None


def test_it_leaves_an_ndjson_line_with_two_values_to_the_per_record_path() -> None:
    # given an NDJSON line holding two records
    line = json.dumps(record("a")) + "," + json.dumps(record("b"))

    # when / then the fast path declines it
    assert columns.decode_valid(line.encode(), "application/x-ndjson", now=NOW) is None


def test_it_names_the_same_categories_as_the_rating_engine() -> None:
    # given the fast path's literal type, then it is the rating engine's list
    assert get_args(columns._Category) == CUSTOMER_CATEGORIES


_text = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=130)
_field_values = {
    "event_id": st.one_of(st.from_regex(r"[A-Za-z0-9._:\-]{1,130}", fullmatch=True), _text),
    "occurred_at": st.builds(
        lambda delta, fmt: (AT - timedelta(microseconds=delta)).strftime(fmt),
        st.integers(-(10**9), 10**12),
        st.sampled_from(
            [
                "%Y-%m-%dT%H:%M:%SZ",
                "%Y-%m-%dT%H:%M:%S.%fZ",
                "%Y-%m-%dT%H:%M:%S.%f+01:30",
                "%Y-%m-%dT%H:%M:%S-00:00",
                "%Y-%m-%d %H:%M:%SZ",
            ]
        ),
    ),
    "revenue": st.one_of(
        st.decimals(min_value=0, max_value=10**14, places=7, allow_nan=False).map(str),
        st.from_regex(r"-?[0-9]{1,16}(\.[0-9]{0,8})?", fullmatch=True),
        st.integers(-5, 10**15),
    ),
    "input_tokens": st.one_of(st.integers(-2, 2**64), st.booleans(), st.none()),
    "region": st.sampled_from([None, "", "GB", "UK", "US", "gb"]),
    "currency": st.sampled_from([None, "", "USD", "EUR", "usd", "XXX", "ZZZ"]),
    "customer_ref": st.one_of(st.none(), _text),
}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(changes=st.fixed_dictionaries({}, optional=_field_values))
def test_it_takes_a_record_only_when_the_per_record_path_takes_it_the_same(
    changes: dict[str, Any],
) -> None:
    # given one record with random changes to its fields
    raw = {**record(), **changes}

    # when both paths read it
    batch = columns.decode_valid(_body([raw]), "application/json", now=NOW)
    [slow] = _slow([raw])

    # then the fast path declines it or agrees with the per-record path in every stored value
    if batch is not None:
        _assert_same_as_slow_path([raw], batch)
    elif isinstance(slow, wire.Record):
        # declining a valid record is allowed (it is then stored by the per-record path), but
        # only for the spellings the fast path documents as its own
        assert (
            isinstance(raw.get("revenue"), int)
            or not isinstance(raw.get("revenue", "0"), str)
            or not columns.REVENUE.fullmatch(str(raw.get("revenue", "0")))
            or not columns.TIMESTAMP.fullmatch(raw["occurred_at"])
            or raw.get("input_tokens", 0) is None
        ), raw


def stored_rows(host: Any) -> list[tuple[Any, ...]]:
    return sorted(
        UsageRecord.objects.filter(host=host).values_list(
            "event_id",
            "model_id",
            "occurred_at",
            "input_tokens",
            "requests",
            "revenue",
            "currency",
            "region",
            "customer_ref",
            "late",
            "content_hash",
        )
    )


def test_it_answers_and_stores_like_the_per_record_path(catalog: Any, host: Any, post: Any) -> None:
    # given two hosts holding the same records, one sent through the API (fast path), the other
    # through usage_batch_ingest (per-record path)
    twin = HostFactory(slug="twin", currency=host.currency)
    first = [record(f"e{i}", revenue=f"{i}.10", input_tokens=i) for i in range(20)]
    served = BATCHES_BY_PATH.copy()
    assert post(first).json()["accepted"] == 20
    assert BATCHES_BY_PATH - served == Counter(fast=1)
    assert usage_batch_ingest(host=twin, records=first).path == "per_record"

    # when both get a batch of fresh records, resends, an alias, an offset, and conflicts
    second = [
        *first[:5],
        record("e5", revenue="5.1", input_tokens=5, cached_input_tokens=0),  # the same record
        record("e6", revenue="6.11", input_tokens=6),  # other content
        record("alias", model="MiniMaxAI/MiniMax-M2.7", region="GB"),
        record("escapes", customer_ref="tab\tbackslash\\newline\nreturn\rseparator\x1f."),
        record("offset", occurred_at=(AT + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S+01:00")),
    ]
    served = BATCHES_BY_PATH.copy()
    fast = post(second).json()
    slow = usage_batch_ingest(host=twin, records=second).as_response()

    # then the fast path served the API's batch, and the answers and the stored rows are the same
    assert BATCHES_BY_PATH - served == Counter(fast=1)
    assert fast == slow
    assert fast["accepted"] == 3 and fast["duplicates"] == 6 and fast["rejected"] == 1
    assert stored_rows(host) == stored_rows(twin)
    assert UsageKey.objects.filter(host=host).count() == 23
    assert UsageRecord.objects.get(host=host, event_id="escapes").customer_ref == (
        "tab\tbackslash\\newline\nreturn\rseparator\x1f."
    )


def test_it_checks_the_currency_per_record_when_the_terms_change_within_a_batch(
    db: None, host: Any, post: Any
) -> None:
    # given a license in USD until the day before AT, then in EUR
    license = LicenseFactory(slug="switching")
    LicenseVersionFactory(license=license, label="usd", currency="USD")
    LicenseVersionFactory(
        license=license, label="eur", currency="EUR", effective_from=AT - timedelta(days=1)
    )
    LicensedModelFactory(slug="switcher", license=license)

    # when a USD batch spans the switch
    body = post(
        [
            record("before", model="switcher", occurred_at="2026-01-02T00:00:00Z"),
            record("after", model="switcher"),
        ]
    ).json()

    # then the record after the switch is rejected with currency_mismatch, the other accepted
    assert body["accepted"] == 1
    [result] = body["results"]
    assert result["event_id"] == "after"
    assert result["errors"]["currency"][0].startswith("currency_mismatch: ")


def test_it_answers_an_unknown_model_and_a_repeated_event_id_per_record(
    catalog: Any, post: Any
) -> None:
    # given a batch with an unknown model and two copies of one event_id
    served = BATCHES_BY_PATH.copy()
    body = post(
        [record("m", model="nope"), record("d"), record("d", input_tokens=1), record("ok")]
    ).json()

    # then each is answered by the per-record path
    assert BATCHES_BY_PATH - served == Counter(per_record=1)
    assert body["accepted"] == 2
    codes = {r["index"]: next(iter(r["errors"].values()), [""])[0] for r in body["results"]}
    assert codes[0].startswith("unknown_model: ")
    assert codes[2].startswith("conflict: ")
