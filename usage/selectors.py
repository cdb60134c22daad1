"""Reads of usage. Every read is filtered by the calling host: another host's records are never
selected, so they are absent from lists (and a detail would be a 404)."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.db.models import Count, Q, Sum

from core.periods import month_bounds, period_parse
from licensing.models import Host, LicensedModel
from licensing.selectors import model_resolve
from usage.models import PeriodComplete, PeriodOpen, UsageRecord
from usage.wire import RFC3339

PAGE_SIZE = 100
_FIELDS = (
    "id",
    "event_id",
    "model_id",
    "occurred_at",
    "received_at",
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
    "late",
)


class QueryError(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass
class UsagePage:
    rows: list[dict[str, Any]]  # the record's columns and its model's slug (`model`)
    next_cursor: str | None


def _timestamp(value: str, field: str) -> datetime:
    # An unencoded "+01:00" in a query string arrives as " 01:00".
    if len(value) > 6 and value[-6] == " ":
        value = value[:-6] + "+" + value[-5:]
    parsed = None
    if RFC3339.fullmatch(value):
        try:
            # In UTC: PostgreSQL refuses offsets beyond ±15:59 that Python accepts.
            parsed = datetime.fromisoformat(value.upper().replace(" ", "T")).astimezone(UTC)
        except (ValueError, OverflowError):
            parsed = None
    if parsed is None:
        raise QueryError(field, f"{field}: must be an RFC 3339 timestamp with an offset")
    return parsed


def _encode_cursor(occurred_at: datetime, pk: int) -> str:
    return base64.urlsafe_b64encode(f"{occurred_at.isoformat()}|{pk}".encode()).decode()


def _decode_cursor(cursor: str) -> tuple[datetime, int]:
    try:
        text = base64.urlsafe_b64decode(cursor.encode("ascii")).decode()
        at, _, pk = text.partition("|")
        parsed = datetime.fromisoformat(at)
        if parsed.tzinfo is None:
            raise ValueError(at)
        number = int(pk)
        if not 0 < number < 2**63:
            raise ValueError(pk)
        return parsed.astimezone(UTC), number
    except (ValueError, UnicodeError, binascii.Error):
        raise QueryError("cursor", "cursor: not a cursor this API gave out") from None


def _model_slugs(ids: set[int]) -> dict[int, str]:
    return dict(LicensedModel.objects.filter(id__in=ids).values_list("id", "slug"))


def usage_page(
    *,
    host: Host,
    model: str | None = None,
    start: str | None = None,
    end: str | None = None,
    cursor: str | None = None,
    size: int = PAGE_SIZE,
) -> UsagePage:
    """One page of the host's records in (occurred_at, id) order: keyset pagination, so a page
    costs the same at the millionth record as at the first."""
    for name, value in (("model", model), ("from", start), ("to", end), ("cursor", cursor)):
        if value and "\x00" in value:
            raise QueryError(name, f"{name}: must not contain NUL characters")
    records = UsageRecord.objects.filter(host=host)
    if model:
        resolved = model_resolve(model)
        if resolved is None:
            return UsagePage(rows=[], next_cursor=None)
        records = records.filter(model_id=resolved.pk)
    if start:
        records = records.filter(occurred_at__gte=_timestamp(start, "from"))
    if end:
        records = records.filter(occurred_at__lt=_timestamp(end, "to"))
    if cursor:
        at, pk = _decode_cursor(cursor)
        records = records.filter(Q(occurred_at__gt=at) | Q(occurred_at=at, id__gt=pk))
    rows = list(records.order_by("occurred_at", "id").values(*_FIELDS)[: size + 1])
    more = len(rows) > size
    rows = rows[:size]
    slugs = _model_slugs({r["model_id"] for r in rows})
    for r in rows:
        r["model"] = slugs.get(r["model_id"], str(r["model_id"]))
    next_cursor = _encode_cursor(rows[-1]["occurred_at"], rows[-1]["id"]) if more else None
    return UsagePage(rows=rows, next_cursor=next_cursor)


def _period_query(period: str | None) -> tuple[int, int]:
    try:
        return period_parse(period)
    except ValueError:
        raise QueryError("period", "period: required, as YYYY-MM") from None


def usage_totals(*, host: Host, period: str) -> list[dict[str, Any]]:
    """The host's totals of one month (UTC, by occurred_at) per model, customer category and
    currency, corrections included (their deltas are summed in). Aggregated in PostgreSQL over
    the month's partition: Python sees groups, never a month of rows (docs/performance.md)."""
    year, month = _period_query(period)
    start, end = month_bounds(year, month)
    groups = list(
        UsageRecord.objects.filter(host=host, occurred_at__gte=start, occurred_at__lt=end)
        .values("model_id", "customer_category", "currency")
        .annotate(
            records=Count("id", filter=Q(corrects="")),
            input_tokens_sum=Sum("input_tokens"),
            cached_input_tokens_sum=Sum("cached_input_tokens"),
            output_tokens_sum=Sum("output_tokens"),
            requests_sum=Sum("requests"),
            revenue_sum=Sum("revenue"),
            late_records=Count("id", filter=Q(late=True)),
        )
        .order_by("model_id", "customer_category", "currency")
    )
    slugs = _model_slugs({g["model_id"] for g in groups})
    return [
        {
            "model": slugs.get(g["model_id"], str(g["model_id"])),
            "customer_category": g["customer_category"],
            "currency": g["currency"],
            "records": g["records"],
            "input_tokens": g["input_tokens_sum"],
            "cached_input_tokens": g["cached_input_tokens_sum"],
            "output_tokens": g["output_tokens_sum"],
            "requests": g["requests_sum"],
            "revenue": g["revenue_sum"],
            "late_records": g["late_records"],
        }
        for g in sorted(
            groups, key=lambda g: (slugs.get(g["model_id"], ""), g["customer_category"])
        )
    ]


def period_open_pairs(*, period: str) -> set[tuple[int, int]] | None:
    """The (host_id, licensor_id) pairs still open after `period`'s run completed (they had
    usage in it), or None when no run of the month has completed yet: every pair is open."""
    if not PeriodComplete.objects.filter(period=period).exists():
        return None
    return set(PeriodOpen.objects.filter(period=period).values_list("host_id", "licensor_id"))


def periods_closed_by_completion(*, host_id: int, licensor_id: int, periods: set[str]) -> set[str]:
    """Those of `periods` that the pair had no usage in when the month's run completed: settled
    at that completion (docs/billing.md, "Late usage of a pair without a settlement")."""
    if not periods:
        return set()
    complete = set(
        PeriodComplete.objects.filter(period__in=periods).values_list("period", flat=True)
    )
    opened = set(
        PeriodOpen.objects.filter(
            host_id=host_id, licensor_id=licensor_id, period__in=complete
        ).values_list("period", flat=True)
    )
    return complete - opened
