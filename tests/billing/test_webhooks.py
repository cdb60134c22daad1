"""Outbound webhooks (docs/webhooks.md) against a real HTTP receiver on 127.0.0.1: signed
deliveries that verify, retries of a failing receiver with the same event id, private addresses
refused by default, and who receives what."""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import re
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from billing.events import event_emit
from billing.models import Payout
from billing.payouts import payout_mark_paid
from billing.review import settlement_approve, settlement_dispute
from billing.tasks import deliver_due_webhooks
from billing.webhook_delivery import RETRY_FOR
from billing.webhook_models import WebhookDelivery, WebhookEvent
from licensing.catalog import catalog_import
from licensing.models import Host, Licensor
from tests.billing.conftest import post_usage, record, run_billing, settlement_of


class Receiver:
    """An HTTP server in a thread that answers each POST with the next status of `answers`
    (then 200) and keeps what it received."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.answers: list[int] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.received.append((dict(self.headers), body))
                status = receiver.answers.pop(0) if receiver.answers else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(body) for _, body in self.received]


@pytest.fixture
def receiver(settings: Any) -> Iterator[Receiver]:
    settings.TOLLGATE_WEBHOOKS_ALLOW_PRIVATE = True
    r = Receiver()
    r.thread.start()
    yield r
    r.server.shutdown()
    r.server.server_close()


def deliver(*args: str) -> str:
    out = io.StringIO()
    call_command("deliver_webhooks", *args, stdout=out)
    return out.getvalue()


def subscribe(client: APIClient, url: str, events: list[str]) -> dict[str, Any]:
    response = client.post(
        "/api/v1/webhook-endpoints", {"url": url, "events": events}, format="json"
    )
    assert response.status_code == 201, response.content
    return response.json()


def verify_signature(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """What a receiver does (docs/webhooks.md)."""
    parts = dict(item.split("=", 1) for item in headers["Tollgate-Signature"].split(","))
    expected = hmac.new(
        secret.encode(), parts["t"].encode() + b"." + body, hashlib.sha256
    ).hexdigest()
    return hmac.compare_digest(expected, parts["v1"])


@pytest.fixture
def world(
    minimax_world: tuple[Host, Licensor], client_for: Callable[..., APIClient]
) -> tuple[APIClient, APIClient]:
    host, licensor = minimax_world
    return client_for(host=host), client_for(licensor=licensor)


def test_a_signed_delivery_verifies(world: tuple[APIClient, APIClient], receiver: Receiver) -> None:
    # given: the licensor subscribed to created and approved settlements
    hc, lc = world
    endpoint = subscribe(lc, receiver.url, ["settlement.created", "settlement.approved"])
    assert endpoint["secret"].startswith("whsec_")
    assert "secret" not in lc.get("/api/v1/webhook-endpoints").json()["results"][0]

    # when: a settlement is computed, then approved, and the due deliveries are sent
    post_usage(hc, [record("c-1", revenue="1000.00")])
    run_billing("2026-10")
    s = settlement_of(licensor="minimax", host="fireworks", period="2026-10")
    settlement_approve(settlement=s, actor="test")
    assert deliver() == "webhooks: 2 delivered, 0 failed (to be retried)\n"

    # then: two signed POSTs, in order, each with the settlement as the API renders it
    assert [e["type"] for e in receiver.events()] == ["settlement.created", "settlement.approved"]
    for headers, body in receiver.received:
        assert verify_signature(endpoint["secret"], headers, body)
        assert headers["Content-Type"] == "application/json"
    created, approved = receiver.events()
    assert created["id"].startswith("evt_") and created["id"] != approved["id"]
    assert created["data"]["object"]["id"] == str(s.pk)
    assert created["data"]["object"]["status"] == "draft"
    assert approved["data"]["object"]["status"] == "approved"
    assert approved["data"]["object"]["total"] == "120.00"
    # and a tampered body does not verify
    headers, body = receiver.received[0]
    assert not verify_signature(endpoint["secret"], headers, body.replace(b"120.00", b"999.00"))
    # and the delivery log says so
    log = lc.get(f"/api/v1/webhook-endpoints/{endpoint['id']}/deliveries").json()["results"]
    assert [(d["type"], d["status"], d["attempts"], d["last_status_code"]) for d in log] == [
        ("settlement.approved", "succeeded", 1, 200),
        ("settlement.created", "succeeded", 1, 200),
    ]


def test_a_run_renders_a_new_settlement_as_the_api_reads_it_back(
    world: tuple[APIClient, APIClient], receiver: Receiver
) -> None:
    # given: a licensor subscribed to created settlements
    hc, lc = world
    subscribe(lc, receiver.url, ["settlement.created"])

    # when: a run computes a settlement (written as a COPY row, made a model for the webhook)
    post_usage(hc, [record("c-1", revenue="1000.00")])
    run_billing("2026-10")
    assert deliver() == "webhooks: 1 delivered, 0 failed (to be retried)\n"

    # then: the event's object is the settlement as the API reads it from the database: its
    # defaults (status, revision, supersedes), review due date, lines and flags
    s = settlement_of(licensor="minimax", host="fireworks", period="2026-10")
    (created,) = receiver.events()
    assert created["data"]["object"] == lc.get(f"/api/v1/settlements/{s.pk}").json()


def test_a_failing_receiver_gets_retries_with_the_same_event_id(
    world: tuple[APIClient, APIClient], receiver: Receiver
) -> None:
    # given: a receiver that answers 500, then 503, then 200
    hc, lc = world
    subscribe(lc, receiver.url, ["settlement.created"])
    receiver.answers = [500, 503]
    post_usage(hc, [record("c-1", revenue="1000.00")])
    run_billing("2026-10")

    # when: the first attempt fails
    assert deliver() == "webhooks: 0 delivered, 1 failed (to be retried)\n"
    delivery = WebhookDelivery.objects.get()
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("pending", 1, 500)
    assert delivery.last_attempt_at is not None
    assert delivery.next_attempt_at - delivery.last_attempt_at == timedelta(minutes=1)
    # then: it is not due again before its backoff
    assert deliver() == "webhooks: 0 delivered, 0 failed (to be retried)\n"

    # when: the backoff has passed (second failure: two minutes), and then --all
    WebhookDelivery.objects.update(next_attempt_at=timezone.now())
    assert deliver() == "webhooks: 0 delivered, 1 failed (to be retried)\n"
    delivery.refresh_from_db()
    assert delivery.next_attempt_at - delivery.last_attempt_at == timedelta(minutes=2)
    assert deliver("--all") == "webhooks: 1 delivered, 0 failed (to be retried)\n"

    # then: three POSTs of the same event, byte for byte
    bodies = {body for _, body in receiver.received}
    assert len(receiver.received) == 3 and len(bodies) == 1
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("succeeded", 3, 200)


def test_a_delivery_is_given_up_once_its_event_is_three_days_old(
    world: tuple[APIClient, APIClient], receiver: Receiver
) -> None:
    hc, lc = world
    subscribe(lc, receiver.url, ["settlement.created"])
    receiver.answers = [500]
    post_usage(hc, [record("c-1", revenue="1000.00")])
    run_billing("2026-10")
    WebhookEvent.objects.update(created_at=timezone.now() - RETRY_FOR)

    assert deliver() == "webhooks: 0 delivered, 1 failed (to be retried)\n"
    assert WebhookDelivery.objects.get().status == "failed"
    assert deliver("--all") == "webhooks: 0 delivered, 0 failed (to be retried)\n"


def test_an_unreachable_receiver_is_retried(
    world: tuple[APIClient, APIClient], settings: Any
) -> None:
    settings.TOLLGATE_WEBHOOKS_ALLOW_PRIVATE = True
    hc, lc = world
    subscribe(lc, "http://127.0.0.1:9/nothing-listens", ["settlement.created"])
    post_usage(hc, [record("c-1", revenue="1000.00")])
    run_billing("2026-10")
    assert deliver() == "webhooks: 0 delivered, 1 failed (to be retried)\n"
    d = WebhookDelivery.objects.get()
    assert d.status == "pending" and d.last_status_code is None
    assert "Connection refused" in d.last_error or "URLError" in d.last_error


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/hooks",
        "https://10.1.2.3/hooks",
        "https://192.168.0.10/hooks",
        "https://[::1]/hooks",
        "https://169.254.169.254/latest",
        "http://1.1.1.1/hooks",
        "ftp://1.1.1.1/hooks",
    ],
)
def test_http_and_private_addresses_are_refused_by_default(
    world: tuple[APIClient, APIClient], url: str
) -> None:
    _, lc = world
    response = lc.post(
        "/api/v1/webhook-endpoints", {"url": url, "events": ["settlement.created"]}, format="json"
    )
    assert response.status_code == 400, response.content
    assert list(response.json()["error"]["fields"]) == ["url"]


def test_a_public_https_address_is_accepted(world: tuple[APIClient, APIClient]) -> None:
    _, lc = world
    body = subscribe(lc, "https://1.1.1.1/hooks", ["settlement.approved", "payout.paid"])
    assert body["events"] == ["settlement.approved", "payout.paid"]


def test_unknown_events_and_a_hosts_payout_events_are_refused(
    world: tuple[APIClient, APIClient],
) -> None:
    hc, lc = world
    for client, events in ((lc, ["settlement.eaten"]), (hc, ["payout.paid"]), (lc, [])):
        response = client.post(
            "/api/v1/webhook-endpoints",
            {"url": "https://1.1.1.1/h", "events": events},
            format="json",
        )
        assert response.status_code == 400
        [field] = response.json()["error"]["fields"]
        assert field.split(".")[0] == "events"  # ("events.0": the first item)


def test_each_endpoint_gets_its_own_tenants_events(
    world: tuple[APIClient, APIClient],
    receiver: Receiver,
    client_for: Callable[..., APIClient],
) -> None:
    # given: Fireworks (host) and MiniMax (licensor) subscribed, and another host that is not
    hc, lc = world
    catalog_import({"hosts": [{"slug": "other", "name": "Other", "currency": "USD"}]})
    other = client_for(host=Host.objects.get(slug="other"))
    subscribe(hc, receiver.url + "/fireworks", ["settlement.created", "settlement.disputed"])
    subscribe(lc, receiver.url + "/minimax", ["settlement.disputed"])
    subscribe(other, receiver.url + "/other", ["settlement.created", "settlement.disputed"])

    # when: Fireworks' settlement is computed and disputed; then a licensor's payout event
    post_usage(hc, [record("c-1", revenue="1000.00")])
    run_billing("2026-10")
    s = settlement_of(licensor="minimax", host="fireworks", period="2026-10")
    settlement_dispute(settlement=s, reason="too high", actor="test")
    lc_endpoint = subscribe(lc, receiver.url + "/minimax-payouts", ["payout.paid"])
    event_emit(
        type="payout.paid",
        licensor=Licensor.objects.get(slug="minimax"),
        host=None,
        object_id="po_1",
        data={"id": "po_1", "status": "paid"},
    )
    deliver("--all")

    # then
    assert len(receiver.received) == 4
    log = WebhookDelivery.objects.select_related("event", "endpoint").order_by("id")
    assert sorted((d.endpoint.url.rsplit("/", 1)[1], d.event.type) for d in log) == [
        ("fireworks", "settlement.created"),
        ("fireworks", "settlement.disputed"),
        ("minimax", "settlement.disputed"),
        ("minimax-payouts", "payout.paid"),
    ]
    assert lc_endpoint["events"] == ["payout.paid"]


def test_delete_stops_deliveries_and_another_tenants_endpoint_is_404(
    world: tuple[APIClient, APIClient], receiver: Receiver
) -> None:
    hc, lc = world
    endpoint = subscribe(lc, receiver.url, ["settlement.created"])
    assert hc.delete(f"/api/v1/webhook-endpoints/{endpoint['id']}").status_code == 404
    assert hc.get(f"/api/v1/webhook-endpoints/{endpoint['id']}/deliveries").status_code == 404
    assert lc.delete(f"/api/v1/webhook-endpoints/{endpoint['id']}").status_code == 204
    assert lc.get("/api/v1/webhook-endpoints").json() == {"results": []}
    post_usage(hc, [record("c-1", revenue="1000.00")])
    run_billing("2026-10")
    assert deliver("--all") == "webhooks: 0 delivered, 0 failed (to be retried)\n"
    assert receiver.received == []


def test_a_recomputed_draft_with_another_total_is_updated_and_one_without_is_not(
    world: tuple[APIClient, APIClient], receiver: Receiver
) -> None:
    hc, lc = world
    subscribe(lc, receiver.url, ["settlement.created", "settlement.updated"])
    post_usage(hc, [record("c-1", revenue="1000.00")])
    run_billing("2026-10")
    run_billing("2026-10")  # the same usage: the same total, no event
    post_usage(hc, [record("c-2", revenue="500.00")])
    with CaptureQueriesContext(connection) as queries:
        run_billing("2026-10")
    deliver()
    assert [(e["type"], e["data"]["object"]["total"]) for e in receiver.events()] == [
        ("settlement.created", "120.00"),
        ("settlement.updated", "180.00"),
    ]
    # the re-run loads no settlement column by column (a deferred field read on its own)
    one_column = re.compile(
        r'SELECT "billing_settlement"\."id", "billing_settlement"\."\w+" FROM "billing_settlement"'
        r' WHERE "billing_settlement"\."id" = '
    )
    assert not [q["sql"] for q in queries.captured_queries if one_column.match(q["sql"])]
    # and the update carries the whole settlement as the API shows it (the run reads drafts
    # with a few columns; the webhook's rendering must not see a partial one)
    updated = receiver.events()[1]["data"]["object"]
    assert updated == lc.get(f"/api/v1/settlements/{updated['id']}").json()


def test_a_change_that_rolls_back_announces_nothing(world: tuple[APIClient, APIClient]) -> None:
    _, lc = world
    subscribe(lc, "https://1.1.1.1/hooks", ["payout.paid"])
    with pytest.raises(RuntimeError), transaction.atomic():
        event = event_emit(
            type="payout.paid",
            licensor=Licensor.objects.get(slug="minimax"),
            host=None,
            object_id="po_1",
            data={"id": "po_1"},
        )
        assert event is not None
        raise RuntimeError("the payout failed to post")
    assert not WebhookEvent.objects.exists()
    assert not WebhookDelivery.objects.exists()


def test_operators_see_the_delivery_log_in_the_admin(
    world: tuple[APIClient, APIClient], receiver: Receiver, admin_client: Any
) -> None:
    hc, lc = world
    subscribe(lc, receiver.url, ["settlement.created"])
    receiver.answers = [500]
    post_usage(hc, [record("c-1", revenue="1000.00")])
    run_billing("2026-10")
    deliver()
    event_id = WebhookEvent.objects.get().id

    page = admin_client.get("/admin/billing/webhookdelivery/")
    assert page.status_code == 200
    assert event_id in page.content.decode()
    assert "HTTP 500" in page.content.decode()
    assert admin_client.get("/admin/billing/webhookendpoint/").status_code == 200

    # "send again" makes a waiting delivery due now; the next run sends the same event
    delivery = WebhookDelivery.objects.get()
    admin_client.post(
        "/admin/billing/webhookdelivery/",
        {"action": "send_again", "_selected_action": [delivery.pk]},
    )
    assert deliver() == "webhooks: 1 delivered, 0 failed (to be retried)\n"
    assert [e["id"] for e in receiver.events()] == [event_id, event_id]


def test_the_beat_task_sends_what_is_due(
    world: tuple[APIClient, APIClient], receiver: Receiver
) -> None:
    hc, lc = world
    subscribe(lc, receiver.url, ["settlement.created"])
    post_usage(hc, [record("c-1", revenue="1000.00")])
    run_billing("2026-10")

    assert deliver_due_webhooks.delay().get() == 1

    assert [e["type"] for e in receiver.events()] == ["settlement.created"]


def test_payout_events_carry_the_payout_with_its_settlements(
    world: tuple[APIClient, APIClient], receiver: Receiver
) -> None:
    # given: MiniMax subscribed to payout events, pays out by bank, its settlement paid by its host
    hc, lc = world
    endpoint = subscribe(lc, receiver.url, ["payout.created", "payout.paid"])
    catalog_import(
        {"licensors": [{"slug": "minimax", "name": "MiniMax", "payout": {"rail": "manual"}}]}
    )
    post_usage(hc, [record("c-1", revenue="1000.00")])
    run_billing("2026-10")
    s = settlement_approve(
        settlement=settlement_of(licensor="minimax", host="fireworks", period="2026-10"),
        actor="test",
    )
    call_command(
        "record_host_payment",
        "--settlement",
        str(s.pk),
        "--reference",
        "IN-1",
        stdout=io.StringIO(),
    )

    # when: the payout is made, recorded paid, and the due deliveries sent
    call_command("run_payouts", "--as-of", "2026-11-05", stdout=io.StringIO())
    payout = Payout.objects.get(licensor__slug="minimax")
    payout_mark_paid(payout_id=str(payout.pk), reference="OUT-1")
    assert deliver() == "webhooks: 2 delivered, 0 failed (to be retried)\n"

    # then: both events carry the payout as the API renders it, its settlement listed
    created, paid = receiver.events()
    assert (created["type"], paid["type"]) == ("payout.created", "payout.paid")
    api = lc.get(f"/api/v1/payouts/{payout.pk}").json()
    assert paid["data"]["object"] == api
    assert [item["id"] for item in created["data"]["object"]["settlements"]] == [str(s.pk)]
    for headers, body in receiver.received:
        assert verify_signature(endpoint["secret"], headers, body)
