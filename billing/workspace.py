"""Reads behind the licensor's workspace in the admin (docs/workspace.md): the reviewer's home
page (what awaits review, what was earned month by month, by host and by model), a settlement as
a statement (each line against the previous period's matching line) and the usage behind a line.

Every function here runs a fixed number of queries whatever the number of settlements, lines,
hosts, models and months (tests/billing/test_workspace.py counts them at two sizes): sums are
made by PostgreSQL, never by walking rows. Amounts are `Decimal` in major units of their currency
and are shown rounded to its minor unit by `core.money.quantize`, with thousands separators.

The charts are SVG drawn here, on the server: nothing is fetched by the browser at run time.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.core.paginator import Page, Paginator
from django.db.models import Count, Max, QuerySet, Sum
from django.db.models.functions import TruncDay
from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe

from billing.models import Settlement, SettlementLine, SettlementStatus
from core.money import minor_unit_exponent, quantize
from core.periods import add_months, period_bounds, period_parse
from usage.models import UsageRecord

# Statuses of a settlement that no longer counts: voided by staff, or replaced by a revision
# (a status that exists once revisions land; a string, so this reads before and after).
NOT_CURRENT = (SettlementStatus.VOID.value, "superseded")
MONTHS = 12
RECORDS_PER_PAGE = 50


def money(amount: Decimal | None, currency: str) -> str:
    """`Decimal("1234567.5")`, USD -> "1,234,567.50": rounded once to the currency's minor unit
    (0 places for JPY, 3 for KWD) and grouped by thousands."""
    value = quantize(amount or Decimal(0), currency)
    return format(value, f",.{minor_unit_exponent(currency)}f")


def count(n: int | None) -> str:
    """An integer count (tokens, requests) with thousands separators: 12345678 -> "12,345,678"."""
    return format(n or 0, ",d")


def licensor_of(user: Any) -> int | None:
    """The licensor of a licensor's reviewer (a staff user with a `LicensorMembership`); None
    for an operator (a superuser, or staff without a membership)."""
    if user.is_superuser:
        return None
    membership = getattr(user, "licensor_membership", None)
    return None if membership is None else int(membership.licensor_id)


def has_field(name: str) -> bool:
    """Whether settlements carry `name` (review_due_at and revisions arrive with other work)."""
    return any(f.name == name for f in Settlement._meta.get_fields())


def current(qs: QuerySet[Settlement]) -> QuerySet[Settlement]:
    return qs.exclude(status__in=NOT_CURRENT)


def period_label(period: str) -> str:
    year, month = period_parse(period)
    return datetime(year, month, 1).strftime("%b %Y")  # noqa: DTZ001 - a label, no instant


# --- the home page ---------------------------------------------------------------------------


@dataclass
class Awaiting:
    settlement: Settlement
    total: str
    due_at: datetime | None
    days_left: int | None  # whole days until deemed acceptance; negative when overdue


@dataclass
class Chart:
    """One currency's months as stacked bars: `series` maps a label (a host, a model) to the
    amount of each month; `totals` holds each month's sum, the figure printed on the bar."""

    title: str
    currency: str
    months: list[str]
    series: dict[str, dict[str, Decimal]]
    totals: dict[str, Decimal] = field(default_factory=dict)

    def rows(self) -> list[tuple[str, str, str]]:
        """(period, label, total) for the table under the chart."""
        return [(m, period_label(m), money(self.totals.get(m), self.currency)) for m in self.months]

    def svg(self) -> SafeString:
        return stacked_bars_svg(self)


@dataclass
class Home:
    awaiting: list[Awaiting]
    months: list[str]
    by_host: list[Chart]  # one per currency
    by_model: list[Chart]
    earned: dict[str, str]  # currency -> the window's total, formatted

    @property
    def currencies(self) -> list[tuple[Chart, Chart]]:
        """(by host, by model) per currency, in the order of `by_host`."""
        return list(zip(self.by_host, self.by_model, strict=True))


def days_left(due: datetime | None, now: datetime) -> int | None:
    """Whole days from `now` until a draft is deemed accepted at `due`: 2 when 2 days and 23
    hours remain, 0 on its last day, negative once past; None without a due date."""
    if due is None:
        return None
    return (due - now).days


def window(licensor_id: int, today: datetime) -> list[str]:
    """The 12 months of the charts, ending with the latest period the licensor has a settlement
    for (the month just billed), or last month when there is none yet."""
    latest = current(Settlement.objects.filter(licensor_id=licensor_id)).aggregate(
        latest=Max("period")
    )["latest"]
    if latest is None:
        year, month = add_months(today.year, today.month, -1)
    else:
        year, month = period_parse(latest)
    out = []
    for back in range(MONTHS - 1, -1, -1):
        y, m = add_months(year, month, -back)
        out.append(f"{y:04d}-{m:02d}")
    return out


def reviewer_home(*, licensor_id: int, now: datetime) -> Home:
    """Five queries, whatever the number of settlements, hosts, models and months."""
    order = ["review_due_at", "period"] if has_field("review_due_at") else ["period"]
    drafts = (
        Settlement.objects.filter(licensor_id=licensor_id, status=SettlementStatus.DRAFT)
        .select_related("host")
        .order_by(*order, "host__slug", "currency")
    )
    awaiting = []
    for s in drafts:
        due = getattr(s, "review_due_at", None)
        awaiting.append(Awaiting(s, money(s.total, s.currency), due, days_left(due, now)))

    months = window(licensor_id, now)
    in_window = current(Settlement.objects.filter(licensor_id=licensor_id, period__in=months))
    by_host_rows = in_window.values("period", "currency", "host__name").annotate(
        amount=Sum("total")
    )
    by_model_rows = (
        SettlementLine.objects.filter(settlement__in=in_window)
        .values("settlement__period", "settlement__currency", "model", "kind")
        .annotate(amount=Sum("amount"))
    )
    host_series: dict[str, dict[str, dict[str, Decimal]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(Decimal))
    )
    for row in by_host_rows:
        host_series[row["currency"]][row["host__name"]][row["period"]] += row["amount"]
    model_series: dict[str, dict[str, dict[str, Decimal]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(Decimal))
    )
    for row in by_model_rows:
        # Minimum true-ups, cap credits and flat fees of a license carry no model: "license-wide".
        label = row["model"] or "license-wide"
        model_series[row["settlement__currency"]][label][row["settlement__period"]] += row["amount"]

    by_host, by_model, earned = [], [], {}
    for currency in sorted(host_series):
        totals: dict[str, Decimal] = defaultdict(Decimal)
        for per_month in host_series[currency].values():
            for month, amount in per_month.items():
                totals[month] += amount
        earned[currency] = money(sum(totals.values(), Decimal(0)), currency)
        by_host.append(
            Chart(
                f"Earned per month by host, {currency}",
                currency,
                months,
                _plain(host_series[currency]),
                dict(totals),
            )
        )
        by_model.append(
            Chart(
                f"Earned per month by model, {currency}",
                currency,
                months,
                _plain(model_series[currency]),
                dict(totals),
            )
        )
    return Home(awaiting, months, by_host, by_model, earned)


def _plain(series: dict[str, dict[str, Decimal]]) -> dict[str, dict[str, Decimal]]:
    return {label: dict(series[label]) for label in sorted(series)}


# Colours of the stacked series, in order (a colour-blind-safe palette, Okabe and Ito).
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#999999"]
WIDTH, HEIGHT, TOP, BOTTOM, LEFT = 760, 240, 24, 36, 8


def stacked_bars_svg(chart: Chart) -> SafeString:
    """Stacked bars, one per month, scaled to the largest month; a negative amount (a credit)
    draws nothing but still counts in the month's printed total. Pixel positions are whole
    numbers computed from Decimal amounts (no float anywhere)."""
    months = chart.months
    slot = (WIDTH - LEFT) // max(len(months), 1)
    bar = slot * 7 // 10
    heights: dict[str, Decimal] = {}
    for m in months:
        heights[m] = sum(
            (max(per.get(m, Decimal(0)), Decimal(0)) for per in chart.series.values()), Decimal(0)
        )
    tallest = max(heights.values(), default=Decimal(0))
    plot = HEIGHT - TOP - BOTTOM
    parts: list[str] = [
        format_html(
            '<svg class="tg-chart" role="img" aria-label="{}" viewBox="0 0 {} {}" '
            'xmlns="http://www.w3.org/2000/svg"><title>{}</title>',
            chart.title,
            WIDTH,
            HEIGHT + 18 * ((len(chart.series) + 2) // 3),
            chart.title,
        ),
        format_html(
            '<line x1="{}" y1="{}" x2="{}" y2="{}" class="tg-axis"/>',
            LEFT,
            HEIGHT - BOTTOM,
            WIDTH,
            HEIGHT - BOTTOM,
        ),
    ]
    colours = {label: PALETTE[i % len(PALETTE)] for i, label in enumerate(chart.series)}
    for i, m in enumerate(months):
        x = LEFT + i * slot + (slot - bar) // 2
        y = HEIGHT - BOTTOM
        for label, per in chart.series.items():
            amount = per.get(m, Decimal(0))
            if amount <= 0 or tallest <= 0:
                continue
            h = max(int(amount * plot / tallest), 1)
            y -= h
            parts.append(
                format_html(
                    '<rect x="{}" y="{}" width="{}" height="{}" fill="{}">'
                    "<title>{} {}: {} {}</title></rect>",
                    x,
                    y,
                    bar,
                    h,
                    colours[label],
                    label,
                    m,
                    money(amount, chart.currency),
                    chart.currency,
                )
            )
        total = chart.totals.get(m)
        if total:
            parts.append(
                format_html(
                    '<text x="{}" y="{}" class="tg-bar-total" data-period="{}" '
                    'data-amount="{}">{}</text>',
                    x + bar // 2,
                    y - 4,
                    m,
                    format(quantize(total, chart.currency), "f"),
                    _short(total),
                )
            )
        parts.append(
            format_html(
                '<text x="{}" y="{}" class="tg-month">{}</text>',
                x + bar // 2,
                HEIGHT - BOTTOM + 16,
                period_label(m),
            )
        )
    for i, label in enumerate(chart.series):
        lx, ly = LEFT + (i % 3) * (WIDTH // 3), HEIGHT + 4 + 18 * (i // 3)
        parts.append(
            format_html(
                '<rect x="{}" y="{}" width="12" height="12" fill="{}"/>'
                '<text x="{}" y="{}" class="tg-legend">{}</text>',
                lx,
                ly,
                colours[label],
                lx + 16,
                ly + 11,
                label,
            )
        )
    parts.append("</svg>")
    return mark_safe("".join(str(p) for p in parts))  # noqa: S308 - every part escaped above


def _short(amount: Decimal) -> str:
    """A bar's label: 1234567 -> "1.2M", 45200 -> "45.2k" (the table gives the exact figure)."""
    for scale, suffix in ((Decimal(10) ** 9, "B"), (Decimal(10) ** 6, "M"), (Decimal(1000), "k")):
        if abs(amount) >= scale:
            return f"{(amount / scale).quantize(Decimal('0.1'))}{suffix}"
    return str(amount.quantize(Decimal(1)))


# --- a settlement as a statement ---------------------------------------------------------------


@dataclass
class StatementLine:
    line: SettlementLine
    input_tokens: str
    cached_input_tokens: str
    output_tokens: str
    requests: str
    revenue: str
    amount: str
    previous: str | None  # the previous period's matching amount, formatted; None: no match
    change: str | None  # signed difference, formatted
    change_percent: str | None
    has_usage: bool  # a line whose records can be drilled into


@dataclass
class Statement:
    settlement: Settlement
    total: str
    record_count: str
    previous_period: str
    lines: list[StatementLine]
    revision: Any
    supersedes: Any
    superseded_by: Any
    review_due_at: datetime | None


def previous_of(period: str) -> str:
    year, month = add_months(*period_parse(period), -1)
    return f"{year:04d}-{month:02d}"


def _line_key(line: SettlementLine | dict[str, Any]) -> tuple[str, str, str]:
    if isinstance(line, dict):
        return (line["kind"], line["model"], line["customer_category"])
    return (line.kind, line.model, line.customer_category)


def settlement_statement(settlement: Settlement) -> Statement:
    """Two queries: the lines, and the previous period's current settlement of the same
    licensor, host and currency, summed per (kind, model, category): its "matching line" (a
    mid-month change of terms splits a month into one line per version; they are summed)."""
    currency = settlement.currency
    previous_period = previous_of(settlement.period)
    previous_rows = (
        SettlementLine.objects.filter(
            settlement__licensor_id=settlement.licensor_id,
            settlement__host_id=settlement.host_id,
            settlement__currency=currency,
            settlement__period=previous_period,
        )
        .exclude(settlement__status__in=NOT_CURRENT)
        .values("kind", "model", "customer_category")
        .annotate(amount=Sum("amount"))
    )
    previous = {_line_key(row): row["amount"] for row in previous_rows}
    lines = []
    for line in settlement.lines.all():
        before = previous.get(_line_key(line))
        change = None if before is None else line.amount - before
        percent = None
        if change is not None and before:
            percent = f"{(change * 100 / abs(before)).quantize(Decimal('0.1')):+}%"
        lines.append(
            StatementLine(
                line=line,
                input_tokens=count(line.input_tokens),
                cached_input_tokens=count(line.cached_input_tokens),
                output_tokens=count(line.output_tokens),
                requests=count(line.requests),
                revenue=money(line.revenue, currency),
                amount=money(line.amount, currency),
                previous=None if before is None else money(before, currency),
                change=None if change is None else _signed(money(change, currency)),
                change_percent=percent,
                has_usage=line.kind in ("usage", "adjustment") and bool(line.model),
            )
        )
    return Statement(
        settlement=settlement,
        total=money(settlement.total, currency),
        record_count=count(settlement.record_count),
        previous_period=previous_period,
        lines=lines,
        revision=getattr(settlement, "revision", None),
        supersedes=getattr(settlement, "supersedes_id", None),
        superseded_by=getattr(settlement, "superseded_by_pk", None),
        review_due_at=getattr(settlement, "review_due_at", None),
    )


def _signed(text: str) -> str:
    return text if text.startswith("-") else "+" + text


# --- the usage behind a line --------------------------------------------------------------------


@dataclass
class LineUsage:
    groups: list[dict[str, Any]]
    page: Page[Any]
    records: list[dict[str, Any]]


def line_records(settlement: Settlement, line: SettlementLine) -> QuerySet[UsageRecord]:
    """The records a line rated: the settlement's host and licensor, the line's license, model,
    category and month, in the settlement's currency. A `usage` line rated the records that were
    on time; an `adjustment` line the late ones (usage of a month already settled). Records of
    every version in force that month are included (docs/workspace.md)."""
    start, end = period_bounds(line.period)
    qs = UsageRecord.objects.filter(
        host_id=settlement.host_id,
        licensor_id=settlement.licensor_id,
        license_id=line.license_id,
        currency=settlement.currency,
        occurred_at__gte=start,
        occurred_at__lt=end,
        late=line.kind == "adjustment",
    )
    if line.model:
        qs = qs.filter(model__slug=line.model)
    if line.customer_category:
        qs = qs.filter(customer_category=line.customer_category)
    return qs


def line_usage(settlement: Settlement, line: SettlementLine, *, page: Any = 1) -> LineUsage:
    """The records grouped by day, region and category (one query), then a page of them (two:
    the count and the page). The host's `customer_ref` is not shown: it is the host's."""
    qs = line_records(settlement, line)
    currency = settlement.currency
    groups = []
    for row in (
        qs.annotate(day=TruncDay("occurred_at"))
        .values("day", "region", "customer_category")
        .annotate(
            records=Count("id"),
            input=Sum("input_tokens"),
            cached=Sum("cached_input_tokens"),
            output=Sum("output_tokens"),
            reqs=Sum("requests"),
            rev=Sum("revenue"),
        )
        .order_by("day", "region", "customer_category")
    ):
        groups.append(
            {
                "day": row["day"].date().isoformat(),
                "region": row["region"] or "—",
                "customer_category": row["customer_category"],
                "records": count(row["records"]),
                "input_tokens": count(row["input"]),
                "cached_input_tokens": count(row["cached"]),
                "output_tokens": count(row["output"]),
                "requests": count(row["reqs"]),
                "revenue": money(row["rev"], currency),
            }
        )
    paginator = Paginator(
        qs.order_by("occurred_at", "id").values(
            "event_id",
            "occurred_at",
            "customer_category",
            "region",
            "input_tokens",
            "cached_input_tokens",
            "output_tokens",
            "requests",
            "revenue",
            "corrects",
        ),
        RECORDS_PER_PAGE,
    )
    this_page = paginator.get_page(page)
    records = [
        {
            **r,
            "input_tokens": count(r["input_tokens"]),
            "cached_input_tokens": count(r["cached_input_tokens"]),
            "output_tokens": count(r["output_tokens"]),
            "requests": count(r["requests"]),
            "revenue": money(r["revenue"], currency),
        }
        for r in this_page.object_list
    ]
    return LineUsage(groups=groups, page=this_page, records=records)


def reviewer_models(settlements: QuerySet[Settlement]) -> list[str]:
    """The models on the lines of these (already scoped) settlements: a list filter's choices."""
    return list(
        SettlementLine.objects.filter(settlement__in=settlements)
        .exclude(model="")
        .values_list("model", flat=True)
        .distinct()
        .order_by("model")
    )
