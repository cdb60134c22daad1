"""Approved settlements become Stripe invoices (billing/invoicing.py, billing/stripe_gateway.py),
against localstripe: once, with the right amount in minor units, healed after a crash."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import IntegrityError, transaction

from billing import stripe_gateway
from billing.invoicing import invoice_lines, settlement_invoice
from billing.models import Settlement
from billing.review import settlement_approve
from billing.tasks import invoice_pending_settlements
from licensing.models import Host
from tests.stripe import localstripe_ext
from tests.stripe.helpers import (
    api,
    approve_without_invoicing,
    billed_settlement,
    jpy_catalog,
    stripe_customers,
    stripe_invoices,
)

pytestmark = pytest.mark.django_db(transaction=True)


def test_it_invoices_a_settlement_once_when_it_is_approved(stripe_world: Any) -> None:
    # given: a draft of 12% of 75,300.00 USD = 9,036.00
    draft = billed_settlement(revenue="75300.00")

    # when: the licensor approves (the task runs on commit, in-process)
    settlement_approve(settlement=draft, actor="test")

    # then: invoiced, one open Stripe invoice of 903,600 cents sent to the host's customer
    settlement = Settlement.objects.get(pk=draft.pk)
    host = Host.objects.get(slug="fireworks")
    assert settlement.status == "invoiced"
    assert settlement.stripe_invoice_id and settlement.invoiced_at
    assert [c.metadata["tollgate_host"] for c in stripe_customers()] == ["fireworks"]
    [invoice] = stripe_invoices(host.stripe_customer_id)
    assert invoice["id"] == settlement.stripe_invoice_id
    assert (invoice["status"], invoice["total"], invoice["currency"]) == ("open", 903600, "usd")
    assert invoice["metadata"] == {"tollgate_settlement": str(settlement.pk)}
    assert invoice["collection_method"] == "send_invoice"
    assert invoice["due_date"] == invoice["created"] + 30 * 86400  # days_until_due=30
    # sent once: Stripe records a send as the event invoice.sent (the Invoice has no field for it)
    sent = api().v1.events.list({"type": "invoice.sent"}).data
    assert [e.data.object["id"] for e in sent] == [invoice["id"]]
    [line] = invoice["lines"]["data"]
    assert line["amount"] == 903600
    assert line["metadata"]["tollgate_line"] == "1"
    assert "12% of net revenue" in line["description"]


def test_it_creates_nothing_new_when_invoicing_is_repeated(stripe_world: Any) -> None:
    # given: an invoiced settlement
    draft = billed_settlement(revenue="75300.00")
    settlement_approve(settlement=draft, actor="test")
    first = Settlement.objects.get(pk=draft.pk)

    # when: a redelivered task and an operator invoice it again
    again = settlement_invoice(settlement=first)
    settlement_invoice(settlement=first)

    # then
    assert again.stripe_invoice_id == first.stripe_invoice_id
    assert len(stripe_invoices(first.host.stripe_customer_id)) == 1
    assert len(stripe_customers()) == 1


def test_it_heals_a_crash_between_stripe_and_our_commit_days_later(stripe_world: Any) -> None:
    # given: Stripe sent the invoice, but the worker died before our commit, and Stripe has
    # forgotten the idempotency keys since (days later)
    settlement = approve_without_invoicing(billed_settlement(revenue="75300.00"))
    sent = stripe_gateway.invoice_send(
        settlement_id=str(settlement.pk),
        host=settlement.host,
        currency="USD",
        description="first attempt",
        lines=invoice_lines(settlement),
        days_until_due=30,
    )
    localstripe_ext._idempotent.clear()

    # when: the retry
    healed = settlement_invoice(settlement=settlement)

    # then: the invoice found by its metadata is recorded; nothing new in Stripe
    assert (healed.status, healed.stripe_invoice_id) == ("invoiced", sent.id)
    assert [i["id"] for i in stripe_invoices(healed.host.stripe_customer_id)] == [sent.id]


def test_it_finishes_a_draft_left_halfway(stripe_world: Any) -> None:
    # given: a crash after the draft invoice was created, before its items
    settlement = approve_without_invoicing(billed_settlement(revenue="75300.00"))
    customer = stripe_gateway.customer_ensure(host=settlement.host)
    draft = api().v1.invoices.create(
        {
            "customer": customer,
            "currency": "usd",
            "collection_method": "send_invoice",
            "days_until_due": 30,
            "metadata": {"tollgate_settlement": str(settlement.pk)},
        }
    )
    localstripe_ext._idempotent.clear()

    # when
    healed = settlement_invoice(settlement=settlement)

    # then: that draft got its item, was finalized and sent
    assert healed.stripe_invoice_id == draft.id
    [invoice] = stripe_invoices(customer)
    assert (invoice["status"], invoice["total"]) == ("open", 903600)


def test_it_bills_yen_in_whole_yen(stripe_world: Any) -> None:
    # given: 12% of 10,001 JPY = 1,200.12, rounded to 1,200 yen (no minor unit)
    draft = billed_settlement(revenue="10001", catalog=jpy_catalog())

    # when
    settlement_approve(settlement=draft, actor="test")

    # then
    settlement = Settlement.objects.get(pk=draft.pk)
    [invoice] = stripe_invoices(settlement.host.stripe_customer_id)
    assert (invoice["currency"], invoice["total"]) == ("jpy", 1200)


def test_it_does_not_invoice_a_zero_total(stripe_world: Any) -> None:
    # given: free usage only (individuals)
    draft = billed_settlement(revenue="500.00", category="individual")

    # when
    settlement_approve(settlement=draft, actor="test")
    settlement = settlement_invoice(settlement=draft)

    # then: approved, nothing sent
    assert (settlement.status, settlement.stripe_invoice_id) == ("approved", None)
    assert stripe_customers() == []


def test_it_approves_without_stripe_when_no_key_is_set(stripe_world: Any, settings: Any) -> None:
    # given
    settings.STRIPE_API_KEY = ""
    draft = billed_settlement(revenue="75300.00")

    # when
    settlement = settlement_approve(settlement=draft, actor="test")

    # then: approval as before Stripe existed
    settlement.refresh_from_db()
    assert (settlement.status, settlement.stripe_invoice_id) == ("approved", None)
    assert invoice_pending_settlements() == 0


def test_it_sweeps_approved_settlements_whose_task_was_lost(stripe_world: Any) -> None:
    # given: approved while the queue was lost
    settlement = approve_without_invoicing(billed_settlement(revenue="75300.00"))

    # when: the hourly sweep
    queued = invoice_pending_settlements()

    # then
    settlement.refresh_from_db()
    assert queued == 1
    assert settlement.status == "invoiced"


def test_it_releases_the_claim_and_keeps_the_error_when_stripe_fails(
    stripe_world: Any, settings: Any
) -> None:
    # given: Stripe unreachable (nothing listens on port 9 of 127.0.0.1)
    settlement = approve_without_invoicing(billed_settlement(revenue="75300.00"))
    settings.STRIPE_API_BASE = "http://127.0.0.1:9"

    # when
    with pytest.raises(stripe_gateway.TRANSIENT_ERRORS):
        settlement_invoice(settlement=settlement)

    # then: still approved, free to retry, the error shown to operators
    settlement.refresh_from_db()
    assert settlement.status == "approved"
    assert settlement.invoicing_started_at is None
    assert "APIConnectionError" in settlement.invoice_error


def test_it_refuses_to_call_stripe_inside_a_transaction(stripe_world: Any) -> None:
    # given
    settlement = approve_without_invoicing(billed_settlement(revenue="75300.00"))

    # when / then
    with pytest.raises(RuntimeError, match="outside any transaction"), transaction.atomic():
        settlement_invoice(settlement=settlement)


def test_it_keeps_a_stripe_invoice_id_once_set_in_postgresql(stripe_world: Any) -> None:
    # given: an invoiced settlement, and a draft
    draft = billed_settlement(revenue="75300.00")
    settlement_approve(settlement=draft, actor="test")
    invoiced = Settlement.objects.get(pk=draft.pk)

    # when / then: whatever client writes, the id never changes, and only `approved` gets one
    with pytest.raises(IntegrityError, match="never changes"), transaction.atomic():
        Settlement.objects.filter(pk=invoiced.pk).update(stripe_invoice_id="in_other")
    with pytest.raises(IntegrityError, match="never changes"), transaction.atomic():
        Settlement.objects.filter(pk=invoiced.pk).update(stripe_invoice_id=None)
    with pytest.raises(IntegrityError), transaction.atomic():
        Settlement.objects.filter(pk=invoiced.pk).update(status="approved")
    invoiced.refresh_from_db()
    assert invoiced.status == "invoiced"


def test_it_gives_a_stripe_invoice_to_approved_settlements_only(stripe_world: Any) -> None:
    # given: a draft
    draft = billed_settlement(revenue="75300.00")

    # when / then: PostgreSQL refuses an invoice id on it, and `invoiced` without one
    with pytest.raises(IntegrityError, match="only an approved"), transaction.atomic():
        Settlement.objects.filter(pk=draft.pk).update(stripe_invoice_id="in_1")
    approved = approve_without_invoicing(draft)
    with pytest.raises(IntegrityError, match="invoiced_has_invoice"), transaction.atomic():
        Settlement.objects.filter(pk=approved.pk).update(status="invoiced")
