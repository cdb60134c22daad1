"""The gateway against real Stripe test mode: what localstripe cannot prove (Stripe accepts our
parameters as they are). Runs only when STRIPE_LIVE_TEST_KEY (an `sk_test_...` key) is set;
skipped otherwise, also in CI, which has no network. It voids what it creates."""

from __future__ import annotations

import os
import uuid
from typing import Any

import pytest

from billing import stripe_gateway
from tests.factories import HostFactory

LIVE_KEY = os.environ.get("STRIPE_LIVE_TEST_KEY", "")

pytestmark = [
    pytest.mark.stripe_live,
    pytest.mark.skipif(not LIVE_KEY, reason="STRIPE_LIVE_TEST_KEY is not set"),
]


@pytest.mark.django_db(transaction=True)
def test_it_sends_an_invoice_in_stripe_test_mode_and_finds_it_again(settings: Any) -> None:
    # given: real Stripe test mode, a customer made for this run (our host ids repeat between
    # test databases, and Stripe keeps idempotency keys for a day)
    assert LIVE_KEY.startswith("sk_test_"), "only a test-mode key, never a live one"
    settings.STRIPE_API_KEY = LIVE_KEY
    settings.STRIPE_API_BASE = ""
    api = stripe_gateway.client()
    customer = api.v1.customers.create(
        {"email": "tollgate-live-test@example.com", "metadata": {"tollgate_host": "live-test"}}
    )
    host = HostFactory(slug=f"live-{uuid.uuid4().hex[:8]}", stripe_customer_id=customer.id)
    settlement_id = str(uuid.uuid4())
    lines = [
        stripe_gateway.InvoiceLine(position=1, description="usage", amount_minor=1250),
        stripe_gateway.InvoiceLine(position=2, description="cap credit", amount_minor=-250),
    ]
    try:
        # when: sent, then sent again (a retry)
        sent = stripe_gateway.invoice_send(
            settlement_id=settlement_id,
            host=host,
            currency="USD",
            description="Tollgate live test",
            lines=lines,
            days_until_due=30,
        )
        again = stripe_gateway.invoice_send(
            settlement_id=settlement_id,
            host=host,
            currency="USD",
            description="Tollgate live test",
            lines=lines,
            days_until_due=30,
        )

        # then: one open invoice of 10.00 USD, found by its metadata
        assert (sent.status, sent.total_minor, sent.currency) == ("open", 1000, "USD")
        assert again.id == sent.id
        found = stripe_gateway.invoice_find(customer_id=customer.id, settlement_id=settlement_id)
        assert found is not None and found["id"] == sent.id
    finally:
        for invoice in api.v1.invoices.list({"customer": customer.id}).data:
            if invoice.status == "open":
                api.v1.invoices.void_invoice(invoice.id)
        api.v1.customers.delete(customer.id)
