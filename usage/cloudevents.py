"""CloudEvents in, usage records out: the wire format of `POST /api/v1/events` (docs/ingestion.md).

Pure (no database, no clock of its own). `decode_events` reads the body of one of the three
content types; `EventMapper.map` turns each event into the raw record that `POST /api/v1/usage`
would have received (`id` -> event_id, `time` -> occurred_at, `subject` -> customer_ref, the rest
from `data` through the host's mapping), which then goes through the usage ingest path unchanged;
`Mapped.response` puts the answers back in event order, each error under the event's own field
(`time`, `data.cost`) where the record's field came from.

JSON numbers are decoded as `Decimal` from their text (msgspec's `float_hook`), never as a binary
float: `0.1` stays 0.1 and `1e-7` is refused as more than 6 places, as a string would be.
"""

from __future__ import annotations

import hashlib
import operator
import re
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

import msgspec

from licensing.event_mapping import event_mapping_effective
from usage.wire import (
    MAX_RECORDS,
    REVENUE_LIMIT,
    REVENUE_MAX_PLACES,
    EnvelopeError,
    Rejection,
    validate_record,
)

SINGLE = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"
MEDIA_TYPES = (SINGLE, BATCH, "application/json")

_EVENT_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
_decoder = msgspec.json.Decoder(float_hook=Decimal)
# A record field and the event attribute it is read from (the mapped ones come from `data`).
ATTRIBUTES = {"event_id": "id", "occurred_at": "time", "customer_ref": "subject"}


def decode_events(body: bytes, media_type: str) -> list[Any]:
    """The events of a body: one object (cloudevents+json), an array (cloudevents-batch+json),
    or either (json). Raises EnvelopeError (400, nothing stored) for anything else."""
    try:
        value = _decoder.decode(body)
    except (msgspec.DecodeError, ValueError) as exc:  # ValueError: UnicodeDecodeError
        raise EnvelopeError(f"malformed JSON: {exc}") from None
    if isinstance(value, dict) and media_type != BATCH:
        return [value]
    if isinstance(value, list) and media_type != SINGLE:
        if len(value) > MAX_RECORDS:
            raise EnvelopeError(
                f"at most {MAX_RECORDS:,} events per batch, got {len(value):,}",
                {"events": [f"invalid: at most {MAX_RECORDS} events"]},
            )
        return value
    wanted = {SINGLE: "one event object", BATCH: "an array of events"}.get(
        media_type, "an event object or an array of events"
    )
    raise EnvelopeError(
        f"the body of {media_type} must be {wanted}", {"events": [f"invalid: {wanted}"]}
    )


def event_id_of(raw: str) -> str:
    """An event's `id` as an event_id: itself when valid, else `ce-` + its hex SHA-256 (so a
    resend of the same event still deduplicates)."""
    if _EVENT_ID.fullmatch(raw):
        return raw
    return "ce-" + hashlib.sha256(raw.encode()).hexdigest()


def _revenue_text(value: Decimal) -> tuple[str | None, str | None]:
    """A JSON number for revenue as the decimal string the record rules take (they then check
    places and range with their own messages); absurd exponents are refused here, before
    `format` would write a string of a billion zeros."""
    exponent = value.as_tuple().exponent
    if not isinstance(exponent, int):  # NaN/Infinity cannot come from JSON; be safe
        return None, 'invalid: must be a decimal string such as "12.50"'
    if exponent < -40:
        return None, f"invalid: at most {REVENUE_MAX_PLACES} decimal places"
    if value.adjusted() > 40:
        return None, f"invalid: must be below {REVENUE_LIMIT}"
    return format(value, "f"), None


@dataclass
class Mapped:
    """The records to ingest, and what is needed to answer in the events' terms."""

    records: list[dict[str, Any]] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)  # the event index of each record
    sources: dict[str, str] = field(default_factory=dict)  # record field -> event field
    refused: list[dict[str, Any]] = field(default_factory=list)  # results of unmappable events
    # False when some record carries a value only the per-record path can judge (a Decimal
    # where a string or integer belongs): then the batch skips the fast path.
    plain: bool = True

    def response(self, answer: dict[str, Any]) -> dict[str, Any]:
        """The ingest answer for the records, re-indexed by event, errors under event fields."""
        results = list(self.refused)
        for result in answer["results"]:
            sources = self.sources
            results.append(
                {
                    **result,
                    "index": self.positions[result["index"]],
                    "errors": {sources.get(k, k): v for k, v in result["errors"].items()},
                }
            )
        results.sort(key=lambda r: r["index"])
        return {
            **answer,
            "rejected": answer["rejected"] + len(self.refused),
            "results": results,
        }


class EventMapper:
    """Maps events for one host: its mapping merged over the defaults, its default category."""

    def __init__(self, *, event_mapping: dict[str, str], default_customer_category: str) -> None:
        self.paths = event_mapping_effective(event_mapping)
        self.default_category = default_customer_category
        self.sources = {
            **ATTRIBUTES,
            **{name: "data." + ".".join(path) for name, path in self.paths.items()},
        }
        self._typed = _typed_decoders(self.paths)
        # Per mapped field, what reads it from a typed `data` (AttributeError: absent on the way).
        self._getters = [
            (name, operator.attrgetter(".".join(attrs)))
            for name, attrs in (self._typed[2] if self._typed else {}).items()
        ]

    def decode(self, body: bytes, media_type: str) -> list[Any]:
        """`decode_events`, through msgspec structs of this mapping's paths when the body fits
        them (what is not mapped is skipped, not built: ~4x faster than generic dicts);
        anything else, including every body refused, goes the generic way."""
        if self._typed is not None:
            single, batch, _ = self._typed
            try:
                if media_type == SINGLE or (media_type != BATCH and body[:64].lstrip()[:1] == b"{"):
                    events: list[Any] = [single.decode(body)]
                else:
                    events = batch.decode(body)
            except (msgspec.DecodeError, ValueError):
                pass
            else:
                return events
        return decode_events(body, media_type)

    def map(self, events: list[Any], *, now: datetime, host_currency: str) -> Mapped:
        mapped = Mapped(sources=self.sources)
        for index, event in enumerate(events):
            if not isinstance(event, dict | msgspec.Struct):
                mapped.refused.append(
                    Rejection(
                        index, None, {"event": ["invalid: must be a JSON object"]}
                    ).as_result()
                )
                continue
            record, problems, plain = self._record(event, isinstance(event, msgspec.Struct))
            if problems:
                # Refused before the record rules, which still name the event's other problems.
                checked = validate_record(index, record, now=now, host_currency=host_currency)
                errors = checked.errors if isinstance(checked, Rejection) else {}
                errors = {self.sources.get(k, k): v for k, v in errors.items()} | problems
                event_id = record.get("event_id")
                valid_id = isinstance(event_id, str) and _EVENT_ID.fullmatch(event_id)
                mapped.refused.append(
                    Rejection(index, event_id if valid_id else None, errors).as_result()
                )
                continue
            mapped.records.append(record)
            mapped.positions.append(index)
            mapped.plain &= plain
        return mapped

    def _record(self, event: Any, typed: bool) -> tuple[dict[str, Any], dict[str, list[str]], bool]:
        record: dict[str, Any] = {}
        problems: dict[str, list[str]] = {}
        values: list[tuple[str, Any]] = []
        if typed:
            raw_id, at, subject, data = event.id, event.time, event.subject, event.data
            for name, getter in self._getters:
                try:
                    values.append((name, getter(data)))
                except AttributeError:  # data, or an object on the path, is absent or null
                    pass
        else:
            raw_id, at, subject, data = (event.get(k) for k in ("id", "time", "subject", "data"))
            if data is not None and not isinstance(data, dict):
                problems["data"] = ["invalid: must be a JSON object"]
                data = None
            for name, path in self.paths.items():
                value: Any = data
                for key in path:
                    value = value.get(key) if isinstance(value, dict) else None
                values.append((name, value))
        if raw_id is not None:
            # A non-string or empty id goes on as it is: the record rule names it.
            record["event_id"] = (
                event_id_of(raw_id) if isinstance(raw_id, str) and raw_id else raw_id
            )
        if at is not None:
            record["occurred_at"] = at
        if subject is not None:
            record["customer_ref"] = subject
        plain = True
        for name, value in values:
            if value is None:
                continue
            if type(value) is Decimal or (name == "revenue" and type(value) is int):
                if name != "revenue":
                    plain = False  # e.g. 1.5 tokens: the record rule refuses it by name
                else:
                    value, problem = _revenue_text(Decimal(value))
                    if problem:
                        problems[self.sources[name]] = [problem]
                        continue
            record[name] = value
        if "customer_category" not in record and self.default_category:
            record["customer_category"] = self.default_category
        return record, problems, plain


def _typed_decoders(
    paths: dict[str, tuple[str, ...]],
) -> tuple[msgspec.json.Decoder[Any], msgspec.json.Decoder[Any], dict[str, tuple[str, ...]]] | None:
    """Decoders of one event and of a batch into structs that hold only the mapped paths of
    `data` (typed Any: any JSON value, numbers with fractions as Decimal), and the paths in
    their attribute names (`f0`, `f1`, ...: a JSON name need not be a Python identifier). None
    when a path is both a value and a parent of another (`data.geo` and `data.geo.country`)."""
    tree: dict[str, Any] = {}
    for path in paths.values():
        node = tree
        for key in path[:-1]:
            node = node.setdefault(key, {})
            if node is None:
                return None
        if isinstance(node.get(path[-1]), dict):
            return None
        node[path[-1]] = None
    counter = iter(range(1 << 16))
    attrs: dict[tuple[str, ...], tuple[str, ...]] = {}

    def build(node: dict[str, Any], prefix: tuple[str, ...], where: tuple[str, ...]) -> Any:
        fields: list[tuple[str, Any, Any]] = []
        rename: dict[str, str] = {}
        for key, child in node.items():
            attr = f"f{next(counter)}"
            rename[attr] = key
            attrs[(*prefix, key)] = (*where, attr)
            kind = Any if child is None else build(child, (*prefix, key), (*where, attr)) | None
            fields.append((attr, kind, None))
        return msgspec.defstruct("Data", fields, rename=rename, gc=False)

    data = build(tree, (), ())
    event = msgspec.defstruct(
        "Event",
        [
            ("id", Any, None),
            ("time", Any, None),
            ("subject", Any, None),
            ("data", data | None, None),
        ],
        gc=False,
    )
    single = msgspec.json.Decoder(event, float_hook=Decimal)
    batch = msgspec.json.Decoder(
        Annotated[list[event], msgspec.Meta(max_length=MAX_RECORDS)],  # type: ignore[valid-type]
        float_hook=Decimal,
    )
    return single, batch, {name: attrs[path] for name, path in paths.items()}
