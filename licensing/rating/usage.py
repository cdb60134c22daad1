"""Usage as the engine sees it: records, groups of records, thresholds and the year-to-date state.

Threshold charges (``above``) count the host's usage under the license in event-time order. The
billing run aggregates in SQL, so a month reaches the engine as groups, never as a list of every
record. Each group carries its *opening offset*: how much revenue and how many tokens the host had
under the license earlier in the month, before the group's first record. The grouping invariant:

    a group of more than one record lies wholly below or wholly above each threshold point
    (``threshold_points``); a record that crosses a point is a group of its own.

``position_class`` decides on which side a record lies; ``group_records`` is the reference grouping
that the SQL of the billing run reproduces with window functions.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal, NamedTuple

from core.periods import period_bounds, period_of
from core.vocabulary import CUSTOMER_CATEGORIES
from licensing.rating.rules import (
    Charge,
    GreaterOf,
    Metric,
    PerToken,
    RevenueShare,
    Window,
    decimal_to_json,
)
from licensing.rating.terms import Terms, _require_aware

__all__ = [
    "Threshold",
    "UsageGroup",
    "UsageRecord",
    "WindowState",
    "group_records",
    "position_class",
    "threshold_points",
]


def _require_count(value: object, name: str) -> None:
    if type(value) is int and value >= 0:  # the common case, first: a run checks ~10 a group
        return
    if isinstance(value, float):
        raise TypeError(f"{name} must be an int, not a float ({value!r})")
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, not {value}")


def _require_money(value: object, name: str) -> None:
    if type(value) is Decimal and value.is_finite() and value >= 0:  # the common case, first
        return
    if isinstance(value, float):
        raise TypeError(f"{name} must be a Decimal, not a float ({value!r})")
    if not isinstance(value, Decimal):
        raise TypeError(f"{name} must be a Decimal, not {type(value).__name__}")
    if not value.is_finite() or value < 0:
        raise ValueError(f"{name} must be a finite Decimal >= 0, not {value}")


def _require_usage_keys(model: object, category: object, region: object, label: object) -> None:
    if not isinstance(model, str) or not model:
        raise ValueError("model must be a non-empty string (the licensed model's slug)")
    if category not in CUSTOMER_CATEGORIES:
        allowed = ", ".join(CUSTOMER_CATEGORIES)
        raise ValueError(f"customer_category must be one of {allowed}, not {category!r}")
    if region is not None and not isinstance(region, str):
        raise TypeError("region must be a string or None")
    if label is not None and not isinstance(label, str):
        raise TypeError("terms_label must be a string or None")


@dataclass(frozen=True, slots=True)
class WindowState:
    """Calendar-year-to-date usage of one host under one license, before the month being rated.

    ``rate`` takes the state before the month and returns the state after it. A state of an
    earlier year counts as zero: yearly thresholds start again on 1 January (UTC).
    """

    year: int
    revenue: Decimal = Decimal(0)  # in the terms' currency
    tokens: int = 0  # input + cached input + output

    def __post_init__(self) -> None:
        _require_count(self.year, "year")
        _require_money(self.revenue, "revenue")
        _require_count(self.tokens, "tokens")

    def opening_for(self, period: str) -> WindowState:
        """The year-to-date that applies before ``period``."""
        year = period_bounds(period)[0].year
        if self.year > year:
            raise ValueError(f"window state of {self.year} cannot open {period}")
        return self if self.year == year else WindowState(year)

    def to_json(self) -> dict[str, Any]:
        return {"year": self.year, "revenue": decimal_to_json(self.revenue), "tokens": self.tokens}


@dataclass(frozen=True, slots=True)
class UsageRecord:
    """One usage record, net of its corrections, tagged with the terms label that rates it."""

    event_id: str
    occurred_at: datetime
    model: str  # the licensed model's slug (a derivative is rated under its parent's license)
    customer_category: str
    terms_label: str | None  # terms_in_force(...).label at occurred_at; None: nothing in force
    region: str | None = None
    input_tokens: int = 0
    cached_input_tokens: int = 0
    output_tokens: int = 0
    requests: int = 1
    revenue: Decimal = field(default_factory=lambda: Decimal(0))

    def __post_init__(self) -> None:
        if not isinstance(self.event_id, str) or not self.event_id:
            raise ValueError("event_id must be a non-empty string")
        _require_aware(self.occurred_at, "occurred_at")
        _require_usage_keys(self.model, self.customer_category, self.region, self.terms_label)
        for name in ("input_tokens", "cached_input_tokens", "output_tokens", "requests"):
            _require_count(getattr(self, name), name)
        _require_money(self.revenue, "revenue")

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.cached_input_tokens + self.output_tokens


@dataclass(frozen=True, slots=True)
class UsageGroup:
    """Sums of usage records that share model, category, region and terms label.

    ``revenue_before`` and ``tokens_before`` are the opening offset: the host's revenue and tokens
    under the license (all models, categories, regions and terms) earlier in this month, in
    ``(occurred_at, event_id)`` order, before the group's first record. The engine adds the
    year-to-date of ``WindowState`` for calendar-year thresholds. See the module docstring for the
    invariant a group of more than one record must keep.
    """

    model: str
    customer_category: str
    terms_label: str | None
    region: str | None = None
    input_tokens: int = 0
    cached_input_tokens: int = 0
    output_tokens: int = 0
    requests: int = 0
    revenue: Decimal = field(default_factory=lambda: Decimal(0))
    record_count: int = 1
    revenue_before: Decimal = field(default_factory=lambda: Decimal(0))
    tokens_before: int = 0

    def __post_init__(self) -> None:
        _require_usage_keys(self.model, self.customer_category, self.region, self.terms_label)
        for name in (
            "input_tokens",
            "cached_input_tokens",
            "output_tokens",
            "requests",
            "record_count",
            "tokens_before",
        ):
            _require_count(getattr(self, name), name)
        if self.record_count < 1:
            raise ValueError("record_count must be >= 1")
        _require_money(self.revenue, "revenue")
        _require_money(self.revenue_before, "revenue_before")

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.cached_input_tokens + self.output_tokens

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "customer_category": self.customer_category,
            "region": self.region,
            "terms_label": self.terms_label,
            "input_tokens": self.input_tokens,
            "cached_input_tokens": self.cached_input_tokens,
            "output_tokens": self.output_tokens,
            "requests": self.requests,
            "revenue": decimal_to_json(self.revenue),
            "record_count": self.record_count,
            "revenue_before": decimal_to_json(self.revenue_before),
            "tokens_before": self.tokens_before,
        }


class Threshold(NamedTuple):
    """A point where a marginal charge starts: ``amount`` of ``metric`` within ``window``."""

    metric: Metric
    window: Window
    amount: Decimal


def _charge_thresholds(charge: Charge) -> Iterable[Threshold]:
    if isinstance(charge, RevenueShare | PerToken) and charge.above is not None:
        yield Threshold(charge.above.metric, charge.above.window, charge.above.amount)
    elif isinstance(charge, GreaterOf):
        for part in charge.of:
            yield from _charge_thresholds(part)


def threshold_points(terms: Iterable[Terms]) -> frozenset[Threshold]:
    """Every threshold of these terms: where billing must split groups (see ``position_class``)."""
    return frozenset(
        point for t in terms for rule in t.rules for point in _charge_thresholds(rule.charge)
    )


Side = Literal["below", "crossing", "above"]


def position_class(before: Decimal | int, size: Decimal | int, threshold: Decimal) -> Side:
    """Where a record lies relative to a threshold point.

    ``before`` is the window's metric before the record (for ``calendar_year`` including the
    year-to-date), ``size`` the record's own metric. ``above``: every unit of it is beyond the
    threshold (``before >= threshold``); ``crossing``: it straddles it (``before < threshold <
    before + size``) and must be a group of its own; ``below``: nothing of it is beyond.
    """
    if before >= threshold:
        return "above"
    if before + size > threshold:
        return "crossing"
    return "below"


def _metric(metric: Metric, revenue: Decimal, tokens: int) -> Decimal | int:
    return revenue if metric == "revenue" else tokens


def group_records(
    records: Iterable[UsageRecord],
    *,
    period: str,
    window_state: WindowState,
    terms: Sequence[Terms],
    merge: bool = True,
) -> tuple[UsageGroup, ...]:
    """The reference grouping: a month of one host's records under one license into groups.

    Records are taken in ``(occurred_at, event_id)`` order. With ``merge=False`` every record is
    its own group (what the engine would see with no aggregation at all).
    """
    start, end = period_bounds(period)
    ordered = sorted(records, key=lambda r: (r.occurred_at, r.event_id))
    seen: set[str] = set()
    for record in ordered:
        if record.event_id in seen:
            raise ValueError(f"event_id {record.event_id!r} appears twice")
        seen.add(record.event_id)
        if not start <= record.occurred_at < end:
            raise ValueError(
                f"record {record.event_id!r} occurred in {period_of(record.occurred_at)}, "
                f"not {period}"
            )
    year = window_state.opening_for(period)
    points = sorted(threshold_points(terms))
    groups: dict[tuple[object, ...], UsageGroup] = {}
    month_revenue, month_tokens = Decimal(0), 0
    for record in ordered:
        sides = []
        for point in points:
            before = _metric(point.metric, month_revenue, month_tokens)
            if point.window == "calendar_year":
                before += _metric(point.metric, year.revenue, year.tokens)
            sides.append(
                position_class(
                    before, _metric(point.metric, record.revenue, record.tokens), point.amount
                )
            )
        key: tuple[object, ...] = (
            record.model,
            record.customer_category,
            record.region,
            record.terms_label,
            tuple(sides),
        )
        if not merge or "crossing" in sides:
            key = (*key, record.event_id)
        current = groups.get(key)
        if current is None:
            groups[key] = UsageGroup(
                model=record.model,
                customer_category=record.customer_category,
                terms_label=record.terms_label,
                region=record.region,
                input_tokens=record.input_tokens,
                cached_input_tokens=record.cached_input_tokens,
                output_tokens=record.output_tokens,
                requests=record.requests,
                revenue=record.revenue,
                record_count=1,
                revenue_before=month_revenue,
                tokens_before=month_tokens,
            )
        else:
            groups[key] = replace(
                current,
                input_tokens=current.input_tokens + record.input_tokens,
                cached_input_tokens=current.cached_input_tokens + record.cached_input_tokens,
                output_tokens=current.output_tokens + record.output_tokens,
                requests=current.requests + record.requests,
                revenue=current.revenue + record.revenue,
                record_count=current.record_count + 1,
            )
        month_revenue += record.revenue
        month_tokens += record.tokens
    return tuple(groups.values())
