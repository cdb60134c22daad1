"""The fast path's side of the wire format: a batch in which every record is valid, as columns.

Pure, like `usage.wire`. Most batches are entirely valid; for them, msgspec checks types, ranges,
lengths and unknown keys in C while decoding, and the few rules it cannot express run once per
batch over whole columns (`valid_batch`: one regex over the joined values, set lookups) instead of
once per record. Two decoders feed it: `decode_valid` (the bodies of `POST /api/v1/usage`) and
`usage.cloudevents.EventMapper.decode_valid` (CloudEvents, mapped column by column); both give a
`ValidBatch`, which `usage.services.usage_batch_ingest_valid` writes. Anything unusual — one bad
record, a correction, an explicit null, an integral JSON number for revenue, a NUL escape, a
timestamp with more than 6 fractional digits or another spelling than "T" and "Z"/"±hh:mm" —
makes the decoder return None and the batch goes through `wire.decode_envelope` +
`wire.validate_record`, which builds the per-field errors. So every error response is the slow
path's, byte for byte, and the fast path only has to be *stricter* than the slow one, never
looser; tests/usage/test_fast_path.py and tests/usage/test_events_fast_path.py hold them equal on
tricky inputs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Literal, cast

import msgspec

from core.money import is_valid_currency
from core.vocabulary import CustomerCategory
from licensing.rating import is_valid_region
from usage.wire import FUTURE_TOLERANCE, MAX_RECORDS, REQUESTS_MAX, TOKENS_MAX, earliest_accepted

Tokens = Annotated[int, msgspec.Meta(ge=0, le=TOKENS_MAX)]
Requests = Annotated[int, msgspec.Meta(ge=0, le=REQUESTS_MAX)]
Model = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
CustomerRef = Annotated[str, msgspec.Meta(max_length=128)]
_Category = CustomerCategory


class _Valid(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """One record as the fast path accepts it. Field defaults are the slow path's defaults for an
    original; `None` is "absent or null" (the slow path treats both alike)."""

    event_id: str  # the charset and length: one regex over the column (valid_batch)
    model: Model
    occurred_at: str  # RFC 3339: one regex over the column, then msgspec parses the column
    customer_category: _Category
    input_tokens: Tokens = 0
    cached_input_tokens: Tokens = 0
    output_tokens: Tokens = 0
    requests: Requests = 1
    revenue: str = "0"  # a decimal string: one regex over the column
    currency: str | None = None  # ISO 4217: a set lookup per distinct value
    region: str | None = None  # ISO 3166-1: a set lookup per distinct value
    customer_ref: CustomerRef | None = None
    corrects: Literal[""] | None = None  # a correction (signed deltas) takes the slow path


class _ValidEnvelope(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    records: Annotated[list[_Valid], msgspec.Meta(max_length=MAX_RECORDS)]


_envelope_decoder = msgspec.json.Decoder(_ValidEnvelope)
_lines_decoder = msgspec.json.Decoder(Annotated[list[_Valid], msgspec.Meta(max_length=MAX_RECORDS)])
_datetimes_decoder = msgspec.json.Decoder(list[Annotated[datetime, msgspec.Meta(tz=True)]])
_encoder = msgspec.json.Encoder()

# The rules msgspec's types cannot express, per value; stricter than the slow path's, as they
# must be:
# - event_id: exactly the slow path's rule;
# - occurred_at: only "T" and upper-case "Z", at most 6 fractional digits (msgspec rounds a 7th,
#   datetime.fromisoformat truncates it: the stored value and the hash would differ by path);
# - revenue: ≥ 0, no leading zeros, at most 12 integer digits (< REVENUE_LIMIT = 10¹²), 6 places.
# These are the reference: the column checks below (`event_ids_ok`, `timestamps_ok`,
# `revenues_ok`) say the same of a whole column, and tests/usage/test_column_checks.py holds
# them equal.
EVENT_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
TIMESTAMP = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,6})?(?:Z|[+-][0-9]{2}:[0-9]{2})"
)
REVENUE = re.compile(r"(?:0|[1-9][0-9]{0,11})(?:\.[0-9]{1,6})?")

# The column checks run in C over the column's bytes, joined by "\n", instead of a regex per
# value or one over the joined column (Python's regex engine spent ~2.5 µs a record on the three,
# a fifth of a gunicorn worker's time: docs/performance.md, "Ingestion"). Every rule above is
# ASCII only, so a column that is not ASCII fails whole. An event_id column passes when deleting
# the allowed bytes leaves only the separators, and the lengths are in bounds. A timestamp or a
# revenue passes by its shape, the value with every digit written 9: a batch has a handful of
# distinct shapes (the fraction's length, the offset's sign), each checked once.
_EVENT_ID_BYTES = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:-"
_DIGITS_AS_9 = bytes.maketrans(b"0123456789", b"9999999999")
_TIMESTAMP_SHAPE = re.compile(rb"9999-99-99T99:99:99(?:\.9{1,6})?(?:Z|[+-]99:99)")
_REVENUE_SHAPE = re.compile(rb"9{1,12}(?:\.9{1,6})?")
_LEADING_ZERO = re.compile(rb"\n0[0-9]")


@dataclass(slots=True)
class ValidBatch:
    """A batch in which every record passed every field rule, one list per field, in order.

    `revenue` holds decimal strings that passed `REVENUE` (as sent: `normalized_revenue` gives
    the hashed and stored form); `currency` and `region` None where the record has none (the
    host's currency, no region). `occurred_at` holds UTC datetimes; `occurred_text` their
    `isoformat()` (what the content hash and the COPY take: PostgreSQL parses the text faster
    than psycopg formats a datetime)."""

    event_id: list[str]
    model: list[str]
    customer_category: list[str]
    input_tokens: list[int]
    cached_input_tokens: list[int]
    output_tokens: list[int]
    requests: list[int]
    revenue: list[str]
    currency: list[str | None]
    region: list[str | None]
    customer_ref: list[str | None]
    occurred_at: list[datetime]
    occurred_text: list[str]

    def __len__(self) -> int:
        return len(self.event_id)


def _ascii_column(values: list[str]) -> bytes | None:
    """The values joined by "\n", as bytes; None if some value is not ASCII."""
    joined = "\n".join(values)
    return joined.encode() if joined.isascii() else None


def _shapes_ok(column: bytes | None, count: int, shape: re.Pattern[bytes]) -> bool:
    """Whether the `count` values joined in `column` (no value holding a "\n") all have a shape
    that `shape` matches."""
    if column is None:
        return False
    shapes = column.translate(_DIGITS_AS_9).split(b"\n")
    return len(shapes) == count and all(map(shape.fullmatch, set(shapes)))


def event_ids_ok(values: list[str]) -> bool:
    """Whether every value is an event_id (`EVENT_ID`: 1-128 of A-Z a-z 0-9 . _ : -)."""
    column = _ascii_column(values)
    return (
        column is not None
        # only the count - 1 separators are left: no other byte, and no value holds a "\n"
        and len(column.translate(None, _EVENT_ID_BYTES)) == len(values) - 1
        and min(map(len, values)) >= 1
        and max(map(len, values)) <= 128
    )


def timestamps_ok(values: list[str]) -> bool:
    """Whether every value is a timestamp as the fast path takes it (`TIMESTAMP`)."""
    return _shapes_ok(_ascii_column(values), len(values), _TIMESTAMP_SHAPE)


def revenues_ok(values: list[str]) -> bool:
    """Whether every value is a revenue as the fast path takes it (`REVENUE`)."""
    column = _ascii_column(values)
    if not _shapes_ok(column, len(values), _REVENUE_SHAPE):
        return False
    # No leading zero: no value starts with 0 and a digit.
    return _LEADING_ZERO.search(b"\n" + cast(bytes, column)) is None


def valid_batch(
    *,
    event_id: list[str],
    model: list[str],
    occurred_at: list[str],
    customer_category: list[str],
    input_tokens: list[int],
    cached_input_tokens: list[int],
    output_tokens: list[int],
    requests: list[int],
    revenue: list[str],
    currency: list[str | None],
    region: list[str | None],
    customer_ref: list[str | None],
    now: datetime,
    earliest: datetime | None = None,
) -> ValidBatch | None:
    """The batch as a `ValidBatch` when the rules msgspec's types do not express hold for every
    value (event_id, occurred_at and its bounds, revenue, currency, region), else None. The
    columns' types, ranges and lengths must be checked already (by a msgspec decoder: `Tokens`,
    `Requests`, `Model`, `CustomerRef`, `CustomerCategory`), and no string may hold a NUL."""
    if not event_id:
        return None
    if not (
        event_ids_ok(event_id)
        and timestamps_ok(occurred_at)
        and revenues_ok(revenue)
        and all(map(is_valid_currency, set(currency) - {None}))
        and all(map(is_valid_region, set(region) - {None}))
    ):
        return None
    joined = '","'.join(occurred_at)
    try:
        # One decode for the whole column: the strings passed TIMESTAMP, so none needs escaping.
        at = _datetimes_decoder.decode(('["' + joined + '"]').encode())
        # An offset other than Z or +00:00 (each passed TIMESTAMP: no other "Z" or "+" in it)?
        if joined.count("Z") + joined.count("+00:00") != len(at):
            at = [d.astimezone(UTC) for d in at]
    except (msgspec.DecodeError, ValueError, OverflowError):
        return None  # a 30 February, a 24:00, a +14:60, beyond year 1..9999 in UTC
    if max(at) > now + FUTURE_TOLERANCE or min(at) < (earliest or earliest_accepted()):
        return None
    # msgspec writes an aware UTC datetime as datetime.isoformat() does (microseconds as 6 digits,
    # omitted when 0), but with "Z" for "+00:00".
    text = _encoder.encode(at).decode()[2:-2].replace("Z", "+00:00").split('","')
    return ValidBatch(
        event_id=event_id,
        model=model,
        customer_category=customer_category,
        input_tokens=input_tokens,
        cached_input_tokens=cached_input_tokens,
        output_tokens=output_tokens,
        requests=requests,
        revenue=revenue,
        currency=currency,
        region=region,
        customer_ref=customer_ref,
        occurred_at=at,
        occurred_text=text,
    )


def decode_valid(
    body: bytes, media_type: str, *, now: datetime, earliest: datetime | None = None
) -> ValidBatch | None:
    """The body of `POST /api/v1/usage` if it is entirely valid under the field rules (catalog
    checks are the service's), else None: then use `wire.decode_envelope` and
    `wire.validate_record`. `earliest`: the first instant accepted, default
    `earliest_accepted()`."""
    if b"\\u0000" in body:  # a NUL in some string (raw control bytes are malformed JSON)
        return None
    try:
        if media_type == "application/x-ndjson":
            lines = [line for line in body.split(b"\n") if line.strip()]
            records = _lines_decoder.decode(b"[" + b",".join(lines) + b"]")
            if len(records) != len(lines):
                return None  # a line with two values: the slow path says which
        else:
            records = _envelope_decoder.decode(body).records
    # ValueError: UnicodeDecodeError; RecursionError: nested too deeply (the slow path says so)
    except (msgspec.DecodeError, ValueError, RecursionError):
        return None
    return valid_batch(
        event_id=[r.event_id for r in records],
        model=[r.model for r in records],
        occurred_at=[r.occurred_at for r in records],
        customer_category=[r.customer_category for r in records],
        input_tokens=[r.input_tokens for r in records],
        cached_input_tokens=[r.cached_input_tokens for r in records],
        output_tokens=[r.output_tokens for r in records],
        requests=[r.requests for r in records],
        revenue=[r.revenue for r in records],
        currency=[r.currency for r in records],
        region=[r.region for r in records],
        customer_ref=[r.customer_ref for r in records],
        now=now,
        earliest=earliest,
    )


def normalized_revenue(text: str) -> str:
    """`format(Decimal(text).normalize(), "f")` for a string that passed REVENUE (no sign, no
    leading zeros, no exponent): trailing zeros of the fraction and a bare point go."""
    return text.rstrip("0").rstrip(".") if "." in text else text
