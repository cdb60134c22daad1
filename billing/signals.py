"""Signals that billing sends for others to observe (config/metrics.py counts them). This module
imports no model, so a process can connect to them before Django's apps are loaded."""

from __future__ import annotations

from django.dispatch import Signal

# Sent after each webhook delivery attempt is recorded, with `outcome`: "delivered" (a 2xx on the
# delivery's first attempt), "retried" (a 2xx after failed attempts), "failed" (no 2xx; another
# attempt is scheduled) or "gave_up" (no 2xx and the event is RETRY_FOR old: the delivery is
# now `failed`). billing/webhook_delivery.py.
webhook_attempted = Signal()

WEBHOOK_OUTCOMES = ("delivered", "retried", "failed", "gave_up")
