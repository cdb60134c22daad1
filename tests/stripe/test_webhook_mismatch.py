"""A signed `invoice.paid` pays a settlement only when it is the invoice we sent: its amount,
currency and customer are checked; a mismatch is recorded for operators, never posted to the
ledger (docs/security.md). Real stripe client, localstripe, signed deliveries."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from billing.invoicing import settlement_invoice
from billing.models import Settlement, StripeEvent
from ledger.models import JournalEntry
from ledger.selectors import party_balances
from tests.stripe.conftest import event_body, sign
from tests.stripe.helpers import api, approve_without_invoicing, billed_settlement

pytestmark = pytest.mark.django_db(transaction=True)


def _post(body: bytes, signature: str) -> Any:
    return Client().post(
        "/webhooks/stripe",
        data=body,
        content_type="application/json",
        HTTP_STRIPE_SIGNATURE=signature,
    )


def _payments() -> int:
    return JournalEntry.objects.filter(reference_type="payment").count()


def _approved() -> Settlement:
    # 12% of 41,756.08 USD = 5,010.7296 → 5,010.73 USD (501,073 cents)
    settlement = approve_without_invoicing(billed_settlement(revenue="41756.08"))
    assert (settlement.status, settlement.total_display) == ("approved", "5010.73")
    return Settlement.objects.select_related("host").get(pk=settlement.pk)


def _pay_a_cent_in_eur_as_another_customer(stripe_world: Any, settlement: Settlement) -> Any:
    """Someone with an invoice of their own in the same Stripe account names our settlement in its
    metadata and pays it: 0.01 EUR. Stripe signs that event like any other."""
    stripe = api()
    other = stripe.v1.customers.create({"name": "Mallory", "metadata": {"tollgate_host": "x"}})
    invoice = stripe.v1.invoices.create(
        {
            "customer": other.id,
            "currency": "eur",
            "collection_method": "send_invoice",
            "days_until_due": 30,
            "metadata": {"tollgate_settlement": str(settlement.pk)},
        }
    )
    stripe.v1.invoice_items.create(
        {"customer": other.id, "invoice": invoice.id, "currency": "eur", "amount": 1}
    )
    stripe.v1.invoices.finalize_invoice(invoice.id)
    stripe.v1.invoices.pay(invoice.id, {"paid_out_of_band": True})
    return stripe_world.wait_for_delivery("invoice.paid", object_id=invoice.id)


def test_a_cent_in_eur_from_another_customer_does_not_pay_the_settlement(
    stripe_world: Any,
) -> None:
    # given: an approved settlement of 5,010.73 USD, its invoice not sent yet
    settlement = _approved()
    delivery = _pay_a_cent_in_eur_as_another_customer(stripe_world, settlement)

    # when
    response = _post(delivery.body, delivery.signature)

    # then: acknowledged (Stripe stops delivering), recorded as a mismatch, nothing paid or posted
    assert response.status_code == 200, response.content
    settlement.refresh_from_db()
    assert (settlement.status, settlement.stripe_invoice_id, settlement.paid_at) == (
        "approved",
        None,
        None,
    )
    assert _payments() == 0
    event = StripeEvent.objects.get()
    assert event.settlement_id == settlement.pk
    assert event.mismatch == (
        "amount_paid 1 != 501073; total 1 != 501073; currency EUR != USD; "
        f"customer {delivery.event['data']['object']['customer']} != "
        f"{settlement.host.stripe_customer_id or '(none)'}"
    )
    assert event.outcome.startswith(f"mismatch: settlement {settlement.pk} not paid")


@pytest.mark.parametrize(
    ("changes", "mismatch"),
    [
        ({"amount_paid": 1}, "amount_paid 1 != 501073"),
        ({"currency": "eur"}, "currency EUR != USD"),
        ({"customer": "cus_mallory"}, "customer cus_mallory != {customer}"),
        ({"amount_paid": None}, "amount_paid (none) != 501073"),
    ],
    ids=["amount", "currency", "customer", "no-amount"],
)
def test_an_event_naming_our_invoice_with_other_terms_does_not_pay_it(
    stripe_world: Any, changes: dict[str, Any], mismatch: str
) -> None:
    # given: the settlement invoiced through Stripe; a signed event names our invoice id but
    # differs from what we sent in one respect
    settlement = settlement_invoice(settlement=_approved())
    assert settlement.status == "invoiced"
    invoice = api().v1.invoices.retrieve(settlement.stripe_invoice_id or "").to_dict()
    invoice.update({"status": "paid", "amount_paid": invoice["total"]}, **changes)
    body = event_body("invoice.paid", invoice, event_id="evt_forged_terms")

    # when
    response = _post(body, sign(body))

    # then
    assert response.status_code == 200
    settlement.refresh_from_db()
    assert settlement.status == "invoiced"
    assert _payments() == 0
    event = StripeEvent.objects.get()
    assert event.mismatch == mismatch.format(customer=settlement.host.stripe_customer_id)


def test_the_right_payment_pays_it_once_after_a_mismatch(stripe_world: Any) -> None:
    # given: the forged cent was refused
    settlement = _approved()
    forged = _pay_a_cent_in_eur_as_another_customer(stripe_world, settlement)
    _post(forged.body, forged.signature)

    # when: the invoice goes out, the host pays it, Stripe delivers the event twice
    invoiced = settlement_invoice(settlement=settlement)
    invoice_id = invoiced.stripe_invoice_id or ""
    api().v1.invoices.pay(invoice_id, {"paid_out_of_band": True})
    delivery = stripe_world.wait_for_delivery("invoice.paid", object_id=invoice_id)
    first = _post(delivery.body, delivery.signature)
    second = _post(delivery.body, delivery.signature)

    # then: paid once, 501,073 cents of cash
    assert (first.json()["duplicate"], second.json()["duplicate"]) == (False, True)
    settlement.refresh_from_db()
    assert settlement.status == "paid"
    assert _payments() == 1
    assert party_balances(owner=None)["USD"]["cash"] == 501073
    assert StripeEvent.objects.get(object_id=invoice_id).mismatch == ""


def test_operators_find_the_mismatch_in_the_admin(stripe_world: Any) -> None:
    # given
    settlement = _approved()
    forged = _pay_a_cent_in_eur_as_another_customer(stripe_world, settlement)
    _post(forged.body, forged.signature)
    operator = User.objects.create_superuser("operator", password="pw")
    client = Client()
    client.force_login(operator)

    # when
    events = client.get("/admin/billing/stripeevent/?mismatched=yes")
    settlement_page = client.get(f"/admin/billing/settlement/{settlement.pk}/change/")

    # then: listed under the filter, and a warning on the settlement's page
    assert events.status_code == 200
    assert list(events.context["cl"].queryset.values_list("event_id", flat=True)) == [
        forged.event["id"]
    ]
    assert b"currency EUR != USD" in events.content
    assert settlement_page.status_code == 200
    assert b"did not match this settlement" in settlement_page.content
