"""Builders shared by the rating tests."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from licensing.rating import Terms, UsageRecord, parse_rules


def at(day: str) -> datetime:
    """"2026-10-03" or "2026-10-03T12:00" as an aware UTC datetime."""
    text = day if "T" in day else f"{day}T00:00"
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def terms(
    label: str,
    rules: list[dict[str, Any]],
    *,
    effective_from: str = "2026-01-01",
    kind: str = "version",
    currency: str = "USD",
    minimum: str | None = None,
    cap: str | None = None,
    attribution: str | None = None,
) -> Terms:
    return Terms(
        label=label,
        kind=kind,  # type: ignore[arg-type]
        effective_from=at(effective_from),
        currency=currency,
        rules=parse_rules(rules, "rules"),
        minimum_per_month=Decimal(minimum) if minimum is not None else None,
        cap_per_month=Decimal(cap) if cap is not None else None,
        attribution=attribution,
    )


def record(
    event_id: str,
    when: str,
    label: str | None,
    *,
    model: str = "minimax-m2.7",
    category: str = "commercial",
    region: str | None = None,
    revenue: str = "0",
    input_tokens: int = 0,
    cached_input_tokens: int = 0,
    output_tokens: int = 0,
    requests: int = 1,
) -> UsageRecord:
    return UsageRecord(
        event_id=event_id,
        occurred_at=at(when),
        model=model,
        customer_category=category,
        terms_label=label,
        region=region,
        input_tokens=input_tokens,
        cached_input_tokens=cached_input_tokens,
        output_tokens=output_tokens,
        requests=requests,
        revenue=Decimal(revenue),
    )


SHARE_12 = [
    {"match": {"customer_category": ["individual", "research", "nonprofit"]},
     "charge": {"type": "free"}},
    {"match": {"customer_category": ["commercial"]},
     "charge": {"type": "revenue_share", "percent": "12"}},
]
