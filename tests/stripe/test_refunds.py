"""A refund of a host's Stripe payment (docs/payouts.md, "Refunds"): Stripe's `charge.refunded`
reverses the refunded part of the payment in the ledger and takes the licensor's share back from
its next payout. The real stripe client against localstripe; the host pays its invoice by card."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import pytest
from django.test import Client
from rest_framework.test import APIClient

from billing.models import Payout, PayoutAdjustment, Settlement, StripeEvent
from billing.payouts import host_payment_record, payout_mark_paid, run_payouts
from billing.refund_models import SettlementRefund
from billing.review import settlement_approve
from ledger.models import JournalEntry
from ledger.selectors import party_balances
from ledger.verify import verify_books
from licensing.catalog import catalog_import
from licensing.services import api_key_create
from tests.billing.conftest import minimax_catalog, post_usage, record, run_billing, settlement_of
from tests.billing.test_workspace import reviewer_of
from tests.stripe.conftest import event_body, sign
from tests.stripe.helpers import api, billed_settlement

pytestmark = pytest.mark.django_db(transaction=True)

DAY = dt.date(2026, 11, 5)
# October: 12% of 75,300.00 = 9,036.00; 5% fee 451.80; 10% withholding of 8,584.20 = 858.42.
TOTAL, FEE, WITHHOLDING, NET = 903600, 45180, 85842, 772578


def _manual_licensor() -> None:
    catalog = minimax_catalog()
    catalog["licensors"][0]["payout"] = {
        "rail": "manual",
        "withholding_percent": "10",
        "platform_fee_percent": "5",
    }
    catalog_import(catalog)


def _deliver(delivery: Any) -> dict[str, Any]:
    response = Client().post(
        "/webhooks/stripe",
        data=delivery.body,
        content_type="application/json",
        HTTP_STRIPE_SIGNATURE=delivery.signature,
    )
    assert response.status_code == 200, response.content
    body: dict[str, Any] = response.json()
    return body


def _paid_by_card(stripe_world: Any) -> tuple[Settlement, str]:
    """October approved, invoiced through Stripe and paid with the host's card; invoice.paid
    delivered. Returns the settlement and the charge's id."""
    _manual_licensor()
    draft = billed_settlement(revenue="75300.00")
    settlement_approve(settlement=draft, actor="test")
    settlement = Settlement.objects.select_related("host").get(pk=draft.pk)
    customer = settlement.host.stripe_customer_id or ""
    card = api().v1.payment_methods.attach("pm_card_visa", {"customer": customer})
    api().v1.customers.update(customer, {"invoice_settings": {"default_payment_method": card.id}})
    invoice_id = settlement.stripe_invoice_id or ""
    api().v1.invoices.pay(invoice_id)
    _deliver(stripe_world.wait_for_delivery("invoice.paid", object_id=invoice_id))
    settlement.refresh_from_db()
    assert settlement.status == "paid"
    (charge,) = api().v1.charges.list({"customer": customer}).data
    assert charge.amount == TOTAL
    return settlement, str(charge.id)


def _refund(stripe_world: Any, charge_id: str, amount: int) -> Any:
    """A refund made on Stripe (the dashboard's button); returns its charge.refunded delivery
    (localstripe sends one per refund, carrying the charge as it is then)."""
    from tests.stripe.localstripe_ext import deliveries

    def refunded() -> list[Any]:
        return [d for d in deliveries if d.event["type"] == "charge.refunded"]

    before = len(refunded())
    api().v1.refunds.create({"charge": charge_id, "amount": amount})
    deadline = time.monotonic() + 5
    while len(refunded()) == before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(refunded()) == before + 1, "no charge.refunded delivery"
    return refunded()[-1]


def test_a_refund_before_the_payout_reduces_it(stripe_world: Any) -> None:
    # given: October paid by card
    settlement, charge_id = _paid_by_card(stripe_world)

    # when: a tenth of it refunded (903.60), then the payout run
    body = _deliver(_refund(stripe_world, charge_id, 90360))
    (payout,) = run_payouts(as_of=DAY)

    # then: fee 45.18 and withholding 85.84 (a tenth, each rounded once) are given back, and the
    # licensor's share 772.58 is taken from the payout: 7,725.78 - 772.58 = 6,953.20
    assert body["duplicate"] is False
    (refund,) = SettlementRefund.objects.all()
    assert (refund.amount_minor, refund.platform_fee_minor, refund.withholding_minor) == (
        90360,
        4518,
        8584,
    )
    assert refund.licensor_share_minor == 77258
    assert (payout.gross_minor, payout.carried_forward_minor) == (TOTAL, -77258)
    assert payout.net_minor == NET - 77258 == 695320
    settlement.refresh_from_db()
    assert settlement.status == "paid"
    # and: the refund is in the settlement's history, after its payment
    history = list(settlement.events.order_by("at", "id").values_list("actor", "action", "detail"))
    assert [a for _, a, _ in history][-2:] == ["paid", "refunded"]
    assert history[-1] == (
        "stripe",
        "refunded",
        {
            "charge": charge_id,
            "amount": "903.60",
            "refunded in all": "903.60",
            "licensor share": "772.58",
        },
    )
    payout_mark_paid(payout_id=str(payout.pk), reference="BANK-OUT-1")
    page = reviewer_of("minimax").get("/admin/payouts/").content.decode()
    assert ">-772.58<" in page  # carried forward
    assert ">6,953.20<" in page and ">903.60<" in page  # net; refunded to the host
    assert party_balances(owner=settlement.licensor) == {"USD": {"payable": 0}}
    assert party_balances(owner=settlement.host) == {"USD": {"receivable": 0}}
    assert party_balances(owner=None) == {
        "USD": {
            "cash": TOTAL - 90360 - 695320,
            "platform_revenue": -(FEE - 4518),
            "tax_payable": -(WITHHOLDING - 8584),
        }
    }
    assert verify_books().ok


def test_a_refund_after_the_payout_is_taken_from_the_next_one(stripe_world: Any) -> None:
    # given: October paid by card and paid out (7,725.78)
    settlement, charge_id = _paid_by_card(stripe_world)
    (october,) = run_payouts(as_of=DAY)
    payout_mark_paid(payout_id=str(october.pk), reference="BANK-OUT-1")

    # when: the whole payment refunded, in two refunds (4,518.00 then the rest)
    _deliver(_refund(stripe_world, charge_id, 451800))
    _deliver(_refund(stripe_world, charge_id, TOTAL - 451800))

    # then: the fee and withholding come back exactly; the licensor owes its whole net back,
    # which waits: no payout while the balance is negative
    refunds = list(SettlementRefund.objects.order_by("cumulative_minor"))
    assert [r.cumulative_minor for r in refunds] == [451800, TOTAL]
    assert sum(r.platform_fee_minor for r in refunds) == FEE
    assert sum(r.withholding_minor for r in refunds) == WITHHOLDING
    assert sum(r.licensor_share_minor for r in refunds) == NET
    assert run_payouts(as_of=DAY + dt.timedelta(days=1)) == []
    assert party_balances(owner=settlement.licensor) == {"USD": {"payable": NET}}
    assert verify_books().ok

    # given: November billed (12% of 100,000.00 = 12,000.00), approved (so invoiced), and paid by
    # bank transfer
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {api_key_create(host=settlement.host).key}")
    post_usage(client, [record("c-nov", revenue="100000.00", at="2026-11-10T12:00:00Z")])
    run_billing("2026-11")
    november = settlement_of(licensor="minimax", host="fireworks", period="2026-11")
    settlement_approve(settlement=november, actor="test")
    host_payment_record(settlement_id=str(november.pk), reference="BANK-NOV")

    # when: the December run
    (december,) = run_payouts(as_of=dt.date(2026, 12, 5))

    # then: November's net (fee 600.00, withholding 1,140.00: 10,260.00) less October's refund
    assert december.carried_forward_minor == -NET
    assert december.net_minor == 1026000 - NET
    payout_mark_paid(payout_id=str(december.pk), reference="BANK-OUT-2")
    assert party_balances(owner=settlement.licensor) == {"USD": {"payable": 0}}
    assert verify_books().ok


def test_the_same_refund_delivered_twice_or_told_twice_posts_once(stripe_world: Any) -> None:
    # given: October paid by card, a refund of 903.60 delivered
    settlement, charge_id = _paid_by_card(stripe_world)
    delivery = _refund(stripe_world, charge_id, 90360)
    _deliver(delivery)
    entries = JournalEntry.objects.count()

    # when: Stripe delivers that event again, and another event about the same refund arrives
    again = _deliver(delivery)
    charge = delivery.event["data"]["object"]
    other = event_body("charge.refunded", charge, event_id="evt_other_about_same_refund")
    response = Client().post(
        "/webhooks/stripe",
        data=other,
        content_type="application/json",
        HTTP_STRIPE_SIGNATURE=sign(other),
    )

    # then: one refund, one adjustment, one ledger entry
    assert again["duplicate"] is True
    assert response.status_code == 200 and response.json()["duplicate"] is False
    other_event = StripeEvent.objects.get(event_id="evt_other_about_same_refund")
    assert other_event.outcome.endswith("refund already recorded")
    assert other_event.settlement_id == settlement.pk  # for operators: admin, Stripe events
    assert SettlementRefund.objects.count() == 1
    assert PayoutAdjustment.objects.filter(source__startswith="refund:").count() == 1
    assert JournalEntry.objects.count() == entries
    assert settlement.events.filter(action="refunded").count() == 1
    assert verify_books().ok


def test_a_refund_of_a_charge_that_is_not_the_settlements_is_not_posted(
    stripe_world: Any,
) -> None:
    # given: October paid by card
    _, charge_id = _paid_by_card(stripe_world)
    delivery = _refund(stripe_world, charge_id, 90360)
    charge = dict(delivery.event["data"]["object"])

    # when: an event about that charge claiming more than the payment, in another currency
    forged = event_body(
        "charge.refunded",
        {**charge, "amount_refunded": TOTAL + 1, "currency": "eur"},
        event_id="evt_forged_refund",
    )
    response = Client().post(
        "/webhooks/stripe",
        data=forged,
        content_type="application/json",
        HTTP_STRIPE_SIGNATURE=sign(forged),
    )

    # then: acknowledged, recorded for an operator, nothing posted
    assert response.status_code == 200
    event = StripeEvent.objects.get(event_id="evt_forged_refund")
    assert event.outcome.startswith("mismatch")
    assert "currency EUR != USD" in event.mismatch
    assert f"amount_refunded {TOTAL + 1}" in event.mismatch
    assert not SettlementRefund.objects.exists()
    assert not Payout.objects.exists()
    assert verify_books().ok


def test_a_refund_of_a_charge_of_no_invoice_of_ours_is_acknowledged_and_ignored(
    stripe_world: Any, settings: Any
) -> None:
    # given: October paid by card and refunded; then a charge that paid no invoice
    _, charge_id = _paid_by_card(stripe_world)
    charge = dict(_refund(stripe_world, charge_id, 90360).event["data"]["object"])
    stray = event_body(
        "charge.refunded",
        {**charge, "id": "ch_stray", "payment_intent": None},
        event_id="evt_stray_refund",
    )

    # when: the stray charge's event, and the real one while no API key is configured (the
    # invoice cannot be asked for)
    stray_response = Client().post(
        "/webhooks/stripe",
        data=stray,
        content_type="application/json",
        HTTP_STRIPE_SIGNATURE=sign(stray),
    )
    settings.STRIPE_API_KEY = ""
    real = event_body("charge.refunded", charge, event_id="evt_refund_without_key")
    real_response = Client().post(
        "/webhooks/stripe",
        data=real,
        content_type="application/json",
        HTTP_STRIPE_SIGNATURE=sign(real),
    )

    # then: both acknowledged, recorded as ignored, nothing posted
    assert stray_response.status_code == real_response.status_code == 200
    outcomes = StripeEvent.objects.filter(
        event_id__in=["evt_stray_refund", "evt_refund_without_key"]
    ).values_list("outcome", flat=True)
    assert set(outcomes) == {"ignored: the charge paid no invoice of ours"}
    assert not SettlementRefund.objects.exists()
    assert verify_books().ok
