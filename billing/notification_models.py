"""Email notifications to a licensor's reviewers (docs/notifications.md): one row per message,
written in the transaction of what it announces (an outbox) and sent after commit by a Celery
task. Unique constraints make each notification once: one `review_ready` per licensor and billing
run, one `revised` per revision, one `review_reminder` per settlement."""

from __future__ import annotations

from django.db import models
from django.db.models import Q

from licensing.models import Licensor


class NotificationKind(models.TextChoices):
    REVIEW_READY = "review_ready", "settlements ready for review"
    REVISED = "revised", "a disputed settlement was revised"
    REVIEW_REMINDER = "review_reminder", "deemed acceptance in three days"


class Notification(models.Model):
    """One email to a licensor's reviewers. What it says is rendered when it is recorded, so the
    row is the record of what was sent; `sent_at` is set once the mail server accepted it."""

    kind = models.CharField(max_length=20, choices=NotificationKind.choices)
    licensor = models.ForeignKey(Licensor, on_delete=models.PROTECT, related_name="+")
    # review_ready: the billing run that wrote the drafts.
    run = models.ForeignKey(
        "billing.BillingRun", on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    # revised: the revision; review_reminder: the draft. A draft a run removes takes its
    # notifications with it, as it takes its history.
    settlement = models.ForeignKey(
        "billing.Settlement",
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="notifications",
    )
    to = models.JSONField(default=list)  # the reviewers' addresses when it was recorded
    subject = models.CharField(max_length=300)
    body = models.TextField()
    created_at = models.DateTimeField()
    # A sender's claim (billing/notifications.py): another sender leaves it alone until it
    # is older than the lease, so a message is not sent twice at once.
    claimed_at = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["run", "licensor"],
                condition=Q(kind="review_ready"),
                name="billing_notification_ready_once",
            ),
            models.UniqueConstraint(
                fields=["kind", "settlement"],
                condition=Q(kind__in=["revised", "review_reminder"]),
                name="billing_notification_settlement_once",
            ),
            models.CheckConstraint(
                condition=(Q(kind="review_ready") & Q(run__isnull=False))
                | (~Q(kind="review_ready") & Q(settlement__isnull=False)),
                name="billing_notification_subject_set",
            ),
        ]
        indexes = [
            models.Index(
                fields=["created_at"],
                condition=Q(sent_at__isnull=True),
                name="billing_notification_unsent",
            )
        ]

    def __str__(self) -> str:
        return f"{self.kind} to {', '.join(self.to)}"
