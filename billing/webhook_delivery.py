"""Sending outbound webhooks (docs/webhooks.md): sign, POST, record, retry with backoff.

A delivery is due when pending and its `next_attempt_at` has come. A sender claims it with a
conditional update that moves `next_attempt_at` a lease ahead (healthchecks' way: two workers, or
a task and `deliver_webhooks`, never send the same attempt twice at once), then POSTs outside any
transaction, then records the answer. Anything but a 2xx within TIMEOUT is retried after
BACKOFF_BASE x 2^(attempts-1), at most BACKOFF_MAX, until the event is RETRY_FOR old: then the
delivery is `failed`. Receivers deduplicate by the event's id: a delivery whose answer was lost
is sent again.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import socket
import time
import urllib.error
import urllib.request
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.utils import timezone

from billing.signals import webhook_attempted
from billing.webhook_models import WebhookDelivery

TIMEOUT = 10.0  # seconds for the whole answer
BACKOFF_BASE = timedelta(minutes=1)
BACKOFF_MAX = timedelta(hours=6)
RETRY_FOR = timedelta(days=3)  # then the delivery is given up as failed
LEASE = timedelta(seconds=60)  # longer than TIMEOUT: a claimed attempt is not claimed again
SIGNATURE_HEADER = "Tollgate-Signature"


def allow_private() -> bool:
    return bool(getattr(settings, "TOLLGATE_WEBHOOKS_ALLOW_PRIVATE", False))


def url_problem(url: str) -> str | None:
    """Why `url` may not receive webhooks, or None. https on a public address only, unless
    TOLLGATE_WEBHOOKS_ALLOW_PRIVATE (tests, demo): else anyone could make Tollgate POST into
    its own network (SSRF). Checked at subscription and again before each attempt, since a
    name can be pointed elsewhere later."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "is not a valid URL"
    if parts.scheme not in ("https", "http") or not parts.hostname:
        return "must be an https URL"
    if allow_private():
        return None
    if parts.scheme != "https":
        return "must be https"
    try:
        infos = socket.getaddrinfo(parts.hostname, port or 443, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return f"host {parts.hostname} does not resolve"
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%")[0])
        if not address.is_global:
            return f"must be on a public address, not {address}"
    return None


def sign(secret: str, body: bytes, at: int) -> str:
    """The signature header's value: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">."""
    mac = hmac.new(secret.encode(), f"{at}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={at},v1={mac}"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    # A redirect is an answer that is not 2xx: following it could lead into a private network.
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_opener = urllib.request.build_opener(_NoRedirect)


def _post(url: str, body: bytes, signature: str) -> tuple[int | None, str]:
    """(HTTP status or None, error text)."""
    request = urllib.request.Request(  # noqa: S310 - the scheme is checked by url_problem
        url,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "User-Agent": "Tollgate-Webhooks/1",
            SIGNATURE_HEADER: signature,
        },
    )
    try:
        with _opener.open(request, timeout=TIMEOUT) as response:
            response.read(65536)
            return int(response.status), ""
    except urllib.error.HTTPError as exc:
        return int(exc.code), f"HTTP {exc.code}"
    except (OSError, ValueError) as exc:
        return None, f"{type(exc).__name__}: {exc}"[:1000]


def backoff(attempts: int) -> timedelta:
    return min(BACKOFF_BASE * 2 ** max(attempts - 1, 0), BACKOFF_MAX)


def delivery_attempt(*, delivery_id: int, force: bool = False) -> bool | None:
    """Send one delivery if it is due (`force`: if it is pending at all). True: delivered;
    False: failed this time; None: not ours to send (not due, done, or claimed elsewhere)."""
    now = timezone.now()
    due = WebhookDelivery.objects.filter(pk=delivery_id, status=WebhookDelivery.Status.PENDING)
    if not force:
        due = due.filter(next_attempt_at__lte=now)
    if not due.update(next_attempt_at=now + LEASE):
        return None
    d = WebhookDelivery.objects.select_related("event", "endpoint").get(pk=delivery_id)
    problem = url_problem(d.endpoint.url)
    body = d.event.body.encode()
    if problem is None:
        status, error = _post(d.endpoint.url, body, sign(d.endpoint.secret, body, int(time.time())))
    else:
        status, error = None, f"url {problem}"
    ok = status is not None and 200 <= status < 300
    done = timezone.now()
    fields: dict[str, Any] = {
        "attempts": d.attempts + 1,
        "last_attempt_at": done,
        "last_status_code": status,
        "last_error": "" if ok else error or f"HTTP {status}",
    }
    if ok:
        fields.update(status=WebhookDelivery.Status.SUCCEEDED, delivered_at=done)
        outcome = "delivered" if d.attempts == 0 else "retried"
    elif done - d.event.created_at >= RETRY_FOR:
        fields.update(status=WebhookDelivery.Status.FAILED)
        outcome = "gave_up"
    else:
        fields.update(next_attempt_at=done + backoff(d.attempts + 1))
        outcome = "failed"
    WebhookDelivery.objects.filter(pk=d.pk).update(**fields)
    # After the attempt is recorded: what observers count is what the delivery log says.
    webhook_attempted.send(sender=WebhookDelivery, outcome=outcome, delivery_id=d.pk)
    return ok


def deliveries_send(*, everything: bool = False, now: datetime | None = None) -> tuple[int, int]:
    """Send every due delivery (`everything`: every pending one, due or not), oldest first.
    Returns (delivered, failed this time)."""
    pending = WebhookDelivery.objects.filter(status=WebhookDelivery.Status.PENDING)
    if not everything:
        pending = pending.filter(next_attempt_at__lte=now or timezone.now())
    delivered = failed = 0
    for pk in list(pending.order_by("next_attempt_at", "id").values_list("pk", flat=True)):
        outcome = delivery_attempt(delivery_id=pk, force=everything)
        delivered += outcome is True
        failed += outcome is False
    return delivered, failed


__all__ = [
    "SIGNATURE_HEADER",
    "backoff",
    "deliveries_send",
    "delivery_attempt",
    "sign",
    "url_problem",
]
