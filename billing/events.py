"""Outbound webhook events: what a state change calls, in its own transaction (docs/webhooks.md).

`event_emit` writes the event and one pending delivery per subscribed endpoint in the caller's
transaction (an outbox): the change and its event commit together or not at all, so every event
reaches every endpoint subscribed when it happened, at least once. Sending is billing/
webhook_delivery.py's, after commit: by a Celery task when a broker is set, otherwise by
`manage.py deliver_webhooks`.

    settlement_event(settlement, "settlement.approved")          # review, runs, invoicing
    event_emit(type="payout.paid", licensor=..., object_id=..., data=rendered_payout)
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import partial
from typing import Any

from celery import current_app
from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from billing.webhook_models import WebhookDelivery, WebhookEndpoint, WebhookEvent
from licensing.models import Host, Licensor

SETTLEMENT_EVENTS = (
    "settlement.created",
    "settlement.updated",
    "settlement.approved",
    "settlement.disputed",
    "settlement.responded",
    "settlement.revised",
    "settlement.invoiced",
    "settlement.paid",
)
PAYOUT_EVENTS = ("payout.created", "payout.paid", "payout.failed")
EVENT_TYPES = SETTLEMENT_EVENTS + PAYOUT_EVENTS

# How a settlement is rendered in `data.object`: the API's own rendering (billing/api.py), which
# BillingConfig.ready registers here; billing/api.py imports the review workflow that emits
# events, so this module cannot import it.
settlement_renderer: Callable[[Any], dict[str, Any]] | None = None
payout_renderer: Callable[[Any], dict[str, Any]] | None = None


def subscriptions(*, licensor_ids: set[int], host_ids: set[int]) -> list[WebhookEndpoint]:
    """Every endpoint of these licensors and hosts, read once: what `event_emit` chooses from
    for many events of one transaction (a billing run's batch)."""
    return list(
        WebhookEndpoint.objects.filter(Q(licensor_id__in=licensor_ids) | Q(host_id__in=host_ids))
    )


def _subscribed(
    type: str,
    licensor_id: int,
    host_id: int | None,
    endpoints: list[WebhookEndpoint] | None = None,
) -> list[WebhookEndpoint]:
    if endpoints is None:
        owners = Q(licensor_id=licensor_id)
        if host_id is not None:
            owners |= Q(host_id=host_id)
        endpoints = list(WebhookEndpoint.objects.filter(owners))
    return [
        e
        for e in endpoints
        if type in e.events
        and (e.licensor_id == licensor_id or (host_id is not None and e.host_id == host_id))
    ]


def event_emit(
    *,
    type: str,
    licensor: Licensor | int,
    host: Host | int | None,
    object_id: str,
    data: dict[str, Any] | Callable[[], dict[str, Any]],
    endpoints: list[WebhookEndpoint] | None = None,
) -> WebhookEvent | None:
    """Record an event and its deliveries in the current transaction; None when no endpoint is
    subscribed to it (nothing to deliver, so nothing is recorded). `host` None: a licensor's
    event (payouts), for the licensor's endpoints only. `data`: the object, or a function that
    renders it (called only when someone is subscribed). `endpoints`: those read beforehand by
    `subscriptions` (None: read them now)."""
    if type not in EVENT_TYPES:
        raise ValueError(f"unknown webhook event type {type!r}")
    licensor_id = licensor if isinstance(licensor, int) else licensor.pk
    host_id = host if host is None or isinstance(host, int) else host.pk
    endpoints = _subscribed(type, licensor_id, host_id, endpoints)
    if not endpoints:
        return None
    now = timezone.now()
    event = WebhookEvent(
        type=type, licensor_id=licensor_id, host_id=host_id, object_id=object_id, created_at=now
    )
    event.body = json.dumps(
        {
            "id": event.id,
            "type": type,
            "created": now.isoformat().replace("+00:00", "Z"),
            "data": {"object": data() if callable(data) else data},
        },
        separators=(",", ":"),
        default=str,
    )
    event.save(force_insert=True)
    deliveries = WebhookDelivery.objects.bulk_create(
        [WebhookDelivery(event=event, endpoint=e, next_attempt_at=now) for e in endpoints]
    )
    if settings.CELERY_BROKER_URL:
        # By name: billing/tasks.py imports the workflows that call this module. Without a
        # broker, `deliver_webhooks` (or its beat task) sends them: never inside a request.
        for d in deliveries:
            transaction.on_commit(partial(_queue, d.pk))
    return event


def _queue(delivery_id: int) -> None:
    current_app.send_task("billing.tasks.deliver_webhook", args=[delivery_id])


def settlement_event(
    settlement: Any, type: str, endpoints: list[WebhookEndpoint] | None = None
) -> WebhookEvent | None:
    """A settlement's event, for its licensor's and its host's endpoints (`endpoints`: read
    beforehand by `subscriptions`), with the settlement as the API renders it now."""
    if type not in SETTLEMENT_EVENTS:
        raise ValueError(f"{type!r} is not a settlement event")
    renderer = settlement_renderer
    if renderer is None:
        raise RuntimeError("billing's AppConfig did not register the settlement renderer")
    return event_emit(
        type=type,
        licensor=settlement.licensor_id,
        host=settlement.host_id,
        object_id=str(settlement.pk),
        data=lambda: renderer(settlement),
        endpoints=endpoints,
    )


__all__ = [
    "EVENT_TYPES",
    "PAYOUT_EVENTS",
    "SETTLEMENT_EVENTS",
    "event_emit",
    "settlement_event",
    "subscriptions",
]
