"""Revisions and review windows of settlements, as a billing run writes them (docs/billing.md,
"Review, disputes and their resolution").

A run re-rates its period's *disputed* settlements like its drafts. When the lines or the usage
digest would change (the host corrected its usage, the catalog was fixed), `settlement_revise`
writes revision n+1 as a new draft that `supersedes` the disputed one, which becomes
`superseded`, in the run's transaction: the partial unique index `billing_settlement_one_current`
keeps exactly one current settlement per (licensor, host, period, currency). A superseded
settlement never posted an accrual (it was never approved); its revision posts one on approval.
When nothing would change the disputed settlement stays as it is.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.utils import timezone

from billing.history import SYSTEM, settlement_event_record
from billing.models import Settlement, SettlementStatus
from billing.notifications import revision_record
from billing.rerating import line_from_row
from licensing.models import Agreement, LicenseVersion
from licensing.rating import Line

# ("version" | "agreement", row id) -> (effective_from, review_days) of terms that rated usage.
ReviewTerms = dict[tuple[str, int], tuple[datetime, int | None]]


def review_terms(*, versions: set[int], agreements: set[int]) -> ReviewTerms:
    """What `review_due_at` needs of these terms, in two queries (a run's batch reads them once
    for all its settlements)."""
    known: ReviewTerms = {}
    for pk, effective_from, days in LicenseVersion.objects.filter(pk__in=versions).values_list(
        "pk", "effective_from", "review_days"
    ):
        known[("version", pk)] = (effective_from, days)
    for pk, effective_from, days in Agreement.objects.filter(pk__in=agreements).values_list(
        "pk", "effective_from", "review_days"
    ):
        known[("agreement", pk)] = (effective_from, days)
    return known


def review_due_at(
    *,
    first_computed_at: datetime,
    versions: set[int],
    agreements: set[int],
    known: ReviewTerms | None = None,
) -> datetime | None:
    """A settlement's deemed-acceptance instant: its first computation plus the `review_days` of
    the last terms (latest `effective_from`; an agreement before a version of the same instant,
    since it replaces it) that rated its usage; None when those have none, or nothing rated.
    `known`: the terms as `review_terms` read them (None: read them now)."""
    if known is None:
        known = review_terms(versions=versions, agreements=agreements)
    candidates: list[tuple[datetime, int, int | None]] = [
        (known[("version", pk)][0], 0, known[("version", pk)][1])
        for pk in versions
        if ("version", pk) in known
    ] + [
        (known[("agreement", pk)][0], 1, known[("agreement", pk)][1])
        for pk in agreements
        if ("agreement", pk) in known
    ]
    if not candidates:
        return None
    days = max(candidates, key=lambda c: (c[0], c[1]))[2]
    return None if days is None else first_computed_at + timedelta(days=days)


def revision_needed(*, disputed: Settlement, lines: list[Line], usage_digest: str) -> bool:
    """Would the re-rating change the disputed settlement: its lines, or the usage it rated?"""
    stored = [line_from_row(row) for row in disputed.lines.order_by("position")]
    return stored != lines or disputed.usage_digest != usage_digest


def settlement_revise(
    *,
    disputed: Settlement,
    fields: dict[str, Any],
    versions: set[int],
    agreements: set[int],
) -> Settlement:
    """Supersede `disputed` (locked FOR UPDATE by the caller, the run) by a new draft revision
    with `fields`; the caller writes its lines. Runs in the caller's transaction."""
    now = timezone.now()
    # Superseded first: the new draft then takes the one current place of the key.
    updated = Settlement.objects.filter(pk=disputed.pk, status=SettlementStatus.DISPUTED).update(
        status=SettlementStatus.SUPERSEDED, updated_at=now
    )
    assert updated == 1  # noqa: S101 - the caller holds the row FOR UPDATE and saw it disputed
    computed_at: datetime = fields["computed_at"]
    revision = Settlement.objects.create(
        host_id=disputed.host_id,
        licensor_id=disputed.licensor_id,
        period=disputed.period,
        currency=disputed.currency,
        revision=disputed.revision + 1,
        supersedes=disputed,
        first_computed_at=computed_at,
        review_due_at=review_due_at(
            first_computed_at=computed_at, versions=versions, agreements=agreements
        ),
        **fields,
    )
    total: Decimal = fields["total"]
    settlement_event_record(
        settlement=disputed,
        actor=SYSTEM,
        action="superseded",
        detail={"by": str(revision.pk)},
        at=now,
    )
    settlement_event_record(
        settlement=revision,
        actor=SYSTEM,
        action="revised",
        detail={
            "supersedes": str(disputed.pk),
            "revision": revision.revision,
            "total": format(total, "f"),
        },
        at=now,
    )
    # Sent after the run's commit; nothing if the run rolls back.
    revision_record(revision=revision, disputed=disputed)
    return revision


__all__ = [
    "ReviewTerms",
    "review_due_at",
    "review_terms",
    "revision_needed",
    "settlement_revise",
]
