"""A settlement's verification kit: a zip an auditor checks with `manage.py verify_kit` and no
access to Tollgate (docs/verification.md). This module writes it; billing/kit_check.py reads it.

    settlement.json  the settlement as the API renders it
    terms.json       every version and agreement that rated it, the models and licenses they
                     cover (the catalog format, docs/catalog.md)
    rating.json      per license and month rated: the year-to-date the rating opened with and
                     the threshold points its groups were split at (both hashed into the usage
                     digest), and for a month adjusted here, the lines billed for it before
    usage.ndjson     every usage record behind it, corrections included, one JSON object a line
    README.md        how the digests and amounts are computed

The kit is streamed: usage.ndjson is read from the database in chunks and compressed as it goes,
so its size has no limit but the settlement's.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC
from decimal import Decimal
from typing import Any

from billing import aggregation
from billing.aggregation import UsageFilter
from billing.models import Settlement, SettlementLine, SettlementStatus
from billing.rerating import CatalogSnapshot, line_from_row, pair_period_rate
from core.periods import period_bounds
from licensing.models import Agreement, License, LicensedModel, LicenseVersion
from licensing.rating.rules import decimal_to_json
from usage.models import UsageRecord

# The record fields of usage.ndjson, in order: those the usage digest covers (docs/api.md).
RECORD_FIELDS = (
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
    "corrects",
)

_CHUNK = 2_000  # records read from the database per round trip

KIT_README = """\
# Tollgate settlement verification kit

Check it with `python manage.py verify_kit THIS.zip` (no database needed), or by hand as
docs/verification.md describes. In short:

1. Each record of usage.ndjson is rated by the terms in force at its `occurred_at` (terms.json:
   the host's agreement in force, else the license's version in force; a model without a license
   is rated under its parent's). A correction (`corrects` set) adds its signed deltas to its
   original.
2. Records are grouped per license and month by model, customer category, region, currency and
   terms; for a license with threshold points (rating.json) each event is netted with its
   corrections first, taken in (occurred_at, event_id) order, and a record that crosses a point
   is a group of its own. A group's record count counts originals only.
3. usage_digest is "sha256:" + the hex SHA-256 of the canonical JSON (sorted keys, no spaces,
   UTF-8) of {"period", "window_state" (rating.json), "usage": the groups, each sorted by its own
   canonical JSON}; terms_digest the same of the list of terms that rated usage, oldest first.
   A settlement of several licenses carries the digest of {license slug: digest}.
4. A usage line is one per model, customer category and terms: the exact amounts of its records
   summed and rounded half-up once to the currency's minor unit; minimum, cap and flat fees
   follow docs/rating.md. The total is the sum of the rounded lines.
5. An adjustment line (usage of a month settled earlier) is that month re-rated with all its usage
   in this kit, minus the lines billed for it before (rating.json "billed").
"""


@dataclass
class _Month:
    """One month rated for the settlement: its own period, or an earlier one it adjusts."""

    period: str
    own: bool
    license_ids: set[int] = field(default_factory=set)
    entries: list[dict[str, Any]] = field(default_factory=list)  # rating.json, per license


@dataclass
class KitPlan:
    """Everything of the kit but the usage records, which are streamed."""

    settlement: Settlement
    months: list[_Month]
    terms: dict[str, Any]
    rating: dict[str, Any]


def _dt(value: Any) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _month(
    settlement: Settlement, period: str, *, own: bool, catalog: CatalogSnapshot
) -> tuple[_Month, set[tuple[str, int]]]:
    """The licenses of `period` rated in the settlement's currency, with their opening state,
    as the run rated them (billing/runs.py: the own month without late records, an adjusted
    month with all its usage received by the settlement's computation)."""
    rows = aggregation.aggregate_groups(
        period,
        UsageFilter(
            host_id=settlement.host_id,
            licensor_id=settlement.licensor_id,
            include_late=not own,
            received_until=settlement.computed_at,
        ),
    )
    bundle = pair_period_rate(period, rows, catalog).get(settlement.currency)
    month = _Month(period=period, own=own)
    if bundle is None:
        return month, set()
    slugs = set(bundle.usage_digests)
    thresholds = aggregation.license_thresholds()
    tagged: set[tuple[str, int]] = set()
    first_row: dict[int, dict[str, Any]] = {}
    for row in rows:
        if catalog.license_slugs[row["license_id"]] not in slugs:
            continue
        month.license_ids.add(row["license_id"])
        first_row.setdefault(row["license_id"], row)
        if row["terms_kind"] in ("version", "agreement"):
            tagged.add((row["terms_kind"], row["terms_id"]))
    year = period_bounds(period)[0].year
    for license_id in sorted(month.license_ids):
        row = first_row[license_id]
        entry: dict[str, Any] = {
            "license": catalog.license_slugs[license_id],
            "period": period,
            "adjusted": not own,
            "window_state": {
                "year": year,
                "revenue": decimal_to_json(Decimal(row["ytd_revenue"])),
                "tokens": int(row["ytd_tokens"]),
            },
            "threshold_points": [
                {"metric": p.metric, "window": p.window, "amount": decimal_to_json(p.amount)}
                for p in sorted(thresholds.get(license_id, ()))
            ],
        }
        if not own:
            entry["billed"] = _billed_before(settlement, period, license_id)
        month.entries.append(entry)
    return month, tagged


def _billed_before(settlement: Settlement, period: str, license_id: int) -> list[dict[str, Any]]:
    """The lines other settlements computed before this one billed for an adjusted month (what
    its adjustment lines are the difference from; billing/rerating.py settled_month_rerate)."""
    rows = (
        SettlementLine.objects.filter(
            settlement__host_id=settlement.host_id,
            settlement__licensor_id=settlement.licensor_id,
            license_id=license_id,
            period=period,
            settlement__computed_at__lt=settlement.computed_at,
        )
        .exclude(settlement__status=SettlementStatus.VOID)
        .exclude(settlement=settlement)
        .order_by("settlement__computed_at", "position")
    )
    return [line_from_row(row).to_json() for row in rows]


def _terms(settlement: Settlement, tagged: set[tuple[str, int]], license_ids: set[int]) -> Any:
    """The catalog (docs/catalog.md) of the terms that rated the settlement."""
    versions = LicenseVersion.objects.filter(
        pk__in=[pk for kind, pk in tagged if kind == "version"]
    )
    agreements = Agreement.objects.filter(
        pk__in=[pk for kind, pk in tagged if kind == "agreement"]
    ).select_related("license", "host")
    licenses: dict[int, dict[str, Any]] = {
        lic.pk: {
            "slug": lic.slug,
            "licensor": settlement.licensor.slug,
            "name": lic.name,
            "versions": [],
        }
        for lic in License.objects.filter(pk__in=license_ids).order_by("slug")
    }
    for v in sorted(versions, key=lambda v: (v.effective_from, v.label)):
        licenses[v.license_id]["versions"].append({"version": v.label, **v.terms_dict()})
    models = LicensedModel.objects.filter(licensor_id=settlement.licensor_id).select_related(
        "license", "parent"
    )
    return {
        "licensors": [{"slug": settlement.licensor.slug, "name": settlement.licensor.name}],
        "hosts": [
            {
                "slug": settlement.host.slug,
                "name": settlement.host.name,
                "currency": settlement.host.currency,
            }
        ],
        "licenses": list(licenses.values()),
        "models": [
            {
                "slug": m.slug,
                "licensor": settlement.licensor.slug,
                "license": m.license.slug if m.license else None,
                "parent": m.parent.slug if m.parent else None,
            }
            for m in sorted(models, key=lambda m: m.slug)
            if m.effective_license().pk in license_ids
        ],
        "agreements": [
            {
                "host": a.host.slug,
                "license": a.license.slug,
                "version": a.label,
                **a.terms_dict(),
            }
            for a in sorted(agreements, key=lambda a: (a.license.slug, a.effective_from, a.label))
        ],
    }


def kit_plan(settlement: Settlement) -> KitPlan:
    catalog = CatalogSnapshot.load()
    own, tagged = _month(settlement, settlement.period, own=True, catalog=catalog)
    months = [own]
    adjusted = sorted({line.period for line in settlement.lines.all() if line.kind == "adjustment"})
    for period in adjusted:
        month, more = _month(settlement, period, own=False, catalog=catalog)
        months.append(month)
        tagged |= more
    license_ids = {pk for m in months for pk in m.license_ids}
    return KitPlan(
        settlement=settlement,
        months=months,
        terms=_terms(settlement, tagged, license_ids),
        rating={"months": [entry for m in months for entry in m.entries]},
    )


def _records(settlement: Settlement, month: _Month) -> Iterator[dict[str, Any]]:
    if not month.license_ids:
        return
    start, end = period_bounds(month.period)
    qs = UsageRecord.objects.filter(
        host_id=settlement.host_id,
        licensor_id=settlement.licensor_id,
        license_id__in=sorted(month.license_ids),
        occurred_at__gte=start,
        occurred_at__lt=end,
        received_at__lte=settlement.computed_at,
    )
    if month.own:
        qs = qs.filter(late=False)
    columns = [f if f != "model" else "model__slug" for f in RECORD_FIELDS]
    for values in qs.order_by("occurred_at", "id").values_list(*columns).iterator(_CHUNK):
        rec = dict(zip(RECORD_FIELDS, values, strict=True))
        rec["occurred_at"] = _dt(rec["occurred_at"])
        rec["revenue"] = format(rec["revenue"], "f")
        rec["region"] = rec["region"] or None
        rec["corrects"] = rec["corrects"] or None
        yield rec


class _Pipe:
    """A write-only, unseekable file for zipfile: what is written is taken out by `drain`, so
    the zip goes to the client as it is made (zipfile then writes data descriptors)."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.offset = 0

    def write(self, data: bytes) -> int:
        self.chunks.append(bytes(data))
        self.offset += len(data)
        return len(data)

    def tell(self) -> int:
        return self.offset

    def flush(self) -> None:
        return None

    def drain(self) -> bytes:
        out = b"".join(self.chunks)
        self.chunks.clear()
        return out


def _json(value: Any) -> bytes:
    return (json.dumps(value, indent=2, ensure_ascii=False) + "\n").encode()


def kit_stream(plan: KitPlan, settlement_json: Any, readme: str) -> Iterable[bytes]:
    """The zip, in chunks. Every entry is dated by the settlement's computation, not by the
    download, so two downloads of an unchanged settlement are the same bytes."""
    stamp = plan.settlement.computed_at.astimezone(UTC)
    date_time = (
        max(stamp.year, 1980),
        stamp.month,
        stamp.day,
        stamp.hour,
        stamp.minute,
        stamp.second,
    )

    def entry(name: str) -> zipfile.ZipInfo:
        info = zipfile.ZipInfo(name, date_time=date_time)
        info.compress_type = zipfile.ZIP_DEFLATED
        info.external_attr = 0o644 << 16
        return info

    pipe = _Pipe()
    with zipfile.ZipFile(pipe, "w", compression=zipfile.ZIP_DEFLATED) as zf:  # type: ignore[call-overload]
        zf.writestr(entry("README.md"), readme)
        zf.writestr(entry("settlement.json"), _json(settlement_json))
        zf.writestr(entry("terms.json"), _json(plan.terms))
        zf.writestr(entry("rating.json"), _json(plan.rating))
        yield pipe.drain()
        with zf.open(entry("usage.ndjson"), "w", force_zip64=True) as out:
            for month in plan.months:
                for n, rec in enumerate(_records(plan.settlement, month), start=1):
                    out.write(json.dumps(rec, ensure_ascii=False).encode() + b"\n")
                    if n % _CHUNK == 0:
                        yield pipe.drain()
        yield pipe.drain()
    yield pipe.drain()


__all__ = ["KIT_README", "RECORD_FIELDS", "KitPlan", "kit_plan", "kit_stream"]
