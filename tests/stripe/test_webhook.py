"""POST /webhooks/stripe: a signed `invoice.paid` marks the settlement paid and posts the payment
to the ledger, once; deliveries come from localstripe, signed as Stripe signs them."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client

from billing.invoicing import settlement_invoice
from billing.models import Settlement, StripeEvent
from billing.review import settlement_approve
from ledger.models import JournalEntry
from ledger.selectors import party_balances, trial_balance
from tests.stripe.conftest import event_body, sign
from tests.stripe.helpers import api, approve_without_invoicing, billed_settlement
from tests.stripe.localstripe_ext import Delivery

pytestmark = pytest.mark.django_db(transaction=True)


def _post(body: bytes, signature: str | None) -> Any:
    headers = {"HTTP_STRIPE_SIGNATURE": signature} if signature is not None else {}
    return Client().post("/webhooks/stripe", data=body, content_type="application/json", **headers)


def _invoiced() -> Settlement:
    draft = billed_settlement(revenue="75300.00")
    settlement_approve(settlement=draft, actor="test")
    settlement = Settlement.objects.select_related("host").get(pk=draft.pk)
    assert settlement.status == "invoiced"
    return settlement


def _host_pays(stripe_world: Any, invoice_id: str, event_type: str = "invoice.paid") -> Delivery:
    """The host pays by bank transfer; Stripe delivers the signed event."""
    api().v1.invoices.pay(invoice_id, {"paid_out_of_band": True})
    delivery: Delivery = stripe_world.wait_for_delivery(event_type, object_id=invoice_id)
    return delivery


def _payments() -> int:
    return JournalEntry.objects.filter(reference_type="payment").count()


def test_it_marks_the_settlement_paid_and_posts_the_payment(stripe_world: Any) -> None:
    # given: an invoiced settlement (accrual: host receivable 903,600 cents)
    settlement = _invoiced()
    delivery = _host_pays(stripe_world, settlement.stripe_invoice_id or "")

    # when
    response = _post(delivery.body, delivery.signature)

    # then: paid, the receivable settled by cash
    assert response.status_code == 200, response.content
    assert response.json() == {"received": True, "duplicate": False}
    settlement.refresh_from_db()
    assert settlement.status == "paid" and settlement.paid_at
    assert party_balances(owner=settlement.host) == {"USD": {"receivable": 0}}
    assert party_balances(owner=None)["USD"]["cash"] == 903600
    assert trial_balance() == {"USD": 0}
    assert StripeEvent.objects.get().outcome == f"settlement {settlement.pk} paid"
    # and its history records each step, the invoice's id with the last two
    events = list(settlement.events.values_list("action", "detail"))
    assert [a for a, _ in events][-3:] == ["approved", "invoiced", "paid"]
    assert events[-1][1] == {"invoice": settlement.stripe_invoice_id}


def test_it_processes_an_event_delivered_twice_once(stripe_world: Any) -> None:
    # given
    settlement = _invoiced()
    delivery = _host_pays(stripe_world, settlement.stripe_invoice_id or "")

    # when: Stripe delivers the same event again (it delivers at least once)
    first = _post(delivery.body, delivery.signature)
    second = _post(delivery.body, delivery.signature)

    # then
    assert (first.status_code, second.status_code) == (200, 200)
    assert second.json() == {"received": True, "duplicate": True}
    assert StripeEvent.objects.count() == 1
    assert _payments() == 1
    assert party_balances(owner=None)["USD"]["cash"] == 903600


def test_it_posts_one_payment_for_the_old_and_new_paid_events(stripe_world: Any) -> None:
    # given: Stripe sends both invoice.payment_succeeded (old shape) and invoice.paid
    settlement = _invoiced()
    invoice_id = settlement.stripe_invoice_id or ""
    paid = _host_pays(stripe_world, invoice_id)
    succeeded = stripe_world.wait_for_delivery("invoice.payment_succeeded", object_id=invoice_id)

    # when
    responses = [_post(d.body, d.signature) for d in (succeeded, paid)]

    # then: two events recorded, one payment
    assert [r.status_code for r in responses] == [200, 200]
    assert StripeEvent.objects.count() == 2
    assert _payments() == 1
    settlement.refresh_from_db()
    assert settlement.status == "paid"


def _signed_ago(seconds: int) -> Callable[[bytes], str]:
    """A correct signature of the body, made `seconds` before the test posts it."""
    return lambda body: sign(body, at=int(time.time()) - seconds)


@pytest.mark.parametrize(
    "signature",
    [
        lambda body: None,
        _signed_ago(301),
        lambda body: sign(body, secret="whsec_someone_else"),
        lambda body: "garbage",
        lambda body: sign(b"another body"),
    ],
    ids=["missing", "stale", "other-secret", "malformed", "other-body"],
)
def test_it_refuses_a_bad_signature_and_changes_nothing(
    stripe_world: Any, signature: Callable[[bytes], str | None]
) -> None:
    # given
    settlement = _invoiced()
    delivery = _host_pays(stripe_world, settlement.stripe_invoice_id or "")

    # when: the body Stripe sent, under a signature that is wrong in one way
    response = _post(delivery.body, signature(delivery.body))

    # then
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "bad_signature"
    settlement.refresh_from_db()
    assert settlement.status == "invoiced"
    assert StripeEvent.objects.count() == 0
    assert _payments() == 0


def test_it_accepts_a_signature_made_within_the_5_minute_tolerance(stripe_world: Any) -> None:
    # given: the payment's delivery, signed 4 minutes 50 seconds before it arrives
    settlement = _invoiced()
    delivery = _host_pays(stripe_world, settlement.stripe_invoice_id or "")

    # when
    response = _post(delivery.body, _signed_ago(290)(delivery.body))

    # then: the same body signed 301 s earlier is refused above; this one is processed
    assert response.status_code == 200, response.content
    settlement.refresh_from_db()
    assert settlement.status == "paid"


def test_it_acknowledges_an_unknown_invoice_and_other_events(stripe_world: Any) -> None:
    # given: a signed event about an invoice Tollgate never sent, and an event it ignores
    unknown = event_body(
        "invoice.paid",
        {"id": "in_unknown", "object": "invoice", "metadata": {}, "amount_paid": 100},
        event_id="evt_unknown_invoice",
    )
    other = event_body(
        "customer.created", {"id": "cus_1", "object": "customer"}, event_id="evt_other"
    )

    # when
    responses = [_post(body, sign(body)) for body in (unknown, other)]

    # then: 200 (Stripe stops delivering), recorded with what was (not) done
    assert [r.status_code for r in responses] == [200, 200]
    assert dict(StripeEvent.objects.values_list("event_id", "outcome")) == {
        "evt_unknown_invoice": "ignored: unknown invoice",
        "evt_other": "ignored: not an event Tollgate acts on",
    }
    assert _payments() == 0


def test_it_marks_paid_an_invoice_paid_before_we_recorded_it(stripe_world: Any) -> None:
    # given: the invoice went out and was paid, but our record of it was lost (a crash)
    settlement = approve_without_invoicing(billed_settlement(revenue="75300.00"))
    from billing import stripe_gateway
    from billing.invoicing import invoice_lines

    sent = stripe_gateway.invoice_send(
        settlement_id=str(settlement.pk),
        host=settlement.host,
        currency="USD",
        description="lost",
        lines=invoice_lines(settlement),
        days_until_due=30,
    )
    delivery = _host_pays(stripe_world, sent.id)

    # when: the webhook finds it by metadata, then the retried invoicing runs
    response = _post(delivery.body, delivery.signature)
    after = settlement_invoice(settlement=settlement)

    # then: invoiced and paid in one go, the retry changes nothing
    assert response.status_code == 200
    assert (after.status, after.stripe_invoice_id) == ("paid", sent.id)
    assert _payments() == 1
    actions = list(settlement.events.values_list("action", flat=True))
    assert actions[-2:] == ["invoiced", "paid"]


def test_it_answers_503_while_no_webhook_secret_is_set(stripe_world: Any, settings: Any) -> None:
    # given
    settings.STRIPE_WEBHOOK_SECRET = ""
    body = event_body("invoice.paid", {"id": "in_x", "object": "invoice"}, event_id="evt_x")

    # when
    response = _post(body, sign(body))

    # then
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "not_configured"
