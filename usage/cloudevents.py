"""CloudEvents in, usage records out: the wire format of `POST /api/v1/events` (docs/ingestion.md).

Pure (no database, no clock of its own). `decode_events` reads the body of one of the three
content types; `EventMapper.map` turns each event into the raw record that `POST /api/v1/usage`
would have received (`id` -> event_id, `time` -> occurred_at, `subject` -> customer_ref, the rest
from `data` through the host's mapping), which then goes through the usage ingest path unchanged;
`Mapped.response` puts the answers back in event order, each error under the event's own field
(`time`, `data.cost`) where the record's field came from.

JSON numbers are decoded as `Decimal` from their text (msgspec's `float_hook`), never as a binary
float: `0.1` stays 0.1 and `1e-7` is refused as more than 6 places, as a string would be.

The fast path: `EventMapper.decode_valid` decodes a batch into msgspec structs typed by the record
fields the mapping fills (a token count as a bounded int, a cost as its raw JSON text), maps it
column by column into a `usage.columns.ValidBatch`, the one the body of `POST /api/v1/usage`
decodes to, and declines (None) anything unusual; the per-record path (`decode` + `map`) is then
the reference for every answer (tests/usage/test_events_fast_path.py holds them equal).
"""

from __future__ import annotations

import functools
import hashlib
import json
import operator
import re
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

import msgspec

from core.vocabulary import CustomerCategory
from licensing.event_mapping import event_mapping_effective
from usage.columns import (
    CustomerRef,
    Model,
    Requests,
    Tokens,
    ValidBatch,
    event_ids_ok,
    valid_batch,
)
from usage.wire import (
    COUNTERS,
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
# The fast path's type of each record field a mapping may fill: what the record rule takes and
# nothing more (null: absent, as on the per-record path). A cost is kept as its JSON text.
_NULL = msgspec.Raw(b"null")
FAST_TYPES: dict[str, Any] = {
    "model": Model | None,
    "input_tokens": Tokens | None,
    "cached_input_tokens": Tokens | None,
    "output_tokens": Tokens | None,
    "requests": Requests | None,
    "revenue": msgspec.Raw,
    "currency": str | None,
    "region": str | None,
    "customer_category": CustomerCategory | None,
}


def decode_events(body: bytes, media_type: str) -> list[Any]:
    """The events of a body: one object (cloudevents+json), an array (cloudevents-batch+json),
    or either (json). Raises EnvelopeError (400, nothing stored) for anything else."""
    try:
        value = _decoder.decode(body)
    except (msgspec.DecodeError, ValueError) as exc:  # ValueError: UnicodeDecodeError
        raise EnvelopeError(f"malformed JSON: {exc}") from None
    except RecursionError:  # msgspec decodes recursively (docs/security.md, finding 8)
        raise EnvelopeError("the body is nested too deeply to be CloudEvents") from None
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


def revenue_texts(raws: list[Any]) -> list[str] | None:
    """The costs of a batch (msgspec.Raw JSON texts, None when an object on the way was null) as
    the decimal strings `POST /api/v1/usage` takes, each as the per-record path reads it: a JSON
    number from its text (`4.2e-05` -> "0.000042"), a string as it is, null as absent ("0").
    None for anything else; the column rule (`columns.REVENUE`) judges the rest."""
    if None in raws:
        raws = [_NULL if raw is None else raw for raw in raws]
    text = b"\n".join(raws)
    if not text.translate(None, b"0123456789.\n"):  # the usual case: plain decimal numbers
        return text.decode().split("\n")
    texts = []
    for raw in raws:
        value = bytes(raw)
        if value == b"null":
            texts.append("0")
        elif value[:1] == b'"':
            texts.append(value[1:-1].decode())  # an escape or a bad character fails REVENUE
        elif value[:1] in b"-0123456789":
            number, problem = _revenue_text(Decimal(value.decode()))
            if problem or number is None:
                return None
            texts.append(number)
        else:
            return None  # true, false, an object, an array
    return texts


@dataclass
class Mapped:
    """The records to ingest, and what is needed to answer in the events' terms."""

    records: list[dict[str, Any]] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)  # the event index of each record
    sources: dict[str, str] = field(default_factory=dict)  # record field -> event field
    refused: list[dict[str, Any]] = field(default_factory=list)  # results of unmappable events

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
        self._strict = _typed_decoders(self.paths, FAST_TYPES)
        self._strict_getters = {
            name: operator.attrgetter(".".join(attrs))
            for name, attrs in (self._strict[2] if self._strict else {}).items()
        }

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
            except (msgspec.DecodeError, ValueError, RecursionError):
                pass
            else:
                return events
        return decode_events(body, media_type)

    def decode_valid(self, body: bytes, media_type: str, *, now: datetime) -> ValidBatch | None:
        """The fast path: the events of a body mapped into the columns of a `ValidBatch` when
        every one of them is plainly valid, else None (then `decode` and `map`). Declines: a
        NUL escape, a body or an event the typed structs do not fit (a count that is no
        integer in range, a model or time that is no string, a missing id or time, ...), a
        null or absent `data`, a missing model or category, a cost that is not a plain
        decimal, and whatever `valid_batch` declines."""
        if self._strict is None or b"\\u0000" in body:
            return None
        one, many, _ = self._strict
        try:
            if media_type == SINGLE or (media_type != BATCH and body[:64].lstrip()[:1] == b"{"):
                events: list[Any] = [one.decode(body)]
            else:
                events = many.decode(body)
        except (msgspec.DecodeError, ValueError, RecursionError):
            return None
        count = len(events)
        datas = [e.data for e in events]
        if not count or None in datas:
            return None
        mapped = {name: _column(getter, datas) for name, getter in self._strict_getters.items()}
        models = mapped["model"]
        if None in models:
            return None
        default = self.default_category
        categories = mapped.get("customer_category") or [None] * count
        if None in categories:
            if not default:
                return None
            categories = [default if c is None else c for c in categories]
        counts: list[list[int]] = []
        for name in COUNTERS:
            fallback = 1 if name == "requests" else 0
            values = mapped.get(name) or [fallback] * count
            if None in values:
                values = [fallback if v is None else v for v in values]
            counts.append(values)
        revenue = revenue_texts(mapped["revenue"])
        if revenue is None:
            return None
        event_ids = [e.id for e in events]
        columns: dict[str, Any] = dict(
            model=models,
            occurred_at=[e.time for e in events],
            customer_category=categories,
            input_tokens=counts[0],
            cached_input_tokens=counts[1],
            output_tokens=counts[2],
            requests=counts[3],
            revenue=revenue,
            currency=mapped.get("currency") or [None] * count,
            region=mapped.get("region") or [None] * count,
            customer_ref=[e.subject for e in events],
            now=now,
        )
        batch = valid_batch(event_id=event_ids, **columns)
        if batch is None and not event_ids_ok(event_ids):
            # Some id is no event_id: the per-record path stores it as ce-<SHA-256>.
            batch = valid_batch(event_id=[event_id_of(i) if i else i for i in event_ids], **columns)
        return batch

    def answer_valid(self, answer: dict[str, Any]) -> dict[str, Any]:
        """The ingest answer of a batch from `decode_valid` (one record per event, in order, so
        the indexes stand), with its errors under the events' fields (`Mapped.response`)."""
        sources = self.sources
        answer["results"] = [
            {**r, "errors": {sources.get(k, k): v for k, v in r["errors"].items()}}
            if r["errors"]
            else r
            for r in answer["results"]
        ]
        return answer

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
            record, problems = self._record(event, isinstance(event, msgspec.Struct))
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
        return mapped

    def _record(self, event: Any, typed: bool) -> tuple[dict[str, Any], dict[str, list[str]]]:
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
        for name, value in values:
            if value is None:
                continue
            # A number with a fraction elsewhere (1.5 tokens) goes on as a Decimal: the record
            # rule refuses it by name.
            if name == "revenue" and type(value) in (Decimal, int):
                value, problem = _revenue_text(Decimal(value))
                if problem:
                    problems[self.sources[name]] = [problem]
                    continue
            record[name] = value
        if "customer_category" not in record and self.default_category:
            record["customer_category"] = self.default_category
        return record, problems


def mapper_for(event_mapping: dict[str, str] | None, default_customer_category: str) -> EventMapper:
    """The `EventMapper` of a host's settings, built once per distinct settings in this process
    (building its four decoders takes ~0.2 ms, more than mapping one event)."""
    return _mapper(json.dumps(event_mapping or {}, sort_keys=True), default_customer_category or "")


@functools.lru_cache(maxsize=1024)
def _mapper(event_mapping: str, default_customer_category: str) -> EventMapper:
    return EventMapper(
        event_mapping=json.loads(event_mapping),
        default_customer_category=default_customer_category,
    )


def _column(getter: Any, datas: list[Any]) -> list[Any]:
    """One mapped field over a batch's `data` structs; None where an object on the way is null."""
    try:
        return list(map(getter, datas))
    except AttributeError:
        values = []
        for data in datas:
            try:
                values.append(getter(data))
            except AttributeError:
                values.append(None)
        return values


def _typed_decoders(
    paths: dict[str, tuple[str, ...]], types: dict[str, Any] | None = None
) -> tuple[msgspec.json.Decoder[Any], msgspec.json.Decoder[Any], dict[str, tuple[str, ...]]] | None:
    """Decoders of one event and of a batch into structs that hold only the mapped paths of
    `data`, and the paths in their attribute names (`f0`, `f1`, ...: a JSON name need not be a
    Python identifier). Without `types`, every value is typed Any (any JSON value, numbers with
    fractions as Decimal) and so are `id`, `time` and `subject`; with `types` (record field ->
    type), each value has the type of the record field it fills, `id` and `time` are required
    strings and `subject` a customer_ref (the fast path). None when a path is both a value and a
    parent of another (`data.geo` and `data.geo.country`), or, with `types`, fills two record
    fields of different types."""
    tree: dict[str, Any] = {}
    for name, path in paths.items():
        node = tree
        for key in path[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                return None
        leaf = node.get(path[-1])
        if isinstance(leaf, dict) or (leaf and types and types[leaf] != types[name]):
            return None
        node[path[-1]] = name
    counter = iter(range(1 << 16))
    attrs: dict[tuple[str, ...], tuple[str, ...]] = {}

    def build(node: dict[str, Any], prefix: tuple[str, ...], where: tuple[str, ...]) -> Any:
        fields: list[tuple[str, Any, Any]] = []
        rename: dict[str, str] = {}
        for key, child in node.items():
            attr = f"f{next(counter)}"
            rename[attr] = key
            attrs[(*prefix, key)] = (*where, attr)
            if isinstance(child, dict):
                kind = build(child, (*prefix, key), (*where, attr)) | None
            else:
                kind = types[child] if types else Any
            fields.append((attr, kind, _NULL if kind is msgspec.Raw else None))
        return msgspec.defstruct("Data", fields, rename=rename, gc=False)

    data = build(tree, (), ())
    attributes: list[Any] = (
        [("id", str), ("time", str), ("subject", CustomerRef | None, None)]
        if types
        else [("id", Any, None), ("time", Any, None), ("subject", Any, None)]
    )
    event = msgspec.defstruct("Event", [*attributes, ("data", data | None, None)], gc=False)
    hook = None if types else Decimal
    single = msgspec.json.Decoder(event, float_hook=hook)
    batch = msgspec.json.Decoder(
        Annotated[list[event], msgspec.Meta(max_length=MAX_RECORDS)],  # type: ignore[valid-type]
        float_hook=hook,
    )
    return single, batch, {name: attrs[path] for name, path in paths.items()}
