"""Celery tasks of the billing run: thin, they take ids and call services (billing/services.py).

Both are `acks_late`: a worker killed mid-task leaves the message unacknowledged, the broker
delivers it again, and the services make the second delivery harmless (a pair already done is
skipped; a run started twice supersedes the first).
"""

from __future__ import annotations

from celery import shared_task
from django.db import OperationalError
from django.utils import timezone

from billing.models import BillingRunPair
from billing.services import (
    billing_pair_settle,
    billing_run_fail,
    billing_run_start,
    previous_period,
)


@shared_task(name="billing.tasks.run_monthly_billing", acks_late=True)
def run_monthly_billing(period: str | None = None) -> int:
    """Bill `period` ("YYYY-MM"; None: the previous UTC month, what beat runs on the 1st):
    aggregate the month, then one `bill_pair` task per (licensor, host). Returns the run's id."""
    run = billing_run_start(period=period or previous_period(timezone.now()), trigger="task")
    pairs = list(
        BillingRunPair.objects.filter(run=run, done_at__isnull=True)
        .order_by("id")
        .values_list("host_id", "licensor_id")
    )
    for host_id, licensor_id in pairs:
        # billing_run_start committed (durable), so the rows these tasks read are visible.
        bill_pair.delay(run.pk, host_id, licensor_id)
    return run.pk


@shared_task(
    name="billing.tasks.bill_pair",
    acks_late=True,
    # A lost connection or a deadlock victim: the pair's transaction rolled back whole, so the
    # task is simply run again.
    autoretry_for=(OperationalError,),
    retry_backoff=True,
    max_retries=5,
)
def bill_pair(run_id: int, host_id: int, licensor_id: int) -> int:
    """Write one pair's settlements for the run's period; returns how many were written."""
    try:
        outcome = billing_pair_settle(run_id=run_id, host_id=host_id, licensor_id=licensor_id)
    except OperationalError:
        raise
    except Exception as exc:
        # The pair's transaction rolled back; the run shows the error to the operator.
        billing_run_fail(run_id=run_id, error=f"host={host_id} licensor={licensor_id}: {exc!r}")
        raise
    return len(outcome.written)
