"""Celery tasks of the billing run and of Stripe invoicing: thin, they take ids and call services
(billing/runs.py, billing/invoicing.py).

Both are `acks_late`: a worker killed mid-task leaves the message unacknowledged, the broker
delivers it again, and the services make the second delivery harmless (a pair already done is
skipped; a run started twice supersedes the first).

The monthly task queues one `bill_pairs` task per batch of pairs (at most BILLING_PAIRS_PER_BATCH
pairs and BILLING_GROUPS_PER_BATCH groups; one transaction each, billing/runs.py); `bill_pair`
bills a single pair (a batch of one) and stays for redeliveries and operators. A pair that
cannot be settled is recorded as failed on the run (`billing_pair_fail`): a batch that raises is
settled again pair by pair, so the other pairs go on, and no retry repeats an error that is not
transient. A run whose batches stop advancing (a task the broker lost) has its pairs not done
queued again by beat's reap (`reap_billing_runs`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from celery import Task, shared_task
from django.db import OperationalError
from django.db.models import Q
from django.utils import timezone

from billing import invoicing, payouts, stripe_gateway, webhook_delivery
from billing.errors import InvoicingInProgress
from billing.models import BillingRunPair, Settlement, SettlementStatus
from billing.runs import (
    billing_pair_fail,
    billing_pair_settle,
    billing_pairs_bill,
    billing_run_start,
    pair_failure_text,
    pairs_batches,
)
from billing.stale import billing_run_resume_release, billing_runs_reap, billing_runs_resume
from core.periods import previous_period

logger = logging.getLogger(__name__)


@shared_task(name="billing.tasks.run_monthly_billing", acks_late=True)
def run_monthly_billing(period: str | None = None) -> int:
    """Bill `period` ("YYYY-MM"; None: the previous UTC month, what beat runs on the 1st):
    aggregate the month, then one `bill_pairs` task per batch of (licensor, host) pairs.
    Returns the run's id."""
    run = billing_run_start(period=period or previous_period(timezone.now()), trigger="task")
    # billing_run_start committed (durable), so the rows the batches read are visible.
    _queue_batches(
        run.pk,
        BillingRunPair.objects.filter(run=run, done_at__isnull=True)
        .order_by("id")
        .values_list("host_id", "licensor_id"),
    )
    return run.pk


def _queue_batches(run_id: int, pairs: Iterable[tuple[int, int]]) -> int:
    """One `bill_pairs` task per batch of the run's `pairs` (`pairs_batches`); returns how many."""
    batches = pairs_batches(run_id, list(pairs))
    for batch in batches:
        bill_pairs.delay(run_id, [[h, lic] for h, lic in batch])
    return len(batches)


@shared_task(
    bind=True,
    name="billing.tasks.bill_pairs",
    acks_late=True,
    # A lost connection or a deadlock victim: the batch's transaction rolled back whole, so the
    # task is simply run again (pairs it had already committed are skipped).
    autoretry_for=(OperationalError,),
    retry_backoff=True,
    max_retries=5,
)
def bill_pairs(self: Task, run_id: int, pairs: list[list[int]]) -> int:
    """Write the settlements of a batch of [host_id, licensor_id] pairs for the run's period;
    returns how many of them failed (the run records each)."""
    retries_left = self.request.retries < (self.max_retries or 0)
    return billing_pairs_bill(
        run_id=run_id,
        pairs=[(int(h), int(lic)) for h, lic in pairs],
        # Once the retries are spent, a transient error is recorded like any other.
        transient=(OperationalError,) if retries_left else (),
    )


@shared_task(
    bind=True,
    name="billing.tasks.bill_pair",
    acks_late=True,
    # A lost connection or a deadlock victim: the pair's transaction rolled back whole, so the
    # task is simply run again.
    autoretry_for=(OperationalError,),
    retry_backoff=True,
    max_retries=5,
)
def bill_pair(self: Task, run_id: int, host_id: int, licensor_id: int) -> int:
    """Write one pair's settlements for the run's period; returns how many were written (0 when
    the pair failed: the run records it)."""
    try:
        outcome = billing_pair_settle(run_id=run_id, host_id=host_id, licensor_id=licensor_id)
    except OperationalError as exc:
        if self.request.retries < (self.max_retries or 0):
            raise  # transient: autoretry_for runs the task again
        error = pair_failure_text(exc)
    except Exception as exc:
        # The pair's transaction rolled back whole; the same data would fail the same way again.
        error = pair_failure_text(exc)
    else:
        return len(outcome.written)
    logger.error(
        "billing run %s: pair host=%s licensor=%s failed: %s", run_id, host_id, licensor_id, error
    )
    billing_pair_fail(run_id=run_id, host_id=host_id, licensor_id=licensor_id, error=error)
    return 0


@shared_task(
    name="billing.tasks.settlement_invoice",
    acks_late=True,
    # Stripe unreachable, rate-limited or failing: the whole invoicing is run again later and
    # continues what Stripe already holds (idempotency keys, metadata search).
    autoretry_for=stripe_gateway.TRANSIENT_ERRORS,
    retry_backoff=30,
    retry_backoff_max=3600,
    max_retries=10,
)
def settlement_invoice(settlement_id: str) -> str | None:
    """`invoicing.settlement_invoice` by id: a task is named after the service it calls.
    Sends an approved settlement's Stripe invoice; returns its id (None: not invoiced, e.g.
    Stripe is not configured, the total is not positive, or another worker holds the claim)."""
    if not stripe_gateway.is_configured():
        return None
    settlement = Settlement.objects.get(pk=settlement_id)
    try:
        return invoicing.settlement_invoice(settlement=settlement).stripe_invoice_id
    except InvoicingInProgress:
        return None  # its holder finishes it; a dead holder's claim expires for the sweep


@shared_task(name="billing.tasks.invoice_pending_settlements")
def invoice_pending_settlements() -> int:
    """The sweep (beat, hourly): approved settlements with a positive total and no invoice whose
    queued task was lost (broker down at approval, a worker's retries exhausted). Returns how
    many tasks it queued."""
    if not stripe_gateway.is_configured():
        return 0
    stale = timezone.now() - invoicing.INVOICING_LEASE
    pending = (
        Settlement.objects.filter(
            status=SettlementStatus.APPROVED, stripe_invoice_id__isnull=True, total__gt=0
        )
        .filter(Q(invoicing_started_at__isnull=True) | Q(invoicing_started_at__lt=stale))
        .order_by("approved_at")
        .values_list("pk", flat=True)
    )
    count = 0
    for pk in pending:
        settlement_invoice.delay(str(pk))
        count += 1
    return count


@shared_task(name="billing.tasks.deliver_webhook", acks_late=True)
def deliver_webhook(delivery_id: int) -> bool | None:
    """One outbound webhook delivery, right after its event committed (billing/events.py); a
    failed one is retried by `deliver_due_webhooks` when its backoff has passed."""
    return webhook_delivery.delivery_attempt(delivery_id=delivery_id)


@shared_task(name="billing.tasks.deliver_due_webhooks", acks_late=True)
def deliver_due_webhooks() -> int:
    """Every outbound webhook delivery that is due (beat, every minute)."""
    delivered, _ = webhook_delivery.deliveries_send()
    return delivered


@shared_task(name="billing.tasks.reap_billing_runs")
def reap_billing_runs() -> list[int]:
    """Queue again the pairs not done of the Celery runs that stopped advancing, then mark
    failed the running runs whose process died or that stopped advancing for good
    (billing/stale.py); returns the ids of the runs failed."""
    now = timezone.now()
    for run_id, pairs in billing_runs_resume(now=now).items():  # committed: the batches see it
        try:
            batches = _queue_batches(run_id, pairs)
        except Exception:
            # The broker refused the batches: the resume is undone, so the next reap (beat,
            # every 10 minutes) tries again. Batches queued before the failure are harmless.
            billing_run_resume_release(run_id=run_id, resumed_at=now)
            logger.exception(
                "billing run %s stopped advancing, and its pairs could not be queued again:"
                " the next reap tries again",
                run_id,
            )
            continue
        logger.warning(
            "billing run %s stopped advancing: queued its %s pairs not done again (%s batches)",
            run_id,
            len(pairs),
            batches,
        )
    return [run.pk for run in billing_runs_reap()]


@shared_task(name="billing.tasks.run_payouts")
def run_payouts() -> int:
    """Pay licensors their available balances (beat, monthly; docs/payouts.md). Returns how many
    payouts it made."""
    return len(payouts.run_payouts(as_of=timezone.now().date()))
