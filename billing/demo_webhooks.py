"""The demo's webhook receiver (docs/webhooks.md): a small HTTP server on 127.0.0.1 that
`seed_demo` starts in a thread, subscribed for MiniMax through `POST /api/v1/webhook-endpoints`
like any licensor's integration. It checks each delivery's `Tollgate-Signature` the way the docs
tell a receiver to (its own HMAC over the raw body, not Tollgate's code), prints what it got, and
answers 200, or 400 to a delivery whose signature does not verify. The deliveries are in the
admin's delivery log. The demo needs `TOLLGATE_WEBHOOKS_ALLOW_PRIVATE` (set by `make demo`):
otherwise a loopback URL is refused, as in production.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from django.db import close_old_connections

from billing.demo import DemoWorld
from billing.events import EVENT_TYPES
from billing.webhook_delivery import allow_private, deliveries_send
from billing.webhook_models import WebhookEndpoint

RECEIVER_PATH = "/tollgate-webhooks"
DEFAULT_PORT = 8009
SIGNATURE_TOLERANCE = 300  # seconds: an older signature is a replay


@dataclass
class Received:
    event_id: str
    type: str
    object_id: str
    verified: bool


def signature_verifies(secret: str, header: str, body: bytes, now: float) -> bool:
    """docs/webhooks.md's receiver check: t and v1 from the header, HMAC-SHA256 of "<t>.<body>"."""
    try:
        parts = dict(item.split("=", 1) for item in header.split(","))
        at = int(parts["t"])
        expected = hmac.new(secret.encode(), f"{at}.".encode() + body, hashlib.sha256).hexdigest()
        return abs(now - at) <= SIGNATURE_TOLERANCE and hmac.compare_digest(expected, parts["v1"])
    except (KeyError, ValueError):
        return False


@dataclass
class DemoReceiver:
    """The receiver and what it received. `secret` is set once the endpoint is registered."""

    write: Callable[[str], Any]
    port: int = DEFAULT_PORT
    secret: str = ""
    received: list[Received] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{RECEIVER_PATH}"

    def start(self) -> DemoReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                header = self.headers.get("Tollgate-Signature", "")
                ok = self.path == RECEIVER_PATH and signature_verifies(
                    receiver.secret, header, body, time.time()
                )
                try:
                    event = json.loads(body)
                    got = Received(event["id"], event["type"], event["data"]["object"]["id"], ok)
                except (ValueError, KeyError, TypeError):
                    got = Received("?", "?", "?", False)
                receiver.received.append(got)
                receiver.write(
                    f"  webhook receiver: {got.type:<20} {got.event_id}  object {got.object_id}  "
                    + ("signature verified" if ok else "SIGNATURE DOES NOT VERIFY: refused")
                )
                self.send_response(200 if ok else 400)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return  # the line above says it all

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = int(self._server.server_address[1])  # port 0: the one the system chose
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


def demo_webhook_endpoint(world: DemoWorld, receiver: DemoReceiver) -> WebhookEndpoint | None:
    """MiniMax's endpoint at the receiver, subscribed to every event, registered through the REST
    API with MiniMax's key (once: a later run finds it and reads its secret). None when private
    addresses are not allowed."""
    from django.test import Client

    if not allow_private():
        return None
    endpoint = WebhookEndpoint.objects.filter(licensor__slug="minimax", url=receiver.url).first()
    if endpoint is None:
        response = Client().post(
            "/api/v1/webhook-endpoints",
            data=json.dumps({"url": receiver.url, "events": list(EVENT_TYPES)}),
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {world.licensor_keys['minimax']}",
        )
        if response.status_code != 201:
            raise RuntimeError(f"registering the demo's webhook endpoint: {response.content!r}")
        endpoint = WebhookEndpoint.objects.get(pk=response.json()["id"])
    receiver.secret = endpoint.secret
    return endpoint


def demo_deliveries_loop(every: float = 5.0) -> threading.Thread:
    """While the demo serves without a Celery broker: send the due deliveries every few seconds,
    so that an approval in the admin reaches the receiver (what the beat task does with one)."""

    def loop() -> None:
        while True:
            time.sleep(every)
            close_old_connections()
            try:
                deliveries_send()
            except Exception:  # noqa: S112 - the demo keeps serving; the next round retries
                continue

    thread = threading.Thread(target=loop, daemon=True, name="demo-webhook-deliveries")
    thread.start()
    return thread


__all__ = [
    "DEFAULT_PORT",
    "DemoReceiver",
    "demo_deliveries_loop",
    "demo_webhook_endpoint",
    "signature_verifies",
]
