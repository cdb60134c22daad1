"""The wire format of `POST /api/v1/usage`: the envelope and the per-record field rules.

Pure (no database, no clock of its own; one setting, the earliest month, read by
`earliest_accepted`): bytes in, plain records or per-field errors out. Two paths:
`usage.columns.decode_valid` takes a batch whose records are all valid (msgspec structs and
checks over whole columns), and declines anything else, which then goes through
`decode_envelope` + `validate_record` here (by hand, not through a DRF serializer, which costs
several times more per record), the reference for every answer. Figures: docs/performance.md,
"Ingestion".

Every per-record error message starts with a machine code, then ": " and a sentence:
`{"input_tokens": ["invalid: must be an integer from 0 to 1000000000000"]}`. The codes are
listed in `ERROR_CODES` and in docs/ingestion.md.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import msgspec

from core.money import is_valid_currency
from core.periods import period_bounds
from core.vocabulary import CUSTOMER_CATEGORIES
from licensing.rating import is_valid_region

MAX_RECORDS = 10_000
MAX_BODY_BYTES = 10 * 1024 * 1024  # 10 MiB, of the body as sent and of the body after gunzip
FUTURE_TOLERANCE = timedelta(minutes=5)
# Per-record maxima (docs/ingestion.md, "Per-record maxima"). Far above any real request (a
# million-token context is 10^6), far below what the columns hold, so that no record, and no
# small set of records, can overflow a sum in billing (docs/security.md, finding 1). A
# correction's deltas are bounded the same in absolute value.
TOKENS_MAX = 10**12  # tokens of one kind in one record
REQUESTS_MAX = 10**9  # requests in one record
REVENUE_MAX_PLACES = 6
REVENUE_LIMIT = Decimal(10) ** 12  # revenue < 10^12 in the record's currency, 6 places at most
# The largest net of an original and its corrections, field by field in COUNTERS + revenue order.
NET_MAXIMA = (TOKENS_MAX, TOKENS_MAX, TOKENS_MAX, REQUESTS_MAX, REVENUE_LIMIT - Decimal("0.000001"))
_COUNTER_MAX = {
    "input_tokens": TOKENS_MAX,
    "cached_input_tokens": TOKENS_MAX,
    "output_tokens": TOKENS_MAX,
    "requests": REQUESTS_MAX,
}

ERROR_CODES = {
    "required": "the field is missing",
    "invalid": "wrong type, format or range",
    "unknown_field": "the record has a field the contract does not define",
    "unknown_model": "no model has this slug or alias",
    "in_future": "occurred_at is more than 5 minutes ahead of the server's clock",
    "too_old": "occurred_at is before the earliest accepted month (TOLLGATE_EARLIEST_PERIOD)",
    "conflict": "this event_id was already stored with other content; the stored record stays",
    "currency_mismatch": "the currency differs from that of the terms that would rate the record",
    "correction_not_found": "corrects names no earlier record of this host",
    "correction_mismatch": "a correction must repeat its original's model, occurred_at, "
    "customer_category, currency and region",
    "negative_net": "the original plus its corrections would fall below 0 in this field",
}

FIELDS = frozenset(
    {
        "event_id",
        "model",
        "occurred_at",
        "customer_category",
        "input_tokens",
        "cached_input_tokens",
        "output_tokens",
        "requests",
        "revenue",
        "currency",
        "region",
        "customer_ref",
        "corrects",
    }
)
COUNTERS = ("input_tokens", "cached_input_tokens", "output_tokens", "requests")

_EVENT_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
# RFC 3339 date-time with a mandatory offset. datetime.fromisoformat alone would also take a bare
# date, a naive time or the basic format (20260101T000000Z).
RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:[Zz]|[+-]\d{2}:\d{2})"
)
_DECIMAL = re.compile(r"-?\d+(?:\.\d+)?")


# The earliest month usage may fall in when TOLLGATE_EARLIEST_PERIOD is not set: before it, a
# back-dated record would only create table partitions (docs/security.md, finding 2).
EARLIEST_PERIOD_DEFAULT = "2020-01"


def earliest_accepted() -> datetime:
    """The first instant (UTC) an `occurred_at` may have: the start of TOLLGATE_EARLIEST_PERIOD."""
    from django.conf import settings

    return period_bounds(getattr(settings, "TOLLGATE_EARLIEST_PERIOD", EARLIEST_PERIOD_DEFAULT))[0]


class EnvelopeError(ValueError):
    """The request as a whole is unusable (400): nothing of it is stored."""

    def __init__(self, message: str, fields: dict[str, list[str]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fields = fields or {}


_decoder = msgspec.json.Decoder()
TOO_DEEP = "is nested too deeply to be a usage record"


def decode_envelope(body: bytes, media_type: str) -> list[Any]:
    """The records of a body: `{"records": [...]}` for application/json, one JSON object per
    line for application/x-ndjson. msgspec keeps big integers exact (orjson turns them into
    floats), so `1e30` tokens are refused by the field rule, not silently rounded."""
    records: list[Any]  # each a raw record: any JSON value, checked by validate_record
    if media_type == "application/x-ndjson":
        lines = [line for line in body.split(b"\n") if line.strip()]
        try:
            # One decode of the joined lines is faster than a decode per line; the count check
            # catches a line holding two values ("{...},{...}").
            records = _decoder.decode(b"[" + b",".join(lines) + b"]")
            if len(records) != len(lines):
                raise msgspec.DecodeError("a line holds more than one JSON value")
        except (msgspec.DecodeError, RecursionError):
            for number, line in enumerate(lines, start=1):
                try:
                    _decoder.decode(line)
                except msgspec.DecodeError as exc:
                    raise EnvelopeError(f"line {number} is not one JSON value: {exc}") from None
                except RecursionError:
                    raise EnvelopeError(f"line {number} {TOO_DEEP}") from None
            raise EnvelopeError("a line holds more than one JSON value") from None
    else:
        try:
            envelope = _decoder.decode(body)
        except msgspec.DecodeError as exc:
            raise EnvelopeError(f"malformed JSON: {exc}") from None
        except RecursionError:
            # msgspec decodes recursively; a body nested thousands deep was a 500
            # (docs/security.md, finding 8). No record is nested more than 1 level.
            raise EnvelopeError(f"the body {TOO_DEEP}") from None
        if not isinstance(envelope, dict):
            raise EnvelopeError('the body must be a JSON object {"records": [...]}')
        extra = sorted(k for k in envelope if k != "records")
        if extra:
            raise EnvelopeError(
                "unknown keys in the envelope", {k: ["unknown_field: not allowed"] for k in extra}
            )
        if "records" not in envelope:
            raise EnvelopeError("records is required", {"records": ["required: a list"]})
        records = envelope["records"]
        if not isinstance(records, list):
            raise EnvelopeError("records must be a list", {"records": ["invalid: a list"]})
    if len(records) > MAX_RECORDS:
        raise EnvelopeError(
            f"at most {MAX_RECORDS:,} records per batch, got {len(records):,}",
            {"records": [f"invalid: at most {MAX_RECORDS} records"]},
        )
    return records


@dataclass(slots=True)
class Record:
    """One valid record, with defaults applied and values normalized.

    `model_id` is filled in by the service (the catalog lookup is not pure).
    """

    index: int
    event_id: str
    model: str
    occurred_at: datetime  # UTC, microseconds (PostgreSQL's precision)
    customer_category: str
    input_tokens: int
    cached_input_tokens: int
    output_tokens: int
    requests: int
    revenue: Decimal
    currency: str
    region: str  # "" when not given
    customer_ref: str  # "" when not given
    corrects: str  # "" when not a correction

    def content_hash(self, model_id: int) -> bytes:
        """16 bytes that tell a duplicate (same) from a conflict (different). Over the values as
        stored, after defaults, so `"requests": 1` and an omitted `requests` are the same record,
        and over the resolved model, so a slug and its alias are the same model."""
        text = content_hash_text(
            model_id,
            self.occurred_at.isoformat(),
            self.customer_category,
            self.input_tokens,
            self.cached_input_tokens,
            self.output_tokens,
            self.requests,
            format(self.revenue.normalize(), "f"),
            self.currency,
            self.region,
            self.customer_ref,
            self.corrects,
        )
        return hashlib.blake2b(text, digest_size=16).digest()


@dataclass(slots=True)
class Rejection:
    index: int
    event_id: str | None
    errors: dict[str, list[str]]

    def as_result(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "event_id": self.event_id,
            "status": "rejected",
            "errors": self.errors,
        }


def _counter(value: Any, *, signed: bool, high: int) -> str | None:
    """None when `value` is a valid count (at most `high`; a delta at most `high` in absolute
    value), else the error message."""
    low = -high if signed else 0
    if type(value) is not int or not low <= value <= high:
        return f"invalid: must be an integer from {low} to {high}"
    return None


def _revenue(value: Any, *, signed: bool) -> tuple[Decimal | None, str | None]:
    # A JSON number is taken only when integral (exact); a float never (it cannot hold 0.1).
    if type(value) is int:
        text = str(value)
    elif isinstance(value, str) and _DECIMAL.fullmatch(value):
        text = value
    else:
        return None, 'invalid: must be a decimal string such as "12.50"'
    amount = Decimal(text)
    exponent = amount.as_tuple().exponent
    if isinstance(exponent, int) and -exponent > REVENUE_MAX_PLACES:
        return None, f"invalid: at most {REVENUE_MAX_PLACES} decimal places"
    if not signed and amount < 0:
        return None, "invalid: must be ≥ 0"
    if abs(amount) >= REVENUE_LIMIT:
        bound = "in absolute value " if signed else ""
        return None, f"invalid: must be {bound}below {REVENUE_LIMIT}"
    return amount, None


def _text(value: Any, max_length: int) -> str | None:
    if not isinstance(value, str) or len(value) > max_length:
        return f"invalid: must be a string of at most {max_length} characters"
    if "\x00" in value:
        return "invalid: must not contain NUL characters"
    return None


def content_hash_text(
    model_id: int,
    occurred_text: str,
    customer_category: str,
    input_tokens: int,
    cached_input_tokens: int,
    output_tokens: int,
    requests: int,
    revenue: str,
    currency: str,
    region: str,
    customer_ref: str,
    corrects: str,
) -> bytes:
    """The bytes that `Record.content_hash` hashes; one definition for both paths."""
    return (
        f"{model_id}\x1f{occurred_text}\x1f{customer_category}\x1f{input_tokens}"
        f"\x1f{cached_input_tokens}\x1f{output_tokens}\x1f{requests}\x1f{revenue}"
        f"\x1f{currency}\x1f{region}\x1f{customer_ref}\x1f{corrects}"
    ).encode()


def validate_record(
    index: int,
    raw: Any,
    *,
    now: datetime,
    host_currency: str,
    earliest: datetime | None = None,
) -> Record | Rejection:
    """Apply every field rule (docs/ingestion.md, "The request") to one raw record; all problems
    at once. `earliest`: the first instant accepted, default `earliest_accepted()` (pass it in a
    loop)."""
    if not isinstance(raw, dict):
        return Rejection(index, None, {"record": ["invalid: must be a JSON object"]})
    errors: dict[str, list[str]] = {}
    get = raw.get

    event_id = get("event_id")
    event_ok = isinstance(event_id, str) and _EVENT_ID.fullmatch(event_id) is not None
    if event_id is None:
        errors["event_id"] = ["required: a string of 1-128 characters A-Z a-z 0-9 . _ : -"]
    elif not event_ok:
        errors["event_id"] = ["invalid: 1-128 characters of A-Z a-z 0-9 . _ : -"]

    corrects = get("corrects", "")
    if corrects is None:
        corrects = ""
    if corrects != "" and not (isinstance(corrects, str) and _EVENT_ID.fullmatch(corrects)):
        errors["corrects"] = ["invalid: the event_id of an earlier record of this host"]
        corrects = ""
    elif corrects and corrects == event_id:
        errors["corrects"] = ["invalid: a record cannot correct itself"]
    signed = bool(corrects)

    model = get("model")
    if model is None:
        errors["model"] = ["required: a model slug or alias"]
    elif (problem := _text(model, 200)) or not model:
        errors["model"] = [problem or "invalid: must not be empty"]

    occurred_at: datetime | None = None
    raw_at = get("occurred_at")
    if raw_at is None:
        errors["occurred_at"] = ["required: an RFC 3339 timestamp with an offset"]
    elif not isinstance(raw_at, str) or not RFC3339.fullmatch(raw_at):
        errors["occurred_at"] = [
            "invalid: must be an RFC 3339 timestamp with an offset, e.g. 2026-10-01T12:00:00Z"
        ]
    else:
        try:
            occurred_at = datetime.fromisoformat(raw_at.upper().replace(" ", "T")).astimezone(UTC)
        except (ValueError, OverflowError):
            errors["occurred_at"] = ["invalid: not a real date and time"]
        else:
            if occurred_at > now + FUTURE_TOLERANCE:
                errors["occurred_at"] = ["in_future: more than 5 minutes ahead of the server"]
                occurred_at = None
            elif occurred_at < (earliest := earliest or earliest_accepted()):
                errors["occurred_at"] = [
                    f"too_old: before {earliest:%Y-%m}, the earliest month accepted"
                ]
                occurred_at = None

    category = get("customer_category")
    if category is None:
        errors["customer_category"] = ["required: one of " + ", ".join(CUSTOMER_CATEGORIES)]
    elif not isinstance(category, str) or category not in CUSTOMER_CATEGORIES:
        errors["customer_category"] = ["invalid: must be one of " + ", ".join(CUSTOMER_CATEGORIES)]

    counts = []
    for name in COUNTERS:
        value = get(name)
        if value is None:
            value = 1 if name == "requests" and not signed else 0
        elif problem := _counter(value, signed=signed, high=_COUNTER_MAX[name]):
            errors[name] = [problem]
        counts.append(value)

    revenue: Decimal | None = Decimal(0)
    raw_revenue = get("revenue")
    if raw_revenue is not None:
        revenue, problem = _revenue(raw_revenue, signed=signed)
        if problem:
            errors["revenue"] = [problem]

    currency = get("currency")
    if currency is None:
        currency = host_currency
    elif not is_valid_currency(currency):
        errors["currency"] = ["invalid: must be an ISO 4217 code such as USD"]

    region = get("region")
    if region is None:
        region = ""
    elif not is_valid_region(region):
        errors["region"] = ["invalid: must be an ISO 3166-1 alpha-2 code such as US or GB"]

    customer_ref = get("customer_ref")
    if customer_ref is None:
        customer_ref = ""
    elif problem := _text(customer_ref, 128):
        errors["customer_ref"] = [problem]

    if len(raw) > len(FIELDS) or not FIELDS.issuperset(raw):
        for key in raw:
            if key not in FIELDS:
                errors[str(key)[:64]] = ["unknown_field: not a field of a usage record"]

    if errors:
        return Rejection(index, event_id if event_ok else None, errors)
    assert occurred_at is not None and revenue is not None  # noqa: S101 - ensured above
    return Record(
        index=index,
        event_id=event_id,  # type: ignore[arg-type]
        model=model,  # type: ignore[arg-type]
        occurred_at=occurred_at,
        customer_category=category,  # type: ignore[arg-type]
        input_tokens=counts[0],
        cached_input_tokens=counts[1],
        output_tokens=counts[2],
        requests=counts[3],
        revenue=revenue,
        currency=currency,  # type: ignore[arg-type]
        region=region,  # type: ignore[arg-type]
        customer_ref=customer_ref,  # type: ignore[arg-type]
        corrects=corrects,
    )
