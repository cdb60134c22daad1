"""The localstripe extension on its own (tests/stripe/localstripe_ext.py): each added behaviour,
through the real stripe client, as Stripe documents it."""

from __future__ import annotations

from typing import Any

import pytest
import stripe

from tests.stripe.conftest import API_KEY, WEBHOOK_SECRET
from tests.stripe.localstripe_ext import reset


@pytest.fixture
def api(stripe_server: Any) -> stripe.StripeClient:
    reset()
    stripe_server.capture_webhooks(secret=WEBHOOK_SECRET)
    base = stripe_server.base
    return stripe.StripeClient(
        API_KEY, base_addresses={"api": base, "connect": base, "files": base}, max_network_retries=0
    )


def _draft(api: stripe.StripeClient, customer: str, **extra: Any) -> Any:
    return api.v1.invoices.create(
        {
            "customer": customer,
            "currency": "usd",
            "collection_method": "send_invoice",
            "days_until_due": 30,
            "metadata": {"k": "v"},
            **extra,
        }
    )


def test_it_creates_a_draft_invoice_without_a_subscription_leaving_pending_items(
    api: stripe.StripeClient,
) -> None:
    # given: a customer with a pending item
    customer = api.v1.customers.create({"email": "a@example.com"})
    api.v1.invoice_items.create({"customer": customer.id, "currency": "usd", "amount": 500})

    # when
    invoice = _draft(api, customer.id)

    # then: Stripe's default pending_invoice_items_behavior (exclude) left the item pending
    assert invoice.status == "draft"
    assert invoice.collection_method == "send_invoice"
    assert invoice.days_until_due == 30
    assert invoice.metadata["k"] == "v"
    assert invoice.total == 0
    assert len(api.v1.invoice_items.list({"customer": customer.id}).data) == 1


def test_it_adds_items_to_the_named_draft_then_finalizes_and_sends(
    api: stripe.StripeClient,
) -> None:
    # given
    customer = api.v1.customers.create({"email": "a@example.com"})
    invoice = _draft(api, customer.id)

    # when
    for amount in (1250, -250):
        api.v1.invoice_items.create(
            {
                "customer": customer.id,
                "invoice": invoice.id,
                "currency": "usd",
                "amount": amount,
                "metadata": {"tollgate_line": str(amount)},
            }
        )
    finalized = api.v1.invoices.finalize_invoice(invoice.id)
    sent = api.v1.invoices.send_invoice(invoice.id)

    # then
    assert finalized.status == "open"
    assert finalized.total == 1000
    lines = api.v1.invoices.line_items.list(invoice.id).data
    assert sorted(line.metadata["tollgate_line"] for line in lines) == ["-250", "1250"]
    assert sent.status == "open"
    with pytest.raises(stripe.InvalidRequestError):  # no items on a finalized invoice
        api.v1.invoice_items.create(
            {"customer": customer.id, "invoice": invoice.id, "currency": "usd", "amount": 1}
        )
    with pytest.raises(stripe.InvalidRequestError):  # finalized once
        api.v1.invoices.finalize_invoice(invoice.id)


def test_it_replays_a_repeated_idempotency_key_and_refuses_other_parameters(
    api: stripe.StripeClient,
) -> None:
    # given
    first = api.v1.customers.create({"name": "Fireworks"}, {"idempotency_key": "key-1"})

    # when
    again = api.v1.customers.create({"name": "Fireworks"}, {"idempotency_key": "key-1"})

    # then: the same customer, one in the store; other parameters with the key are refused
    assert again.id == first.id
    assert len(api.v1.customers.list().data) == 1
    with pytest.raises(stripe.IdempotencyError):
        api.v1.customers.create({"name": "Other"}, {"idempotency_key": "key-1"})


def test_it_pays_out_of_band_and_delivers_a_signed_invoice_paid(
    api: stripe.StripeClient, stripe_server: Any
) -> None:
    # given: an open invoice
    customer = api.v1.customers.create({"email": "a@example.com"})
    invoice = _draft(api, customer.id)
    api.v1.invoice_items.create(
        {"customer": customer.id, "invoice": invoice.id, "currency": "usd", "amount": 700}
    )
    api.v1.invoices.finalize_invoice(invoice.id)

    # when
    paid = api.v1.invoices.pay(invoice.id, {"paid_out_of_band": True})

    # then: paid, and invoice.paid delivered with a signature Stripe's own check accepts
    assert paid.status == "paid"
    delivery = stripe_server.wait_for_delivery("invoice.paid", object_id=invoice.id)
    event = stripe.Webhook.construct_event(delivery.body, delivery.signature, WEBHOOK_SECRET)
    assert event["type"] == "invoice.paid"
    assert event["data"]["object"]["amount_paid"] == 700
