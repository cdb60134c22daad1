"""The one adapter between billing's rows and the pure rating engine (`licensing.rating`).

Everything that rates usage in billing goes through here: the run (billing/runs.py), the
adjustments of settled months, `run_billing --verify` (billing/verify.py) and the usage summary's
estimate (billing/estimates.py). So does every conversion between an engine `Line` and a stored
`SettlementLine`: both carry the fields of the contract's line JSON, named alike, listed once
(`LINE_FIELDS`).

    aggregated rows (billing/aggregation.py) --usage_group_from_row--> UsageGroup
    UsageGroup + terms (CatalogSnapshot) --license_month_rate--> RatingResult (engine lines)
    engine Line <--line_from_row / line_to_row--> SettlementLine
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from operator import attrgetter
from typing import Any

from django.db.models import Q

from billing import aggregation
from billing.aggregation import UsageFilter, terms_from_row
from billing.models import PendingRerate, SettlementLine, SettlementStatus
from core.periods import period_bounds
from licensing.models import Agreement, License, LicenseVersion
from licensing.rating import (
    EDITION,
    Billed,
    Edition,
    Line,
    RatingResult,
    UsageGroup,
    WindowState,
    rate,
    rerate_settled,
)
from licensing.rating.terms import Terms

# The fields an engine line and a settlement line share (the contract's line JSON): the engine's
# dataclass is their one definition.
LINE_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Line))


def line_from_row(row: SettlementLine) -> Line:
    """A stored line as the engine's line (to re-rate against it, or compare with a re-rating)."""
    return Line(**{name: getattr(row, name) for name in LINE_FIELDS})


def line_to_row(line: Line, **columns: Any) -> SettlementLine:
    """An engine line as an unsaved settlement line; `columns` are the rest (settlement,
    position, license_id, flags)."""
    return SettlementLine(**{name: getattr(line, name) for name in LINE_FIELDS}, **columns)


_line_values = attrgetter(*LINE_FIELDS)


def line_values(line: Line) -> tuple[Any, ...]:
    """An engine line's values for the settlement line's `LINE_FIELDS` columns, in that order:
    what a run writes with COPY (billing/bulk.py `values_copy`) without building a model."""
    return tuple(_line_values(line))


def _digest(value: object) -> str:
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


@dataclass
class Bundle:
    """One currency's part of a pair's month while it is assembled."""

    lines: list[tuple[int, Line, list[str]]] = field(default_factory=list)  # license, line, flags
    usage_digests: dict[str, str] = field(default_factory=dict)  # license slug -> digest
    terms_digests: dict[str, str] = field(default_factory=dict)
    flags: list[dict[str, Any]] = field(default_factory=list)
    record_count: int = 0
    locked_versions: set[int] = field(default_factory=set)
    locked_agreements: set[int] = field(default_factory=set)

    def digests(self) -> tuple[str, str]:
        """One license: the engine's digests as they are; several (or none, a settlement of
        adjustments only): a digest of theirs by license slug."""
        if len(self.usage_digests) == 1:
            return next(iter(self.usage_digests.values())), next(iter(self.terms_digests.values()))
        return _digest(self.usage_digests), _digest(self.terms_digests)


def usage_group_from_row(row: dict[str, Any]) -> UsageGroup:
    """One aggregated row (`aggregation.COLUMNS`) as the engine's usage group."""
    return UsageGroup(
        model=row["model_slug"],
        customer_category=row["customer_category"],
        terms_label=row["terms_label"],
        region=row["region"] or None,
        input_tokens=int(row["input_tokens"]),
        cached_input_tokens=int(row["cached_input_tokens"]),
        output_tokens=int(row["output_tokens"]),
        requests=int(row["requests"]),
        revenue=Decimal(row["revenue"]),
        # A group made only of corrections whose original was received after the snapshot.
        record_count=max(int(row["record_count"]), 1),
        revenue_before=Decimal(row["revenue_before"]),
        tokens_before=int(row["tokens_before"]),
    )


@dataclass
class CatalogSnapshot:
    """The catalog and the pending re-ratings as one run sees them, read once per run and process
    instead of once per pair (a run has hundreds of pairs; the catalog has tens of terms).

    A catalog change made while a run is going is seen by the next run; terms that have rated
    usage are locked anyway, so only terms not used yet could change meanwhile."""

    license_slugs: dict[int, str]
    versions: dict[int, list[tuple[int, Terms]]]  # license id -> (row id, terms)
    agreements: dict[tuple[int, int], list[tuple[int, Terms]]]  # (host, license) -> ...
    locked: set[tuple[str, int]]  # ("version" | "agreement", row id) already locked
    rerate: dict[tuple[int, int], set[str]] | None = None  # (host, licensor) -> settled months

    @classmethod
    def load(cls) -> CatalogSnapshot:
        versions: dict[int, list[tuple[int, Terms]]] = defaultdict(list)
        agreements: dict[tuple[int, int], list[tuple[int, Terms]]] = defaultdict(list)
        locked: set[tuple[str, int]] = set()
        for v in LicenseVersion.objects.all():
            versions[v.license_id].append((v.pk, terms_from_row(v)))
            if v.locked_at is not None:
                locked.add(("version", v.pk))
        for a in Agreement.objects.all():
            agreements[(a.host_id, a.license_id)].append((a.pk, terms_from_row(a)))
            if a.locked_at is not None:
                locked.add(("agreement", a.pk))
        return cls(
            license_slugs=dict(License.objects.values_list("id", "slug")),
            versions=dict(versions),
            agreements=dict(agreements),
            locked=locked,
        )

    def terms(self, license_id: int, host_id: int) -> list[Terms]:
        return [t for _, t in self.versions.get(license_id, [])] + [
            t for _, t in self.agreements.get((host_id, license_id), [])
        ]

    def periods_to_rerate(self, *, host_id: int, licensor_id: int, period: str) -> set[str]:
        """Earlier months of the pair with usage their settlement did not rate: late records,
        and records that arrived while the draft waited for approval (PendingRerate)."""
        if self.rerate is None:
            rerate: dict[tuple[int, int], set[str]] = defaultdict(set)
            for h, lic, p in aggregation.late_usage_periods(before_period=period):
                rerate[(h, lic)].add(p)
            for h, lic, p in PendingRerate.objects.filter(period__lt=period).values_list(
                "host_id", "licensor_id", "period"
            ):
                rerate[(h, lic)].add(p)
            self.rerate = dict(rerate)
        return self.rerate.get((host_id, licensor_id), set())


def _by_license(rows: Iterable[dict[str, Any]]) -> list[tuple[int, list[dict[str, Any]]]]:
    by_license: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_license[row["license_id"]].append(row)
    return sorted(by_license.items())


def license_month_rate(
    *,
    period: str,
    rows: Sequence[dict[str, Any]],
    catalog: CatalogSnapshot,
    settled: Sequence[Line] | None = None,
    history: Sequence[Billed] | None = None,
    edition: Edition = EDITION,
) -> RatingResult:
    """Rate one (host, license) month from its aggregated rows: the month as it stands, or with
    `settled` (what was billed for it already) the adjustment lines of a settled month, `history`
    being the settlements that billed it (`_billing_history`). `edition`: leave it; 1 only
    reproduces what was written under edition 1 of the rules (docs/rating.md, "Editions")."""
    first = rows[0]
    terms = catalog.terms(first["license_id"], first["host_id"])
    usage = [usage_group_from_row(r) for r in rows]
    window = WindowState(
        period_bounds(period)[0].year, Decimal(first["ytd_revenue"]), int(first["ytd_tokens"])
    )
    if settled is None:
        return rate(period=period, terms=terms, usage=usage, window_state=window, edition=edition)
    return rerate_settled(
        period=period,
        terms=terms,
        usage=usage,
        window_state=window,
        settled=settled,
        history=history,
        edition=edition,
    )


def _line_flags(line: Line, flags: Iterable[Any]) -> list[str]:
    return sorted(
        {
            f.kind
            for f in flags
            if f.license_version == line.license_version
            and f.model == line.model
            and f.customer_category == line.customer_category
        }
    )


def pair_period_rate(
    period: str,
    rows: Iterable[dict[str, Any]],
    catalog: CatalogSnapshot,
    edition: Edition = EDITION,
) -> dict[str, Bundle]:
    """A pair's own month, per currency: lines, flags and digests from its aggregated rows."""
    bundles: dict[str, Bundle] = defaultdict(Bundle)
    for license_id, license_rows in _by_license(rows):
        result = license_month_rate(
            period=period, rows=license_rows, catalog=catalog, edition=edition
        )
        currency = result.currency or license_rows[0]["currency"]
        bundle = bundles[currency]
        slug = catalog.license_slugs[license_id]
        bundle.usage_digests[slug] = result.usage_digest
        bundle.terms_digests[slug] = result.terms_digest
        bundle.record_count += sum(int(r["record_count"]) for r in license_rows)
        for line in result.lines:
            bundle.lines.append((license_id, line, _line_flags(line, result.flags)))
        bundle.flags += [{"license": slug, **f.to_json()} for f in result.flags]
        for r in license_rows:
            if r["terms_kind"] == "version":
                bundle.locked_versions.add(r["terms_id"])
            elif r["terms_kind"] == "agreement":
                bundle.locked_agreements.add(r["terms_id"])
    return dict(bundles)


def _billing_history(
    *,
    host_id: int,
    licensor_id: int,
    period: str,
    license_id: int,
    billed: Iterable[SettlementLine],
    cache: dict[datetime, list[dict[str, Any]]],
) -> list[Billed]:
    """The settlements that billed a settled month, oldest first: their lines of it and the
    month's usage received by their `computed_at` (aggregated only if the engine asks, once per
    `computed_at` for all the pair's licenses through `cache`). With it the engine tells a month
    billed under an earlier edition of the rules (docs/rating.md, "Editions")."""
    year = period_bounds(period)[0].year
    lines: dict[Any, list[Line]] = defaultdict(list)
    computed: dict[Any, datetime] = {}
    for row in billed:
        lines[row.settlement_id].append(line_from_row(row))
        computed[row.settlement_id] = row.settlement.computed_at

    def usage(until: datetime) -> tuple[list[UsageGroup], WindowState]:
        if until not in cache:
            who = UsageFilter(host_id=host_id, licensor_id=licensor_id, received_until=until)
            cache[until] = aggregation.aggregate_groups(period, who)
        rows = [r for r in cache[until] if r["license_id"] == license_id]
        if not rows:
            return [], WindowState(year)
        ytd = WindowState(year, Decimal(rows[0]["ytd_revenue"]), int(rows[0]["ytd_tokens"]))
        return [usage_group_from_row(r) for r in rows], ytd

    def loader(until: datetime) -> Callable[[], tuple[list[UsageGroup], WindowState]]:
        return lambda: usage(until)

    return [
        Billed(tuple(lines[pk]), loader(computed[pk]))
        for pk in sorted(computed, key=lambda pk: (computed[pk], str(pk)))
    ]


def settled_month_rerate(
    *,
    host_id: int,
    licensor_id: int,
    period: str,
    received_until: datetime | None,
    not_billed: Q,
    catalog: CatalogSnapshot,
    edition: Edition = EDITION,
) -> dict[str, list[tuple[int, Line]]]:
    """The adjustment lines of a pair's settled `period`, per currency, as (license id, line):
    the month re-rated with all its usage received by `received_until`, minus everything billed
    for it, which is every line of the pair for that month and license except those of void
    settlements and of the settlements `not_billed` selects (the run: the drafts it recomputes;
    --verify: the settlement under check and those computed after it).

    What was billed is read with the settlements that billed it, so a month billed under edition
    1 of the rules is adjusted only for its new usage (docs/rating.md, "Editions"); `edition=1`
    re-derives adjustments as edition 1's code did, for --verify of settlements it wrote."""
    rows = aggregation.aggregate_groups(
        period,
        UsageFilter(host_id=host_id, licensor_id=licensor_id, received_until=received_until),
    )
    adjustments: dict[str, list[tuple[int, Line]]] = defaultdict(list)
    history_rows: dict[datetime, list[dict[str, Any]]] = {}  # computed_at -> the pair's rows
    for license_id, license_rows in _by_license(rows):
        billed = (
            SettlementLine.objects.filter(
                settlement__host_id=host_id,
                settlement__licensor_id=licensor_id,
                license_id=license_id,
                period=period,
            )
            # A superseded settlement billed nothing: its revision did.
            .exclude(settlement__status__in=[SettlementStatus.VOID, SettlementStatus.SUPERSEDED])
            .exclude(not_billed)
            .select_related("settlement")
        )
        billed_lines = list(billed)
        result = license_month_rate(
            period=period,
            rows=license_rows,
            catalog=catalog,
            settled=[line_from_row(b) for b in billed_lines],
            history=_billing_history(
                host_id=host_id,
                licensor_id=licensor_id,
                period=period,
                license_id=license_id,
                billed=billed_lines,
                cache=history_rows,
            ),
            edition=edition,
        )
        if result.lines:
            currency = result.currency or license_rows[0]["currency"]
            adjustments[currency] += [(license_id, line) for line in result.lines]
    return dict(adjustments)


__all__ = [
    "LINE_FIELDS",
    "Bundle",
    "CatalogSnapshot",
    "license_month_rate",
    "line_from_row",
    "line_to_row",
    "line_values",
    "pair_period_rate",
    "settled_month_rerate",
    "usage_group_from_row",
]
