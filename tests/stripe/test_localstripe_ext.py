"""The localstripe extension on its own (tests/stripe/localstripe_ext.py): each added behaviour,
through the real stripe client, as Stripe documents it."""

from __future__ import annotations

import importlib
import json
import typing
from typing import Any

import pytest
import stripe
from stripe._object_classes import OBJECT_CLASSES

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
    # days_until_due is a parameter; the Invoice object has the date it sets (Stripe: "the number
    # of days from when the invoice is created until it is due")
    assert invoice.due_date == invoice.created + 30 * 86400
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


# --- Stripe's shape: every field checked against stripe-python's typed classes -----------------
# Written apart from the extension's own `shaped`, so that a mistake there cannot hide here.


def _fields_of(cls: type) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for klass in cls.__mro__:
        for name, annotation in vars(klass).get("__annotations__", {}).items():
            fields.setdefault(name, annotation)
    fields.pop("OBJECT_NAME", None)
    return fields


def _nested_class(annotation: Any) -> type | None:
    if isinstance(annotation, typing.ForwardRef):
        return _nested_class(getattr(stripe, annotation.__forward_arg__))
    for candidate in (annotation, typing.get_origin(annotation), *typing.get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, stripe.StripeObject):
            return None if candidate.__name__.startswith("Untyped") else candidate
        if candidate is not annotation and typing.get_args(candidate):
            found = _nested_class(candidate)
            if found is not None:
                return found
    return None


def undeclared(value: Any, cls: type | None = None, path: str = "$") -> list[str]:
    """The paths of every field in `value` that Stripe's typed classes do not declare, and of
    every `object` that is not one of Stripe's."""
    if isinstance(value, list):
        return [p for i, item in enumerate(value) for p in undeclared(item, cls, f"{path}[{i}]")]
    if not isinstance(value, dict):
        return []
    kind = value.get("object")
    if isinstance(kind, str):
        if kind not in OBJECT_CLASSES:
            return [f"{path}: {kind!r} is not a Stripe object"]
        module, name = OBJECT_CLASSES[kind]
        cls = getattr(importlib.import_module(module), name)
    if cls is None:  # free-form, e.g. metadata
        return [p for key, item in value.items() for p in undeclared(item, None, f"{path}.{key}")]
    fields = _fields_of(cls)
    problems = []
    for key, item in value.items():
        if key == "object" and isinstance(item, str):
            continue
        if key not in fields:
            problems.append(f"{path}.{key} ({cls.__name__})")
        else:
            problems += undeclared(item, _nested_class(fields[key]), f"{path}.{key}")
    return problems


def test_the_checker_names_a_field_stripe_does_not_declare() -> None:
    # given: localstripe's own invoice fields of the 2017 API, and one of today's nested fields
    old = {"object": "invoice", "id": "in_1", "date": 1, "paid": True, "lines": {
        "object": "list", "data": [{"object": "line_item", "plan": None}], "has_more": False}}
    nested = {"object": "invoice", "status_transitions": {"finalized_at": 1, "sent_at": 2}}

    # then
    assert undeclared(old) == [
        "$.date (Invoice)", "$.paid (Invoice)", "$.lines.data[0].plan (InvoiceLineItem)"
    ]
    assert undeclared(nested) == ["$.status_transitions.sent_at (StatusTransitions)"]
    assert undeclared({"object": "thing"}) == ["$: 'thing' is not a Stripe object"]


def test_every_field_it_returns_is_one_stripe_declares(
    api: stripe.StripeClient, stripe_server: Any
) -> None:
    # given: the whole invoicing flow of billing/stripe_gateway.py, and a payment
    customer = api.v1.customers.create(
        {"email": "a@example.com", "metadata": {"tollgate_host": "h"}}, {"idempotency_key": "c"}
    )
    invoice = _draft(api, customer.id, auto_advance=False, pending_invoice_items_behavior="exclude")
    item = api.v1.invoice_items.create(
        {"customer": customer.id, "invoice": invoice.id, "currency": "usd", "amount": 700,
         "description": "12% of net revenue", "metadata": {"tollgate_line": "1"}},
        {"idempotency_key": "i"},
    )
    replayed = api.v1.invoice_items.create(
        {"customer": customer.id, "invoice": invoice.id, "currency": "usd", "amount": 700,
         "description": "12% of net revenue", "metadata": {"tollgate_line": "1"}},
        {"idempotency_key": "i"},
    )
    responses = [
        customer,
        invoice,
        item,
        replayed,
        api.v1.invoices.line_items.list(invoice.id),
        api.v1.invoices.retrieve(invoice.id),
        api.v1.invoices.finalize_invoice(invoice.id, {"auto_advance": False}),
        api.v1.invoices.send_invoice(invoice.id),
        api.v1.invoices.pay(invoice.id, {"paid_out_of_band": True}),
        api.v1.invoices.list({"customer": customer.id, "limit": 100}),
        api.v1.invoice_items.list({"customer": customer.id}),
    ]
    stripe_server.wait_for_delivery("invoice.paid", object_id=invoice.id)
    responses.append(api.v1.events.list())

    # when: every body the server sent, and every webhook payload, as raw JSON
    bodies = [json.loads(r.last_response.body) for r in responses]
    from tests.stripe.localstripe_ext import deliveries

    events = [d.event for d in deliveries]

    # then: not one field Stripe does not declare, and the events of the flow were all sent
    assert [undeclared(body) for body in bodies] == [[]] * len(bodies)
    assert [undeclared(event) for event in events] == [[]] * len(events)
    assert {e["type"] for e in events} >= {
        "invoice.created", "invoice.finalized", "invoice.sent", "invoice.paid"
    }
    assert {e["api_version"] for e in events} == {stripe.api_version}


def test_it_transfers_to_a_connected_account_and_finds_it_by_transfer_group(
    api: stripe.StripeClient,
) -> None:
    # given: a connected account
    account = api.v1.accounts.create({"type": "express", "country": "US"})

    # when: a transfer, the same request again under its key, and one to an unknown account
    params: Any = {
        "amount": 858420,
        "currency": "usd",
        "destination": account.id,
        "transfer_group": "payout-1",
        "metadata": {"tollgate_payout": "payout-1"},
    }
    transfer = api.v1.transfers.create(params, {"idempotency_key": "t-1"})
    replayed = api.v1.transfers.create(params, {"idempotency_key": "t-1"})
    with pytest.raises(stripe.InvalidRequestError, match="No such destination") as refused:
        api.v1.transfers.create({**params, "destination": "acct_unknown"})
    listed = api.v1.transfers.list({"transfer_group": "payout-1"})
    other_group = api.v1.transfers.list({"transfer_group": "payout-2"})

    # then: one transfer, found by its group, with Stripe's fields only
    assert account.id.startswith("acct_")
    assert (transfer.amount, transfer.currency, transfer.destination) == (858420, "usd", account.id)
    assert transfer.transfer_group == "payout-1"
    assert transfer.metadata["tollgate_payout"] == "payout-1"
    assert replayed.id == transfer.id
    assert refused.value.code == "resource_missing"
    assert [t.id for t in listed.data] == [transfer.id]
    assert other_group.data == []
    assert api.v1.transfers.retrieve(transfer.id).id == transfer.id
    reversal = api.v1.transfers.reversals.create(transfer.id, {"amount": 420})
    reversed_transfer = api.v1.transfers.retrieve(transfer.id)
    assert (reversal.amount, reversal.transfer) == (420, transfer.id)
    assert (reversed_transfer.amount_reversed, reversed_transfer.reversed) == (420, False)
    responses = (account, transfer, listed, replayed, reversal, reversed_transfer)
    bodies = [json.loads(r.last_response.body) for r in responses]
    assert [undeclared(body) for body in bodies] == [[]] * len(bodies)


def test_a_card_paid_invoice_is_found_by_its_payment_and_a_refund_emits_charge_refunded(
    api: stripe.StripeClient, stripe_server: Any
) -> None:
    # given: an invoice of 700 paid with the customer's card
    customer = api.v1.customers.create({"email": "a@example.com"})
    card = api.v1.payment_methods.attach("pm_card_visa", {"customer": customer.id})
    api.v1.customers.update(customer.id, {"invoice_settings": {"default_payment_method": card.id}})
    invoice = _draft(api, customer.id)
    api.v1.invoice_items.create(
        {"customer": customer.id, "invoice": invoice.id, "currency": "usd", "amount": 700}
    )
    api.v1.invoices.finalize_invoice(invoice.id)
    api.v1.invoices.pay(invoice.id)
    paid = json.loads(stripe_server.wait_for_delivery("invoice.paid", object_id=invoice.id).body)[
        "data"
    ]["object"]

    # when: the invoice's payments, and a partial refund of its charge
    (payment,) = api.v1.invoice_payments.list({"invoice": invoice.id}).data
    by_intent = api.v1.invoice_payments.list(
        {"payment": {"type": "payment_intent", "payment_intent": payment.payment.payment_intent}}
    )
    charges = api.v1.charges.list({"customer": customer.id})
    charge = charges.data[0]
    refund = api.v1.refunds.create({"charge": charge.id, "amount": 300})
    event = stripe_server.wait_for_delivery("charge.refunded", object_id=charge.id).event

    # then: one paid payment of the invoice, found by its payment intent; the event carries the
    # charge with its cumulative amount refunded and its payment intent, in Stripe's fields only
    assert paid["status"] == "paid"
    assert (payment.invoice, payment.status, payment.amount_paid) == (invoice.id, "paid", 700)
    assert [p.invoice for p in by_intent.data] == [invoice.id]
    assert (
        api.v1.invoice_payments.list(
            {"payment": {"type": "payment_intent", "payment_intent": "pi_other"}}
        ).data
        == []
    )
    refunded = event["data"]["object"]
    assert (refund.amount, refund.charge) == (300, charge.id)
    assert (refunded["amount"], refunded["amount_refunded"], refunded["refunded"]) == (
        700,
        300,
        False,
    )
    assert refunded["payment_intent"] == payment.payment.payment_intent
    bodies = [json.loads(r.last_response.body) for r in (by_intent, refund, charges)]
    assert [undeclared(body) for body in [*bodies, event]] == [[]] * 4
