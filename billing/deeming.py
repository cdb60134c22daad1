"""Deemed acceptance (docs/billing.md, "Deemed acceptance"): a draft past its `review_due_at` is
approved with `decided_by = "deemed"`, by the hourly beat task `deem_settlements` or by
`python manage.py deem_settlements [--as-of RFC3339]`. Each approval is the licensor's own
(`review.settlement_approve`, one transaction each): the accrual is posted once, and a licensor
who decides first wins the conditional update.
"""

from __future__ import annotations

from datetime import datetime

from celery import shared_task
from django.utils import timezone

from billing.errors import SettlementStateError
from billing.models import Settlement, SettlementStatus
from billing.review import settlement_approve


def settlements_deem(*, as_of: datetime | None = None) -> list[Settlement]:
    """Approve every draft whose review window ended by `as_of` (default now); returns those
    approved. A draft decided or recomputed meanwhile is skipped."""
    as_of = as_of or timezone.now()
    due = Settlement.objects.filter(
        status=SettlementStatus.DRAFT, review_due_at__lte=as_of
    ).order_by("review_due_at", "pk")
    approved = []
    for settlement in due:
        try:
            approved.append(settlement_approve(settlement=settlement, actor="", deemed_as_of=as_of))
        except SettlementStateError:
            continue  # the licensor decided first, or a run moved its due date past `as_of`
    return approved


@shared_task(name="billing.deeming.deem_settlements")
def deem_settlements() -> int:
    """The beat's deemed acceptance: how many drafts it approved."""
    return len(settlements_deem())


__all__ = ["deem_settlements", "settlements_deem"]
