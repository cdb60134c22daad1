"""The admin's "Send invoice": operators invoice approved settlements; a licensor's reviewer
never sees the action, and a forged request invoices nothing."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client

from billing.models import Settlement
from licensing.models import LicensorMembership
from licensing.selectors import licensor_reviewer_permissions
from tests.stripe.helpers import approve_without_invoicing, billed_settlement

pytestmark = pytest.mark.django_db(transaction=True)

CHANGELIST = "/admin/billing/settlement/"


def _login(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _send(client: Client, settlement: Settlement) -> Any:
    return client.post(
        CHANGELIST,
        {"action": "send_invoice_selected", "_selected_action": [str(settlement.pk)]},
        follow=True,
    )


def test_it_lets_an_operator_send_the_invoice(stripe_world: Any) -> None:
    # given: an approved settlement not invoiced yet, and an operator (the admin shows all
    # settlements to superusers only: a staff member without a licensor sees none)
    settlement = approve_without_invoicing(billed_settlement(revenue="75300.00"))
    operator = User.objects.create_superuser("ops", password="pw")

    # when
    response = _send(_login(operator), settlement)
    page = _login(operator).get(f"{CHANGELIST}{settlement.pk}/change/")

    # then: invoiced, and its Stripe invoice id on the settlement's page
    settlement.refresh_from_db()
    assert response.status_code == 200
    assert settlement.status == "invoiced"
    assert settlement.stripe_invoice_id
    assert settlement.stripe_invoice_id.encode() in page.content


def test_it_never_lets_a_licensor_reviewer_invoice(stripe_world: Any) -> None:
    # given: a reviewer of the settlement's licensor, even one granted send_invoice
    settlement = approve_without_invoicing(billed_settlement(revenue="75300.00"))
    reviewer = User.objects.create_user("reviewer", password="pw", is_staff=True)
    LicensorMembership.objects.create(user=reviewer, licensor=settlement.licensor)
    reviewer.user_permissions.add(
        *licensor_reviewer_permissions(), Permission.objects.get(codename="send_invoice")
    )
    client = _login(reviewer)

    # when
    listing = client.get(CHANGELIST)
    forged = _send(client, settlement)

    # then: no such action for them, and nothing invoiced
    assert "send_invoice_selected" not in dict(
        listing.context["action_form"].fields["action"].choices
    )
    assert forged.status_code == 200
    settlement.refresh_from_db()
    assert (settlement.status, settlement.stripe_invoice_id) == ("approved", None)
