"""`run_billing --verify`: re-derive every settled settlement of a period from the usage and the
locked terms it was computed from, and report what would differ. The billing counterpart of
ledger/verify.py: it reads, never writes.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import astuple, dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.db.models import Q

from billing import aggregation
from billing.aggregation import UsageFilter
from billing.models import SETTLED_STATUSES, Settlement
from billing.rerating import (
    Bundle,
    CatalogSnapshot,
    line_from_row,
    pair_period_rate,
    settled_month_rerate,
)
from licensing.rating import EDITION, EDITIONS, Edition, Line


@dataclass(frozen=True)
class VerifyProblem:
    settlement: Settlement
    message: str

    def __str__(self) -> str:
        s = self.settlement
        return (
            f"settlement {s.pk} ({s.licensor.slug}/{s.host.slug} {s.period} {s.currency}): "
            f"{self.message}"
        )


def _line_tuple(line: Line) -> tuple[object, ...]:
    """A line's fields in the engine's order (billing.rerating.LINE_FIELDS), comparable."""
    return astuple(line)


def settlements_verify(
    *, period: str, month_at_once: int | None = None
) -> tuple[int, list[VerifyProblem]]:
    """Re-rate every settled settlement of `period` from the usage it was computed from (records
    received by its `computed_at`, late ones excluded) and the locked terms; report any line or
    digest that would differ, and re-derive its adjustment lines of earlier months.
    `month_at_once`: from how many settlements sharing a `computed_at` their usage is
    aggregated once for the month (default `MONTH_AT_ONCE`).
    Returns (settlements checked, problems)."""
    catalog = CatalogSnapshot.load()
    problems: list[VerifyProblem] = []
    settled = list(
        Settlement.objects.filter(period=period, status__in=SETTLED_STATUSES)
        .select_related("host", "licensor")
        .prefetch_related("lines")
        .order_by("licensor__slug", "host__slug", "currency")
    )
    month_rows = _month_rows(
        period, settled, at_once=MONTH_AT_ONCE if month_at_once is None else month_at_once
    )
    for s in settled:
        if s.computed_at in month_rows:
            rows = month_rows[s.computed_at].get((s.host_id, s.licensor_id), [])
        else:
            rows = aggregation.aggregate_groups(
                period,
                UsageFilter(
                    host_id=s.host_id,
                    licensor_id=s.licensor_id,
                    include_late=False,
                    received_until=s.computed_at,
                ),
            )
        bundle = pair_period_rate(period, rows, catalog).get(s.currency, Bundle())
        expected = sorted((_line_tuple(line) for _, line, _ in bundle.lines), key=repr)
        stored = sorted(
            (_line_tuple(line_from_row(row)) for row in s.lines.all() if row.kind != "adjustment"),
            key=repr,
        )
        if expected != stored:
            # Written under edition 1 of the rules (docs/rating.md, "Editions")? Then it is
            # reproduced by that edition, digests and total included.
            old = pair_period_rate(period, rows, catalog, edition=1).get(s.currency, Bundle())
            old_expected = sorted((_line_tuple(line) for _, line, _ in old.lines), key=repr)
            if old_expected == stored:
                bundle, expected = old, old_expected
        if expected != stored:
            diff = [t for t in stored if t not in expected] + [
                t for t in expected if t not in stored
            ]
            problems.append(VerifyProblem(s, f"lines differ from a re-rating: {diff[:2]}"))
        usage_digest, terms_digest = bundle.digests()
        if usage_digest != s.usage_digest:
            problems.append(VerifyProblem(s, "usage_digest differs from a re-rating"))
        if terms_digest != s.terms_digest:
            problems.append(VerifyProblem(s, "terms_digest differs from a re-rating"))
        own_total = sum(
            (line.amount for line in s.lines.all() if line.kind != "adjustment"),
            Decimal(0),
        )
        expected_total = sum((line.amount for _, line, _ in bundle.lines), Decimal(0))
        if own_total != expected_total:
            problems.append(
                VerifyProblem(s, f"total of the month's lines {own_total} != {expected_total}")
            )
        problems += _adjustments_verify(s, catalog)
    return len(settled), problems


# From this many settlements computed at the same instant (a run's snapshot: every settlement of
# a run shares it), their usage is aggregated once for the whole month rather than once each. A
# pair's part of the month's aggregation is its own aggregation: every sum, window and
# year-to-date of the statement is per host and license (billing/aggregation.py).
MONTH_AT_ONCE = 20


def _month_rows(
    period: str, settled: list[Settlement], *, at_once: int
) -> dict[datetime, dict[tuple[int, int], list[dict[str, Any]]]]:
    """The month's groups per (host, licensor), for each `computed_at` that many settlements
    share, as each of them was computed (records received by then, late ones excluded)."""
    shared = Counter(s.computed_at for s in settled)
    out: dict[datetime, dict[tuple[int, int], list[dict[str, Any]]]] = {}
    for computed_at, count in shared.items():
        if count < at_once:
            continue
        by_pair: dict[tuple[int, int], list[dict[str, Any]]] = defaultdict(list)
        for row in aggregation.aggregate_groups(
            period, UsageFilter(include_late=False, received_until=computed_at)
        ):
            by_pair[(row["host_id"], row["licensor_id"])].append(row)
        out[computed_at] = by_pair
    return out


def _adjustments_verify(s: Settlement, catalog: CatalogSnapshot) -> list[VerifyProblem]:
    """Re-derive a settlement's adjustment lines as its run did: each earlier month it adjusts,
    re-rated with the usage received by `s.computed_at`, minus what other settlements computed
    before it had billed for that month. A settlement written under edition 1 of the rules
    (docs/rating.md, "Editions") verifies when its adjustments are those edition 1's code
    derived."""
    stored_rows = [row for row in s.lines.all() if row.kind == "adjustment"]
    if not stored_rows:
        return []
    stored = sorted((_line_tuple(line_from_row(row)) for row in stored_rows), key=repr)
    periods = sorted({row.period for row in stored_rows})

    def derived(edition: Edition) -> list[tuple[object, ...]]:
        lines: list[tuple[object, ...]] = []
        for period in periods:
            adjustments = settled_month_rerate(
                host_id=s.host_id,
                licensor_id=s.licensor_id,
                period=period,
                received_until=s.computed_at,
                # Billed before it: settlements computed earlier, never this one.
                not_billed=Q(settlement=s) | Q(settlement__computed_at__gte=s.computed_at),
                catalog=catalog,
                edition=edition,
            )
            lines += [_line_tuple(line) for _, line in adjustments.get(s.currency, [])]
        return sorted(lines, key=repr)

    expected = derived(EDITION)
    if expected == stored:
        return []
    # The earlier editions are derived only when the current one does not reproduce the lines.
    if any(derived(edition) == stored for edition in EDITIONS if edition != EDITION):
        return []
    diff = [t for t in stored if t not in expected] + [t for t in expected if t not in stored]
    return [VerifyProblem(s, f"adjustment lines differ from a re-rating: {diff[:2]}")]


__all__ = ["MONTH_AT_ONCE", "VerifyProblem", "settlements_verify"]
