"""Payouts on the stripe_connect rail (docs/payouts.md): the host pays its Stripe invoice, the
payout is a Stripe transfer to the licensor's connected account, the ledger balances; a crash
between the transfer and our commit is healed by finding the transfer; a refused transfer fails
the payout and carries its net into the next one. The real stripe client against localstripe."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from billing import payouts
from billing.models import Payout, PayoutAdjustment, Settlement, StripeEvent
from billing.payouts import SENDING_LEASE, run_payouts
from billing.review import settlement_approve
from ledger.selectors import party_balances
from ledger.verify import verify_books
from licensing.catalog import catalog_import
from licensing.models import Licensor
from tests.billing.conftest import minimax_catalog
from tests.stripe.conftest import event_body, sign
from tests.stripe.helpers import api, billed_settlement

pytestmark = pytest.mark.django_db(transaction=True)

DAY = dt.date(2026, 11, 5)


def _connected_licensor(*, fee: str = "5", withholding: str = "10") -> str:
    """MiniMax's catalog with a Connect payout node (a later import without `payout`, as
    billed_settlement's, keeps it); returns the connected account's id."""
    account = api().v1.accounts.create({"type": "express", "country": "US"})
    catalog = minimax_catalog()
    catalog["licensors"][0]["payout"] = {
        "rail": "stripe_connect",
        "stripe_account": account.id,
        "withholding_percent": withholding,
        "platform_fee_percent": fee,
    }
    catalog_import(catalog)
    return str(account.id)


def _paid_by_stripe(stripe_world: Any) -> Settlement:
    """October (9,036.00) approved, invoiced through Stripe and paid; the webhook delivered."""
    draft = billed_settlement(revenue="75300.00")
    settlement_approve(settlement=draft, actor="test")
    settlement = Settlement.objects.get(pk=draft.pk)
    invoice_id = settlement.stripe_invoice_id or ""
    api().v1.invoices.pay(invoice_id, {"paid_out_of_band": True})
    delivery = stripe_world.wait_for_delivery("invoice.paid", object_id=invoice_id)
    response = Client().post(
        "/webhooks/stripe",
        data=delivery.body,
        content_type="application/json",
        HTTP_STRIPE_SIGNATURE=delivery.signature,
    )
    assert response.status_code == 200, response.content
    settlement.refresh_from_db()
    assert settlement.status == "paid"
    return settlement


def _transfers(group: str) -> list[Any]:
    return list(api().v1.transfers.list({"transfer_group": group}).data)


def test_host_pays_by_stripe_and_the_licensor_is_paid_by_transfer(stripe_world: Any) -> None:
    # given: MiniMax on Connect, 5% fee, 10% withholding; October paid through Stripe
    account = _connected_licensor()
    settlement = _paid_by_stripe(stripe_world)

    # when
    made = run_payouts(as_of=DAY)

    # then: fee 451.80, withholding 10% of 8,584.20 = 858.42, net 7,725.78 transferred
    (payout,) = made
    assert (payout.gross_minor, payout.platform_fee_minor, payout.withholding_minor) == (
        903600,
        45180,
        85842,
    )
    assert (payout.net_minor, payout.status, payout.rail) == (772578, "paid", "stripe_connect")
    (transfer,) = _transfers(str(payout.pk))
    assert (transfer.amount, transfer.destination, transfer.currency) == (772578, account, "usd")
    assert payout.reference == transfer.id
    assert party_balances(owner=settlement.licensor) == {"USD": {"payable": 0}}
    assert party_balances(owner=settlement.host) == {"USD": {"receivable": 0}}
    assert party_balances(owner=None) == {
        "USD": {"cash": 903600 - 772578, "platform_revenue": -45180, "tax_payable": -85842}
    }
    assert verify_books().ok


def test_a_crash_between_the_transfer_and_our_commit_makes_one_transfer(
    stripe_world: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given: a payout whose worker dies after Stripe made the transfer, before our commit
    _connected_licensor(fee="0", withholding="0")
    _paid_by_stripe(stripe_world)

    def crash(**kwargs: Any) -> Payout:
        raise SystemExit("worker killed")

    monkeypatch.setattr(payouts, "payout_record_transfer", crash)
    with pytest.raises(SystemExit):
        run_payouts(as_of=DAY)
    payout = Payout.objects.get()
    assert payout.status == "pending" and len(_transfers(str(payout.pk))) == 1
    monkeypatch.undo()

    # when: the next run, once the dead worker's claim has expired
    Payout.objects.filter(pk=payout.pk).update(
        sending_started_at=timezone.now() - SENDING_LEASE - dt.timedelta(seconds=1)
    )
    run_payouts(as_of=DAY + dt.timedelta(days=1))

    # then: the transfer found and recorded; still one transfer, one payout, books balanced
    payout.refresh_from_db()
    (transfer,) = _transfers(str(payout.pk))
    assert (payout.status, payout.reference) == ("paid", transfer.id)
    assert Payout.objects.count() == 1
    assert party_balances(owner=payout.licensor) == {"USD": {"payable": 0}}
    assert verify_books().ok


def test_a_refused_transfer_fails_the_payout_and_carries_its_net(stripe_world: Any) -> None:
    # given: the licensor's connected account does not exist on Stripe
    _connected_licensor(fee="0", withholding="0")
    Licensor.objects.filter(slug="minimax").update(payout_stripe_account="acct_gone")
    settlement = _paid_by_stripe(stripe_world)

    # when
    run_payouts(as_of=DAY)

    # then: failed, nothing posted, its net waits as carried forward
    payout = Payout.objects.get()
    assert payout.status == "failed" and "No such destination" in payout.error
    assert party_balances(owner=settlement.licensor) == {"USD": {"payable": -903600}}
    assert list(PayoutAdjustment.objects.values_list("amount_minor", flat=True)) == [903600]

    # when: the account fixed, the next day's run
    account = api().v1.accounts.create({"type": "express"})
    Licensor.objects.filter(slug="minimax").update(payout_stripe_account=account.id)
    run_payouts(as_of=DAY + dt.timedelta(days=1))

    # then: paid in full from the carried amount
    paid = Payout.objects.get(status="paid")
    assert (paid.gross_minor, paid.carried_forward_minor, paid.net_minor) == (0, 903600, 903600)
    assert party_balances(owner=settlement.licensor) == {"USD": {"payable": 0}}
    assert verify_books().ok


def _deliver(event_type: str, obj: dict[str, Any], event_id: str) -> Any:
    body = event_body(event_type, obj, event_id=event_id)
    return Client().post(
        "/webhooks/stripe",
        data=body,
        content_type="application/json",
        HTTP_STRIPE_SIGNATURE=sign(body),
    )


def test_a_reversed_transfer_is_posted_once_and_paid_again_in_the_next_payout(
    stripe_world: Any,
) -> None:
    # given: October paid out by transfer (9,036.00), then 100.00 of it reversed on Stripe
    _connected_licensor(fee="0", withholding="0")
    settlement = _paid_by_stripe(stripe_world)
    (payout,) = run_payouts(as_of=DAY)
    api().v1.transfers.reversals.create(payout.reference or "", {"amount": 10000})
    transfer = api().v1.transfers.retrieve(payout.reference or "").to_dict()
    assert transfer["amount_reversed"] == 10000

    # when: Stripe delivers transfer.reversed, twice, and the same fact in a second event
    first = _deliver("transfer.reversed", transfer, "evt_rev_1")
    again = _deliver("transfer.reversed", transfer, "evt_rev_1")
    other = _deliver("transfer.reversed", transfer, "evt_rev_2")

    # then: posted once (cash back, the licensor owed 100.00 again), carried forward
    assert (first.status_code, again.json()["duplicate"], other.status_code) == (200, True, 200)
    assert StripeEvent.objects.get(event_id="evt_rev_1").outcome == (
        f"payout {payout.pk}: 10000 reversed, carried forward"
    )
    assert party_balances(owner=settlement.licensor) == {"USD": {"payable": -10000}}
    assert list(PayoutAdjustment.objects.values_list("amount_minor", flat=True)) == [10000]

    # when: the next run
    (second,) = run_payouts(as_of=DAY + dt.timedelta(days=1))

    # then: the 100.00 paid again by a new transfer; the licensor is owed nothing
    assert (second.gross_minor, second.carried_forward_minor, second.net_minor) == (0, 10000, 10000)
    assert second.status == "paid"
    assert party_balances(owner=settlement.licensor) == {"USD": {"payable": 0}}
    assert verify_books().ok
