"""What a host's month comes to so far: the draft settlements a billing run would write now,
computed by the same aggregation and rating code, without writing anything.

`GET /api/v1/usage/summary?period=` shows it as the estimated charge. It rates the period's own
usage as it stands (late records included); adjustments of earlier settled months are not part
of it: they appear on the next settlement.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from billing.aggregation import UsageFilter, aggregate_groups
from billing.rerating import CatalogSnapshot, pair_period_rate
from licensing.models import Host, Licensor
from usage.selectors import usage_totals


@dataclass(frozen=True)
class Estimate:
    """One (licensor, currency) draft as it would be now."""

    licensor: str
    currency: str
    total: Decimal  # major units, on the currency's minor unit: the sum of the rounded lines
    # (model, customer category) -> the usage lines' amounts, rounded
    by_model_category: dict[tuple[str, str], Decimal] = field(default_factory=dict)


def settlement_estimates(*, host: Host, period: str) -> list[Estimate]:
    rows = aggregate_groups(period, UsageFilter(host_id=host.pk))
    if not rows:
        return []
    catalog = CatalogSnapshot.load()
    by_licensor: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_licensor[row["licensor_id"]].append(row)
    slugs = dict(Licensor.objects.filter(pk__in=by_licensor).values_list("pk", "slug"))
    estimates = []
    for licensor_id, licensor_rows in sorted(by_licensor.items(), key=lambda i: slugs[i[0]]):
        for currency, bundle in sorted(pair_period_rate(period, licensor_rows, catalog).items()):
            per_line: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
            total = Decimal(0)
            for _, line, _ in bundle.lines:
                total += line.amount
                if line.kind == "usage":
                    per_line[(line.model, line.customer_category)] += line.amount
            estimates.append(Estimate(slugs[licensor_id], currency, total, dict(per_line)))
    return estimates


def usage_summary_estimate(*, host: Host, period: str) -> dict[str, Any]:
    """Totals so far for the month, each with its estimated charge, and the estimate per
    licensor and currency (minimums and caps included): what a billing run would write now,
    computed by billing's own aggregation and rating."""
    totals = usage_totals(host=host, period=period)
    estimates = settlement_estimates(host=host, period=period)
    by_line: dict[tuple[str, str, str], Decimal] = {}
    for estimate in estimates:
        for (model, category), amount in estimate.by_model_category.items():
            by_line[(model, category, estimate.currency)] = amount
    for row in totals:
        estimated = by_line.get((row["model"], row["customer_category"], row["currency"]))
        row["estimated_charge"] = estimated
    return {"period": period, "totals": totals, "estimated_charge": estimates}
