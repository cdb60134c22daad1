"""The fast path of POST /api/v1/events (`EventMapper.decode_valid` + the usage fast path) is an
optimisation only: it must take exactly what the per-record path (`decode` + `map` +
`validate_record`) takes, store the same values with the same content hash, answer the same,
and leave everything else to the per-record path, which names the problems."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rest_framework.test import APIClient

from licensing.models import Host
from tests.factories import HostFactory
from tests.usage.conftest import AT, NOW
from tests.usage.test_events_api import BATCH, ENCODER, SINGLE, event
from tests.usage.test_fast_path import assert_batch_holds, stored_rows
from usage.api import EVENT_BATCHES_BY_PATH
from usage.cloudevents import EventMapper, decode_events
from usage.models import UsageKey
from usage.services import CLAIMS_BY_PATH, usage_batch_ingest
from usage.wire import MAX_RECORDS, Record, validate_record

MAPPINGS = {
    "default": {},
    "nested": {
        "region": "data.geo.country",
        "customer_category": "data.tier",
        "requests": "data.n",
        "currency": "data.cur",
    },
}


@pytest.fixture
def commercial(host: Host) -> Host:
    host.default_customer_category = "commercial"
    host.save()
    return host


@pytest.fixture
def send(host_client: APIClient, commercial: Host) -> Callable[[list[Any]], Any]:
    """POST a CloudEvents batch with the (commercial by default) host's key."""

    def send(events: list[Any]) -> Any:
        body = ENCODER.encode(events)
        return host_client.post("/api/v1/events", data=body, content_type=BATCH)

    return send


def _mapper(mapping: str = "default", category: str = "commercial") -> EventMapper:
    return EventMapper(event_mapping=MAPPINGS[mapping], default_customer_category=category)


def _per_record(mapper: EventMapper, body: bytes, media_type: str = BATCH) -> list[Any] | None:
    """What the per-record path makes of a body: its records checked by the record rules, or
    None when some event is refused while mapping."""
    mapped = mapper.map(decode_events(body, media_type), now=NOW, host_currency="USD")
    if mapped.refused:
        return None
    return [
        validate_record(i, r, now=NOW, host_currency="USD") for i, r in enumerate(mapped.records)
    ]


def _data(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "model": "minimax-m2.7",
        "cost": Decimal("0.1"),
        "prompt_tokens": 1000,
        "completion_tokens": 200,
        "total_tokens": 1200,
    }
    base.update(fields)
    return base


def _raw(text: str) -> msgspec.Raw:
    """A JSON number written with exactly this text."""
    return msgspec.Raw(text.encode())


AT_Z = AT.strftime("%Y-%m-%dT%H:%M:%SZ")
TRICKY_VALID: list[Any] = [
    event("chatcmpl-1"),
    event("a.b_c:d-e", data=_data(cost=_raw("4.2e-05"))),
    event("exp-plus", data=_data(cost=_raw("1.5E+3"))),
    event("trailing-zeros", data=_data(cost=_raw("12.500000"))),
    event("integral-cost", data=_data(cost=5)),
    event("string-cost", data=_data(cost="7.25")),
    event("null-cost", data=_data(cost=None)),
    event("no-cost", data={"model": "minimax-m2.7"}),
    event("null-tokens", data=_data(prompt_tokens=None, completion_tokens=None)),
    event("cached", data=_data(cached_tokens=10**12)),
    event("no-subject", subject=None),
    {**event("null-subject"), "subject": None},
    event("subject-128", subject="s" * 128),
    event("escapes", subject="tab\tbackslash\\newline\nreturn\rsep\x1f ü"),
    event("call/42 é"),  # hashed: ce-<sha256>
    event("offset", time=(AT + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%S+02:00")),
    event("frac", time=AT.strftime("%Y-%m-%dT%H:%M:%S.000001Z")),
    event("litellm-time", time=AT.isoformat()),
    {**event("extensions"), "traceparent": "00-abc", "dataschema": "x", "extra": [1, {}]},
    event("unmapped-data", data=_data(extra={"deep": [1, 2, {"x": None}]}, total_tokens=1.5)),
]


@pytest.mark.parametrize("mapping", list(MAPPINGS))
def test_it_maps_a_valid_batch_to_what_the_per_record_path_stores(mapping: str) -> None:
    # given a batch of valid but unusual LiteLLM-shaped events
    mapper = _mapper(mapping)
    body = ENCODER.encode(TRICKY_VALID)

    # when the fast path decodes it
    batch = mapper.decode_valid(body, BATCH, now=NOW)

    # then it takes all of them, with the per-record path's values
    assert batch is not None
    slow = _per_record(mapper, body)
    assert slow is not None
    assert_batch_holds(slow, batch)
    assert batch.revenue[1] == "0.000042"
    assert batch.event_id[TRICKY_VALID.index(event("call/42 é"))].startswith("ce-")


def test_it_maps_the_nested_paths_and_nulls_on_the_way() -> None:
    # given events that fill region, category, requests and currency through nested paths
    mapper = _mapper("nested", category="")
    events = [
        event("a", data=_data(geo={"country": "GB"}, tier="research", n=3, cur="USD")),
        event("b", data=_data(geo=None, tier="commercial", n=None, cur=None)),
        event("c", data=_data(geo={"country": None}, tier="nonprofit")),
    ]
    body = ENCODER.encode(events)

    # when the fast path decodes them
    batch = mapper.decode_valid(body, BATCH, now=NOW)

    # then the mapped values and the defaults are the per-record path's
    assert batch is not None
    slow = _per_record(mapper, body)
    assert slow is not None
    assert_batch_holds(slow, batch)
    assert batch.region == ["GB", None, None]
    assert batch.requests == [3, 1, 1]
    assert batch.customer_category == ["research", "commercial", "nonprofit"]


def test_one_event_in_either_content_type() -> None:
    mapper = _mapper()
    body = ENCODER.encode(event("one"))
    for media_type in (SINGLE, "application/json"):
        batch = mapper.decode_valid(body, media_type, now=NOW)
        assert batch is not None and batch.event_id == ["one"]
    assert mapper.decode_valid(body, BATCH, now=NOW) is None


LEFT_TO_THE_PER_RECORD_PATH: list[tuple[str, Any]] = [
    ("cost 1e-7", event(data=_data(cost=_raw("1e-7")))),
    ("cost with 7 places", event(data=_data(cost=_raw("0.1234567")))),
    ("cost as exponent string", event(data=_data(cost="1e3"))),
    ("cost string with a space", event(data=_data(cost=" 12.5"))),
    ("cost string with a plus", event(data=_data(cost="+12.5"))),
    ("cost string with an underscore", event(data=_data(cost="1_000"))),
    ("cost true", event(data=_data(cost=True))),
    ("negative cost", event(data=_data(cost=_raw("-1")))),
    ("negative zero cost", event(data=_data(cost=_raw("-0")))),
    ("cost 10^12", event(data=_data(cost=_raw("1E+12")))),
    ("cost 1e400", event(data=_data(cost=_raw("1e400")))),
    ("cost an object", event(data=_data(cost={"usd": 1}))),
    ("fractional tokens", event(data=_data(prompt_tokens=_raw("1.5")))),
    ("integral float tokens", event(data=_data(prompt_tokens=_raw("1.0")))),
    ("exponent tokens", event(data=_data(prompt_tokens=_raw("1e3")))),
    ("string tokens", event(data=_data(prompt_tokens="5"))),
    ("boolean tokens", event(data=_data(completion_tokens=True))),
    ("negative tokens", event(data=_data(prompt_tokens=-1))),
    ("tokens over the maximum", event(data=_data(cached_tokens=10**12 + 1))),
    ("no model", event(data={k: v for k, v in _data().items() if k != "model"})),
    ("null model", event(data={**_data(), "model": None})),
    ("empty model", event(data=_data(model=""))),
    ("model a number", event(data=_data(model=5))),
    ("model 201", event(data=_data(model="m" * 201))),
    ("no data", event(data=None)),
    ("data a string", event(data="text")),
    ("no id", event(None)),
    ("id a number", event(42)),  # type: ignore[arg-type]
    ("empty id", event("")),
    ("no time", event(time=None)),
    ("time a number", event(time=7)),
    ("lower-case z", event(time=AT.strftime("%Y-%m-%dT%H:%M:%Sz"))),
    ("7 fractional digits", event(time=AT.strftime("%Y-%m-%dT%H:%M:%S.1234567Z"))),
    ("no offset", event(time=AT.strftime("%Y-%m-%dT%H:%M:%S"))),
    ("in the future", event(time=(NOW + timedelta(minutes=6)).isoformat())),
    ("too old", event(time="2019-12-31T23:59:59Z")),
    ("subject 129", event(subject="s" * 129)),
    ("subject a number", event(subject=5)),
    ("NUL in subject", event(subject="a\x00b")),
    ("not an object", "evt-1"),
]


@pytest.mark.parametrize(
    ("bad",),
    [(b,) for _, b in LEFT_TO_THE_PER_RECORD_PATH],
    ids=[w for w, _ in LEFT_TO_THE_PER_RECORD_PATH],
)
def test_it_leaves_any_batch_with_an_unusual_event_to_the_per_record_path(bad: Any) -> None:
    # given a valid batch with one unusual event at the end
    mapper = _mapper()
    events = [event("ok-1"), event("ok-2"), bad]
    body = ENCODER.encode(events)

    # when the fast path decodes it, then it declines the batch
    assert mapper.decode_valid(body, BATCH, now=NOW) is None


@pytest.mark.parametrize(
    ("mapping", "category", "events"),
    [
        ("default", "", [event("no-category")]),  # no default category, none mapped
        ("nested", "", [event("null-tier", data=_data(tier=None))]),
        ("nested", "commercial", [event("bad-tier", data=_data(tier="enterprise"))]),
        ("nested", "commercial", [event("uk", data=_data(geo={"country": "UK"}))]),
        ("nested", "commercial", [event("usd", data=_data(cur="usd"))]),
        ("nested", "commercial", [event("geo-text", data=_data(geo="GB"))]),
    ],
)
def test_it_leaves_a_missing_or_bad_mapped_field_to_the_per_record_path(
    mapping: str, category: str, events: list[Any]
) -> None:
    mapper = _mapper(mapping, category)
    assert mapper.decode_valid(ENCODER.encode(events), BATCH, now=NOW) is None


@pytest.mark.parametrize(
    "body",
    [b"", b"[]", b"{}", b"[1, 2]", b"\xff", b"[" * 10_000, b'[{"id": "x"}] trailing'],
)
def test_it_leaves_a_bad_body_to_the_per_record_path(body: bytes) -> None:
    assert _mapper().decode_valid(body, BATCH, now=NOW) is None


def test_it_leaves_10001_events_to_the_per_record_path() -> None:
    body = ENCODER.encode([event(f"e{i}") for i in range(MAX_RECORDS + 1)])
    assert _mapper().decode_valid(body, BATCH, now=NOW) is None


@pytest.mark.parametrize(
    "mapping",
    [
        {"region": "data.geo", "currency": "data.geo.cur"},  # a value and its parent
        {"requests": "data.model"},  # one value for two fields of different types
    ],
)
def test_a_mapping_the_typed_structs_cannot_hold_has_no_fast_path(mapping: dict[str, str]) -> None:
    mapper = EventMapper(event_mapping=mapping, default_customer_category="commercial")
    assert mapper.decode_valid(ENCODER.encode([event("x")]), BATCH, now=NOW) is None


_text = st.text(st.characters(codec="utf-8"), max_size=130)
_number = st.from_regex(
    r"-?(0|[1-9][0-9]{0,13})(\.[0-9]{1,8})?([eE][+-]?[0-9]{1,3})?", fullmatch=True
)
_count = st.one_of(
    st.integers(-2, 2**64), st.booleans(), st.none(), _number.map(_raw), st.just("5")
)
_data_values = {
    "model": st.sampled_from(["minimax-m2.7", "MiniMaxAI/MiniMax-M2.7", "", 5, None, "m" * 201]),
    "cost": st.one_of(
        _number.map(_raw),
        st.from_regex(r"[ +-]?[0-9_]{1,14}(\.[0-9]{0,8})?", fullmatch=True),
        st.booleans(),
        st.none(),
        st.integers(-5, 10**15),
    ),
    "prompt_tokens": _count,
    "completion_tokens": _count,
    "cached_tokens": _count,
    "geo": st.one_of(
        st.none(),
        st.just("GB"),
        st.fixed_dictionaries({"country": st.sampled_from([None, "GB", "UK", 5])}),
    ),
    "tier": st.sampled_from([None, "commercial", "enterprise", 3]),
    "n": _count,
    "cur": st.sampled_from([None, "USD", "usd", "", "EUR"]),
}
_event_values = {
    "id": st.one_of(
        st.from_regex(r"[A-Za-z0-9._:\-]{1,130}", fullmatch=True), _text, st.integers()
    ),
    "time": st.one_of(
        st.builds(
            lambda delta, fmt: (AT - timedelta(microseconds=delta)).strftime(fmt),
            st.integers(-(10**9), 10**12),
            st.sampled_from(
                [
                    "%Y-%m-%dT%H:%M:%SZ",
                    "%Y-%m-%dT%H:%M:%S.%f+00:00",
                    "%Y-%m-%dT%H:%M:%S.%f+01:30",
                    "%Y-%m-%dT%H:%M:%S-00:00",
                    "%Y-%m-%d %H:%M:%SZ",
                ]
            ),
        ),
        st.integers(),
    ),
    "subject": st.one_of(st.none(), _text, st.integers()),
    "data": st.one_of(
        st.fixed_dictionaries({}, optional=_data_values).map(lambda d: _data(**d)),
        st.none(),
        _text,
    ),
}


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    changes=st.lists(st.fixed_dictionaries({}, optional=_event_values), min_size=1, max_size=3),
    mapping=st.sampled_from(list(MAPPINGS)),
)
def test_it_takes_a_batch_only_when_the_per_record_path_takes_it_the_same(
    changes: list[dict[str, Any]], mapping: str
) -> None:
    # given events with random changes to their attributes and data
    events = [{**event(f"ev-{i}"), **change} for i, change in enumerate(changes)]
    body = ENCODER.encode(events)
    mapper = _mapper(mapping)

    # when both paths read them
    batch = mapper.decode_valid(body, BATCH, now=NOW)
    slow = _per_record(mapper, body)

    # then the fast path declines them or agrees with the per-record path in every stored value
    if batch is not None:
        assert slow is not None and all(isinstance(r, Record) for r in slow), slow
        assert_batch_holds(slow, batch)


def test_it_answers_and_stores_like_the_per_record_path(
    catalog: Any, commercial: Host, send: Any
) -> None:
    # given two hosts getting the same events, one through the API (the fast path), the other
    # mapped per event and stored by usage_batch_ingest (the per-record path)
    twin = HostFactory(slug="twin", currency="USD", default_customer_category="commercial")
    mapper = _mapper()

    def per_record(events: list[Any]) -> dict[str, Any]:
        body = ENCODER.encode(events)
        mapped = mapper.map(decode_events(body, BATCH), now=NOW, host_currency="USD")
        result = usage_batch_ingest(host=twin, records=mapped.records)
        assert result.path == "per_record"
        return mapped.response(result.as_response())

    first = [event(f"e{i}", data=_data(cost=Decimal(f"{i}.1"), prompt_tokens=i)) for i in range(20)]
    served, claims = EVENT_BATCHES_BY_PATH.copy(), CLAIMS_BY_PATH.copy()
    answer = send(first)
    assert EVENT_BATCHES_BY_PATH - served == Counter(fast=1)
    # (new events only: claimed by the straight COPY, docs/ingestion.md)
    assert CLAIMS_BY_PATH - claims == Counter(copy=1)
    assert answer.status_code == 202
    assert answer.json() == per_record(first)

    # when both get fresh events, resends, an alias, an offset, odd costs and ids, and conflicts
    second = [
        *first[:5],
        event("e5", data=_data(cost=_raw("5.10"), prompt_tokens=5, cached_tokens=0)),  # same
        event("e6", data=_data(cost=_raw("6.11"), prompt_tokens=6)),  # other content
        event("alias", data=_data(model="MiniMaxAI/MiniMax-M2.7")),
        event("escapes", subject="tab\tbackslash\\newline\nreturn\rseparator\x1f."),
        event("offset", time=(AT + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S+01:00")),
        event("small-cost", data=_data(cost=_raw("4.2e-05"))),
        event("string-cost", data=_data(cost="7.250")),
        event("call/42 é"),
        event("no-subject", subject=None),
    ]
    served, claims = EVENT_BATCHES_BY_PATH.copy(), CLAIMS_BY_PATH.copy()
    fast = send(second)
    claimed = CLAIMS_BY_PATH - claims
    slow = per_record(second)

    # then the fast path served the API's batch (its resends seen by the probe), and the
    # answers and stored rows are the same
    assert EVENT_BATCHES_BY_PATH - served == Counter(fast=1)
    assert claimed == Counter(on_conflict=1)
    assert fast.json() == slow
    assert (slow["accepted"], slow["duplicates"], slow["rejected"]) == (7, 6, 1)
    assert slow["results"][-1]["errors"] == {
        "id": [
            "conflict: a record with this event_id and other content is already stored;"
            " the stored record stays as it was"
        ]
    }
    assert stored_rows(commercial) == stored_rows(twin)
    assert UsageKey.objects.filter(host=commercial).count() == 27


@pytest.mark.parametrize(
    ("events", "field"),
    [
        ([event("ok"), event("unknown", data=_data(model="nope"))], "data.model"),
        ([event("ok"), event("tiny", data=_data(cost=_raw("1e-7")))], "data.cost"),
        ([event("ok"), event("ok", data=_data(prompt_tokens=1))], "id"),  # twice in one batch
    ],
)
def test_a_batch_the_fast_path_declines_is_answered_per_record(
    catalog: Any, send: Any, events: list[Any], field: str
) -> None:
    # when a batch with one event only the per-record path can answer is sent
    served = EVENT_BATCHES_BY_PATH.copy()
    body = send(events).json()

    # then the per-record path served it, storing the good event and naming the bad one's field
    assert EVENT_BATCHES_BY_PATH - served == Counter(per_record=1)
    assert body["accepted"] == 1 and body["rejected"] == 1
    [result] = body["results"]
    assert result["index"] == 1 and list(result["errors"]) == [field]
