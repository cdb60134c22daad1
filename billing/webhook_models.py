"""Outbound webhooks (docs/webhooks.md): the endpoints hosts and licensors subscribe, the events
recorded in the same transaction as the change they announce (an outbox), and one delivery per
event and subscribed endpoint, retried until it succeeds or its event is RETRY_FOR old."""

from __future__ import annotations

import secrets
import uuid

from django.db import models
from django.db.models import Q

from licensing.models import Host, Licensor


def _event_id() -> str:
    return "evt_" + secrets.token_hex(12)


def _secret() -> str:
    return "whsec_" + secrets.token_hex(24)


class WebhookEndpoint(models.Model):
    """A URL a host or a licensor asked us to POST its events to. The secret signs each delivery
    (HMAC-SHA256); it is shown once, when the endpoint is created, and kept to sign with."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    host = models.ForeignKey(
        Host, on_delete=models.CASCADE, null=True, blank=True, related_name="webhook_endpoints"
    )
    licensor = models.ForeignKey(
        Licensor, on_delete=models.CASCADE, null=True, blank=True, related_name="webhook_endpoints"
    )
    url = models.URLField(max_length=2000)
    events = models.JSONField(default=list)  # event types, docs/webhooks.md
    secret = models.CharField(max_length=100, default=_secret, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at"]
        constraints = [
            models.CheckConstraint(
                condition=Q(host__isnull=True) ^ Q(licensor__isnull=True),
                name="billing_webhookendpoint_one_owner",
            )
        ]

    def __str__(self) -> str:
        return self.url


class WebhookEvent(models.Model):
    """One event, written in the transaction of the change it announces; never changed after.
    `body` is what every endpoint receives, byte for byte: {"id", "type", "created", "data"}."""

    id = models.CharField(primary_key=True, max_length=40, default=_event_id, editable=False)
    type = models.CharField(max_length=40)
    host = models.ForeignKey(
        Host, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    licensor = models.ForeignKey(Licensor, on_delete=models.PROTECT, related_name="+")
    object_id = models.CharField(max_length=64)  # the settlement's or payout's id
    body = models.TextField()
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"{self.id} {self.type}"


class WebhookDelivery(models.Model):
    """One event to one endpoint: pending until a 2xx answer (succeeded) or until its event is
    RETRY_FOR old (failed). `next_attempt_at` is when it is due; a sender claims it by moving it
    forward (billing/webhook_delivery.py)."""

    class Status(models.TextChoices):
        PENDING = "pending"
        SUCCEEDED = "succeeded"
        FAILED = "failed"

    id = models.BigAutoField(primary_key=True)
    event = models.ForeignKey(WebhookEvent, on_delete=models.CASCADE, related_name="deliveries")
    endpoint = models.ForeignKey(
        WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries"
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField()
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    last_status_code = models.PositiveIntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        verbose_name_plural = "webhook deliveries"
        constraints = [
            models.UniqueConstraint(
                fields=["event", "endpoint"], name="billing_webhookdelivery_once"
            )
        ]
        indexes = [
            models.Index(
                fields=["next_attempt_at"],
                condition=Q(status="pending"),
                name="billing_webhook_due",
            )
        ]

    def __str__(self) -> str:
        return f"{self.event_id} -> {self.endpoint_id}"

    @property
    def next_attempt_or_none(self) -> object:
        """When the next attempt is due; None once the delivery succeeded or failed."""
        return self.next_attempt_at if self.status == self.Status.PENDING else None
