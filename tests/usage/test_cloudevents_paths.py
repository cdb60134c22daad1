"""The typed decoding of events (structs of the mapped paths) maps exactly as the generic one."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import msgspec
import pytest

from usage.cloudevents import BATCH, SINGLE, EventMapper, decode_events, mapper_for

NOW = datetime(2026, 11, 1, tzinfo=UTC)
ENCODER = msgspec.json.Encoder(decimal_format="number")
EVENTS: list[Any] = [
    {
        "id": "a-1",
        "time": "2026-10-01T00:00:00Z",
        "subject": "c",
        "type": "t",
        "source": "s",
        "data": {
            "model": "m",
            "cost": Decimal("0.1"),
            "prompt_tokens": 3,
            "completion_tokens": 2,
            "total_tokens": 5,
            "geo": {"country": "DE"},
            "extra": [1, {"x": None}],
        },
    },
    {"id": "odd id é", "time": "2026-10-01T00:00:00Z", "data": {"model": "m", "cost": 7}},
    {"id": 42, "time": 7, "subject": None, "data": None},
    {"id": "", "data": {"cost": Decimal("1E-7"), "prompt_tokens": Decimal("1.5"), "geo": None}},
    {"id": "b-1", "data": {"cost": Decimal("1E+400"), "geo": {"country": 5}, "tier": "research"}},
    {"id": "b-2", "data": {"model": {"nested": True}, "cost": "12.5", "cached_tokens": True}},
    {},
]


@pytest.mark.parametrize(
    "mapping",
    [{}, {"region": "data.geo.country", "customer_category": "data.tier", "requests": "data.n"}],
)
def test_typed_and_generic_decoding_map_the_same(mapping: dict[str, str]) -> None:
    mapper = EventMapper(event_mapping=mapping, default_customer_category="commercial")
    body = ENCODER.encode(EVENTS)

    typed_events = mapper.decode(body, BATCH)
    generic_events = decode_events(body, BATCH)
    assert all(isinstance(e, msgspec.Struct) for e in typed_events)

    typed = mapper.map(typed_events, now=NOW, host_currency="USD")
    generic = mapper.map(generic_events, now=NOW, host_currency="USD")
    assert (typed.records, typed.positions, typed.refused) == (
        generic.records,
        generic.positions,
        generic.refused,
    )
    assert typed.records[0]["revenue"] == "0.1"


def test_a_body_the_structs_do_not_fit_goes_the_generic_way() -> None:
    mapper = EventMapper(event_mapping={}, default_customer_category="")
    events = mapper.decode(b'[{"id": "x", "data": "text"}, 3]', BATCH)
    assert events == [{"id": "x", "data": "text"}, 3]
    assert mapper.decode(b'{"id": "y"}', SINGLE)[0].id == "y"
    assert mapper.decode(b'  [{"id": "z"}]', "application/json")[0].id == "z"


def test_a_mapping_with_a_value_and_its_parent_has_no_typed_decoding() -> None:
    mapper = EventMapper(
        event_mapping={"region": "data.geo", "currency": "data.geo.cur"},
        default_customer_category="",
    )
    assert mapper.decode(b'[{"id": "x"}]', BATCH) == [{"id": "x"}]


def test_a_mapper_is_built_once_per_distinct_settings() -> None:
    # given a host's settings, then the same settings written in another key order
    first = mapper_for({"region": "data.geo.country", "requests": "data.n"}, "commercial")
    same = mapper_for({"requests": "data.n", "region": "data.geo.country"}, "commercial")

    # when the settings change, then another mapper maps by the new ones
    changed = mapper_for({"region": "data.region"}, "commercial")
    other_category = mapper_for({"region": "data.geo.country", "requests": "data.n"}, "research")

    assert same is first
    assert changed is not first and other_category is not first
    assert changed.paths["region"] == ("region",)
    assert other_category.default_category == "research"
    assert mapper_for(None, "") is mapper_for({}, "")
