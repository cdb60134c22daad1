"""The Stripe client's retries (billing/stripe_gateway.py): a request whose first attempt fails
with a 500 or a reset connection is sent again with the same idempotency key, and the invoicing
completes with one of everything in Stripe.

In front of localstripe sits a small proxy that fails the first attempt of every distinct request
and forwards the rest, recording each attempt."""

from __future__ import annotations

import http.client
import socket
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import pytest

from billing.invoicing import settlement_invoice
from billing.models import Settlement
from tests.stripe.helpers import (
    approve_without_invoicing,
    billed_settlement,
    stripe_customers,
    stripe_invoices,
)

pytestmark = pytest.mark.django_db(transaction=True)


@dataclass(frozen=True)
class Attempt:
    method: str
    path: str
    idempotency_key: str | None
    failed: bool


class FlakyProxy:
    """Fails the first attempt of each (method, path, body, idempotency key) the way `mode` says
    ("500": Stripe's api_error; "reset": the connection closed with a TCP reset, no answer), and
    forwards every later attempt to `upstream`."""

    def __init__(self, upstream: str, mode: str) -> None:
        self.attempts: list[Attempt] = []
        seen: set[tuple[str, str, bytes, str | None]] = set()
        lock = threading.Lock()
        target = urlsplit(upstream)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                key = self.headers.get("Idempotency-Key")
                request = (self.command, self.path, body, key)
                with lock:
                    first = request not in seen
                    seen.add(request)
                    proxy.attempts.append(Attempt(self.command, self.path, key, first))
                if first and mode == "reset":
                    # SO_LINGER 0: close() sends RST instead of FIN.
                    self.connection.setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                    )
                    self.close_connection = True
                    self.connection.close()
                    return
                if first:
                    payload = b'{"error": {"type": "api_error", "message": "injected"}}'
                    self.send_response(500)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                conn = http.client.HTTPConnection(target.hostname, target.port, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                conn.request(self.command, self.path, body=body, headers=headers)
                answer = conn.getresponse()
                data = answer.read()
                self.send_response(answer.status)
                for name, value in answer.getheaders():
                    if name.lower() not in ("content-length", "transfer-encoding", "connection"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                conn.close()

            do_GET = do_POST = do_DELETE = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(params=["500", "reset"])
def flaky(request: pytest.FixtureRequest, stripe_world: Any) -> Iterator[FlakyProxy]:
    proxy = FlakyProxy(stripe_world.base, request.param)
    yield proxy
    proxy.stop()


def test_it_retries_each_failed_request_with_its_idempotency_key(
    flaky: FlakyProxy, stripe_world: Any, settings: Any
) -> None:
    # given: an approved settlement, and the gateway pointed at the proxy with 2 retries
    settlement = approve_without_invoicing(billed_settlement(revenue="75300.00"))
    settings.STRIPE_API_BASE = flaky.base
    settings.STRIPE_MAX_NETWORK_RETRIES = 2

    # when: it is invoiced, every request failing once first
    invoiced = settlement_invoice(settlement=settlement)

    # then: invoiced, and Stripe holds one customer and one open invoice of 903,600 cents
    settings.STRIPE_API_BASE = stripe_world.base
    assert invoiced.status == "invoiced"
    [customer] = stripe_customers()
    [invoice] = stripe_invoices(customer.id)
    assert (invoice["id"], invoice["status"], invoice["total"]) == (
        invoiced.stripe_invoice_id,
        "open",
        903600,
    )
    # and every request was sent twice, the failed attempt and its retry, each POST under the
    # same idempotency key both times
    failed = [(a.method, a.path, a.idempotency_key) for a in flaky.attempts if a.failed]
    retried = [(a.method, a.path, a.idempotency_key) for a in flaky.attempts if not a.failed]
    assert sorted(failed, key=str) == sorted(retried, key=str)
    posts = [(path.split("?")[0], key) for method, path, key in failed if method == "POST"]
    assert {path for path, _ in posts} == {
        "/v1/customers",
        "/v1/invoices",
        "/v1/invoiceitems",
        f"/v1/invoices/{invoice['id']}/finalize",
        f"/v1/invoices/{invoice['id']}/send",
    }
    assert all(key for _, key in posts)
    assert Settlement.objects.get(pk=settlement.pk).stripe_invoice_id == invoice["id"]
