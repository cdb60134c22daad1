"""The demo's payouts with Stripe configured (billing/demo_payouts.py, docs/payouts.md "In the
demo"), against localstripe: one settlement left to its Stripe invoice, the Connect payout sent as
a transfer. The demo without Stripe is tests/test_demo.py's."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.management import call_command


@pytest.mark.django_db(transaction=True)
def test_the_demo_with_stripe_collects_one_settlement_and_transfers_the_connect_payout(
    stripe_world: Any,
) -> None:
    # given: the demo world, Moonshot's connected account on Stripe, a month of history
    import io

    from billing.demo import demo_approve, demo_history, demo_post_usage, demo_seed
    from billing.demo_payouts import demo_payouts
    from billing.models import Payout, Settlement
    from ledger.verify import verify_books
    from licensing.models import Licensor
    from tests.stripe.helpers import api

    world = demo_seed()
    account = api().v1.accounts.create({"type": "express", "country": "US"})
    Licensor.objects.filter(slug="moonshot").update(payout_stripe_account=account.id)
    demo_history(world, "2026-10", 1)
    demo_post_usage(world, "2026-10")
    call_command("run_billing", period="2026-10", stdout=io.StringIO())
    demo_approve("2026-10")

    # when
    lines = demo_payouts("2026-10")

    # then: Moonshot's October settlement is left to its Stripe invoice, September's was paid by
    # bank transfer and paid out by a transfer to the connected account
    october = Settlement.objects.get(
        licensor__slug="moonshot", host__slug="together", period="2026-10"
    )
    assert october.status == "invoiced" and october.stripe_invoice_id
    assert any(
        line.startswith("moonshot <- together 2026-10: invoiced through Stripe") for line in lines
    )
    connect = Payout.objects.get(licensor__slug="moonshot")
    (transfer,) = api().v1.transfers.list({"transfer_group": str(connect.pk)}).data
    assert (connect.status, connect.reference) == ("paid", transfer.id)
    assert (transfer.destination, transfer.amount) == (account.id, connect.net_minor)
    manual = Payout.objects.get(licensor__slug="minimax", currency="USD")
    assert (manual.rail, manual.status) == ("manual", "paid")
    assert verify_books().ok
