"""Email to a licensor's reviewers (docs/notifications.md): settlements ready for review after a
billing run, a revision of a disputed settlement, and a reminder three days before deemed
acceptance.

Each message is a `Notification` row written in the transaction of what it announces (an outbox):
a run that rolls back leaves no row and sends nothing. After commit a Celery task sends it
(in-process when no broker is set); a failed send is retried with backoff, and the beat sweep
`send_pending_notifications` (or `manage.py send_notifications`) sends what a lost task left.
A unique constraint per (run, licensor) or (kind, settlement) makes each notification once,
however often or concurrently the code that records it runs.

    review_ready_record(run=run)               # billing/runs.py, when the run ends
    revision_record(revision=r, disputed=d)    # billing/revisions.py
    reminders_record()                         # the daily beat task `remind_reviewers`
"""

from __future__ import annotations

import logging
import smtplib
from collections import defaultdict
from datetime import datetime, timedelta
from functools import partial

from celery import Task, shared_task
from django.conf import settings
from django.core.mail import EmailMessage
from django.db import IntegrityError, transaction
from django.db.models import F, Max, Q
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone

from billing.models import BillingRun, Settlement, SettlementEvent, SettlementStatus
from billing.notification_models import Notification, NotificationKind
from billing.workspace import money
from licensing.selectors import licensor_reviewer_emails, licensors_reviewer_emails

logger = logging.getLogger(__name__)

REMINDER_BEFORE = timedelta(days=3)  # the reminder goes out this long before deemed acceptance
CLAIM_LEASE = timedelta(minutes=5)  # > EMAIL_TIMEOUT: a sender that died frees its claim then
SWEEP_MAX_AGE = timedelta(days=3)  # older unsent notifications are left for an operator
RETRY_BASE_SECONDS = 60.0  # a failed send is tried again after 1, 2, 4... minutes
RETRY_MAX_SECONDS = 3600.0  # at most an hour apart
MAX_RETRIES = 10


# --- what the messages say -------------------------------------------------------------------


def _link(path: str) -> str:
    return settings.TOLLGATE_BASE_URL + path


def _due(at: datetime | None) -> str:
    return "no deemed acceptance" if at is None else f"{at:%Y-%m-%d %H:%M} UTC"


# What `_row` and the review-ready message read of a settlement (the rest is deferred).
_ROW_FIELDS = (
    "id",
    "licensor",
    "licensor__name",
    "host",
    "host__name",
    "period",
    "currency",
    "total",
    "revision",
    "review_due_at",
)


def _row(s: Settlement) -> dict[str, str]:
    return {
        "host": s.host.name,
        "period": s.period,
        "total": f"{s.currency} {money(s.total, s.currency)}",
        "revision": "" if s.revision == 1 else f"revision {s.revision}",
        "due": _due(s.review_due_at),
        "url": _link(reverse("admin:billing_settlement_change", args=[s.pk])),
    }


def _record(
    kind: str, *, licensor_id: int, to: list[str], subject: str, body: str, **about: object
) -> Notification:
    """Write the row and send it once the current transaction commits."""
    notification = Notification.objects.create(
        kind=kind,
        licensor_id=licensor_id,
        to=to,
        subject=subject,
        body=body,
        created_at=timezone.now(),
        **about,
    )
    # robust: a mail server that is down must not fail what was just committed; the task
    # retries, and the sweep sends what it leaves.
    transaction.on_commit(partial(_queue, notification.pk), robust=True)
    return notification


def _queue(notification_id: int) -> None:
    send_notification.delay(notification_id)


# --- recording -------------------------------------------------------------------------------


def review_ready_record(*, run: BillingRun) -> list[Notification]:
    """When `run` has just ended (`done` or `partial`, in the transaction that ended it): one
    message per licensor listing the run's drafts, to that licensor's reviewers only. A licensor
    already told of this period's drafts is told again only if one of them was created or changed
    since (a re-run that found the same usage tells nobody). Drafts written by a run that never
    ended `done` or `partial` (superseded, failed) were never announced: they count as changed."""
    if run.status not in (BillingRun.Status.DONE, BillingRun.Status.PARTIAL):
        return []
    drafts = Settlement.objects.filter(period=run.period, status=SettlementStatus.DRAFT, run=run)
    # When each licensor was last told of this period's drafts, by an earlier run's message.
    told = dict(
        Notification.objects.filter(kind=NotificationKind.REVIEW_READY, run__period=run.period)
        .exclude(run=run)
        .values("licensor_id")
        .annotate(at=Max("created_at"))
        .values_list("licensor_id", "at")
    )
    # When each licensor's drafts of the period were last created or changed (their history:
    # billing/settling.py writes `computed` or `recomputed` only then), by whichever run.
    changed = dict(
        SettlementEvent.objects.filter(
            settlement__period=run.period,
            settlement__status=SettlementStatus.DRAFT,
            action__in=("computed", "recomputed"),
        )
        .values("settlement__licensor_id")
        .annotate(at=Max("at"))
        .values_list("settlement__licensor_id", "at")
    )
    to_tell = [
        licensor_id
        for licensor_id in drafts.order_by("licensor_id")
        .values_list("licensor_id", flat=True)
        .distinct()
        if licensor_id not in told
        or (licensor_id in changed and changed[licensor_id] > told[licensor_id])
    ]
    # Who is told first, then only their drafts, with only what the message shows: a run writes
    # up to tens of thousands of drafts, and licensors without reviewers need none of them.
    reviewers = licensors_reviewer_emails(licensor_ids=to_tell)
    if not reviewers:
        return []
    by_licensor: dict[int, list[Settlement]] = defaultdict(list)
    for s in (
        drafts.filter(licensor_id__in=list(reviewers))
        .select_related("host", "licensor")
        .only(*_ROW_FIELDS)
        .order_by("licensor_id", "host__name", "currency", "pk")
    ):
        by_licensor[s.licensor_id].append(s)
    out = []
    for licensor_id, settlements in by_licensor.items():
        to = reviewers[licensor_id]
        n = len(settlements)
        subject = (
            f"[Tollgate] {n} settlement{'s' if n > 1 else ''} for {run.period} "
            f"await{'' if n > 1 else 's'} your review"
        )
        body = render_to_string(
            "billing/email/review_ready.txt",
            {
                "licensor": settlements[0].licensor.name,
                "period": run.period,
                "rows": [_row(s) for s in settlements],
                "home": _link(reverse("admin:index")),
            },
        )
        out.append(
            _record(
                NotificationKind.REVIEW_READY,
                licensor_id=licensor_id,
                to=to,
                subject=subject,
                body=body,
                run=run,
            )
        )
    return out


def revision_record(*, revision: Settlement, disputed: Settlement) -> Notification | None:
    """A run revised a disputed settlement (in the run's transaction): tell the licensor's
    reviewers what changed."""
    to = licensor_reviewer_emails(licensor_id=revision.licensor_id)
    if not to:
        return None
    currency = revision.currency
    subject = (
        f"[Tollgate] Revision {revision.revision} of {revision.host.name}'s {revision.period} "
        "settlement to review"
    )
    body = render_to_string(
        "billing/email/revised.txt",
        {
            "licensor": revision.licensor.name,
            "row": _row(revision),
            "was": f"{currency} {money(disputed.total, currency)}",
            "change": f"{currency} {money(revision.total - disputed.total, currency)}",
            "disputed_revision": disputed.revision,
        },
    )
    return _record(
        NotificationKind.REVISED,
        licensor_id=revision.licensor_id,
        to=to,
        subject=subject,
        body=body,
        settlement=revision,
    )


def reminders_record(*, now: datetime | None = None) -> list[Notification]:
    """Every draft whose deemed acceptance falls within the next three days gets one reminder,
    ever: a second call, or one running at the same time, finds the unique constraint taken."""
    now = now or timezone.now()
    due = (
        Settlement.objects.filter(
            status=SettlementStatus.DRAFT,
            review_due_at__gt=now,
            review_due_at__lte=now + REMINDER_BEFORE,
        )
        .exclude(notifications__kind=NotificationKind.REVIEW_REMINDER)
        .select_related("host", "licensor")
        .order_by("review_due_at", "pk")
    )
    reviewers: dict[int, list[str]] = {}
    out = []
    for s in due:
        if s.licensor_id not in reviewers:
            reviewers[s.licensor_id] = licensor_reviewer_emails(licensor_id=s.licensor_id)
        to = reviewers[s.licensor_id]
        if not to:
            continue
        assert s.review_due_at is not None  # noqa: S101 - filtered above
        subject = (
            f"[Tollgate] {s.host.name}'s {s.period} settlement is deemed accepted on "
            f"{s.review_due_at:%Y-%m-%d}"
        )
        body = render_to_string(
            "billing/email/review_reminder.txt", {"licensor": s.licensor.name, "row": _row(s)}
        )
        try:
            # Its own transaction: the reminder commits (and is sent) on its own; a concurrent
            # caller that inserted it first makes this one wait, then fail the unique key.
            with transaction.atomic():
                out.append(
                    _record(
                        NotificationKind.REVIEW_REMINDER,
                        licensor_id=s.licensor_id,
                        to=to,
                        subject=subject,
                        body=body,
                        settlement=s,
                    )
                )
        except IntegrityError:
            continue
    return out


# --- sending ---------------------------------------------------------------------------------


def notification_send(*, notification_id: int) -> bool:
    """Send one notification unless it was sent or another sender holds it; True when sent.
    At least once: a sender that dies after the server accepted the message and before it is
    marked sent leaves it to be sent again when its claim expires."""
    now = timezone.now()
    # The claim is a conditional update, committed before the slow network call: two senders
    # (a task delivered twice, the sweep beside a retry) never send the same row at once.
    claimed = (
        Notification.objects.filter(pk=notification_id, sent_at__isnull=True)
        .filter(Q(claimed_at__isnull=True) | Q(claimed_at__lt=now - CLAIM_LEASE))
        .update(claimed_at=now, attempts=F("attempts") + 1)
    )
    if not claimed:
        return False
    notification = Notification.objects.get(pk=notification_id)
    message = EmailMessage(
        subject=notification.subject,
        body=notification.body,
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=notification.to,
        headers={"Auto-Submitted": "auto-generated"},
    )
    try:
        message.send()
    except Exception as exc:
        Notification.objects.filter(pk=notification_id, claimed_at=now).update(
            claimed_at=None, last_error=f"{type(exc).__name__}: {exc}"[:2000]
        )
        raise
    Notification.objects.filter(pk=notification_id).update(
        sent_at=timezone.now(), claimed_at=None, last_error=""
    )
    return True


def notifications_send_pending(*, max_age: timedelta = SWEEP_MAX_AGE) -> tuple[int, int]:
    """Send every unsent notification younger than `max_age`; returns (sent, failed)."""
    since = timezone.now() - max_age
    pending = Notification.objects.filter(sent_at__isnull=True, created_at__gte=since)
    sent = failed = 0
    for pk in pending.order_by("created_at", "pk").values_list("pk", flat=True):
        try:
            sent += notification_send(notification_id=pk)
        except (smtplib.SMTPException, OSError) as exc:
            failed += 1
            logger.warning("notification %s not sent: %s", pk, exc)
    return sent, failed


# --- Celery tasks (autodiscovered: config/celery.py) ------------------------------------------


@shared_task(bind=True, name="billing.notifications.send_notification", acks_late=True)
def send_notification(self: Task, notification_id: int) -> bool:
    """Send one notification; a mail server that fails is tried again with exponential backoff
    (1 minute, doubling, at most an hour apart, 10 times), then left to the sweep."""
    try:
        return notification_send(notification_id=notification_id)
    except (smtplib.SMTPException, OSError) as exc:
        if self.request.is_eager:
            # No broker: no worker to retry later. The row stays unsent for
            # `manage.py send_notifications`; the commit that queued it stands.
            logger.warning("notification %s not sent: %s", notification_id, exc)
            return False
        countdown = min(RETRY_MAX_SECONDS, RETRY_BASE_SECONDS * 2**self.request.retries)
        raise self.retry(exc=exc, countdown=countdown, max_retries=MAX_RETRIES) from exc


@shared_task(name="billing.notifications.remind_reviewers")
def remind_reviewers() -> int:
    """The daily reminders three days before deemed acceptance; how many it recorded."""
    return len(reminders_record())


@shared_task(name="billing.notifications.send_pending_notifications")
def send_pending_notifications() -> int:
    """The sweep (beat): notifications whose task was lost or gave up; how many it sent."""
    return notifications_send_pending()[0]


__all__ = [
    "notification_send",
    "notifications_send_pending",
    "reminders_record",
    "review_ready_record",
    "revision_record",
]
