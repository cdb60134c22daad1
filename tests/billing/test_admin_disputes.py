"""The admin's Dispute page with reason code, line selection and amount; the history (with the
host's answers) and the revision chain on the change page; approval of a disputed settlement."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.contrib.auth.models import User
from django.test import Client
from rest_framework.test import APIClient

from billing.models import Settlement
from licensing.models import Host, Licensor, LicensorMembership
from licensing.selectors import licensor_reviewer_permissions
from tests.billing.conftest import post_usage, record, run_billing


@pytest.fixture
def october(
    minimax_world: tuple[Host, Licensor], client_for: Callable[..., APIClient]
) -> tuple[Settlement, APIClient]:
    host, _ = minimax_world
    host_client = client_for(host=host)
    post_usage(
        host_client,
        [record("c-1", revenue="1000.00"), record("i-1", revenue="50.00", category="individual")],
    )
    run_billing("2026-10")
    return Settlement.objects.get(period="2026-10"), host_client


@pytest.fixture
def reviewer(minimax_world: tuple[Host, Licensor]) -> Client:
    user = User.objects.create_user("reviewer", password="pw", is_staff=True)
    LicensorMembership.objects.create(user=user, licensor=minimax_world[1])
    user.user_permissions.add(*licensor_reviewer_permissions())
    client = Client()
    client.force_login(user)
    return client


def test_it_disputes_lines_with_a_code_and_shows_answers_and_revisions(
    october: tuple[Settlement, APIClient], reviewer: Client
) -> None:
    # given the dispute page of a draft, which offers the settlement's lines by id
    s, host_client = october
    url = f"/admin/billing/settlement/{s.pk}/"
    commercial = s.lines.get(customer_category="commercial")
    page = reviewer.get(url + "dispute/")
    assert page.status_code == 200
    assert f'value="{commercial.pk}"'.encode() in page.content
    assert b'name="reason_code"' in page.content

    # when the reviewer disputes one line with a code and an amount, the host answers and
    # corrects, and the run revises
    done = reviewer.post(
        url + "dispute/",
        {
            "reason_code": "rate_incorrect",
            "reason": "we agreed 10%",
            "lines": [str(commercial.pk)],
            "amount": "20.00",
        },
    )
    host_client.post(
        f"/api/v1/settlements/{s.pk}/respond", {"message": "Checking our side"}, format="json"
    )
    post_usage(host_client, [record("c-1-fix", corrects="c-1", revenue="-100.00")])
    run_billing("2026-10")

    # then: stored as asked; the change page shows the history and links to the revision
    assert done.status_code == 302
    s.refresh_from_db()
    assert (s.status, s.dispute_reason_code, s.dispute_lines) == (
        "superseded",
        "rate_incorrect",
        [str(commercial.pk)],
    )
    assert str(s.dispute_amount) == "20.0000"
    revision = Settlement.objects.get(supersedes=s)
    old_page = reviewer.get(url + "change/").content.decode()
    assert "Checking our side" in old_page
    assert "admin:reviewer" in old_page
    assert f"/admin/billing/settlement/{revision.pk}/change/" in old_page
    new_page = reviewer.get(f"/admin/billing/settlement/{revision.pk}/change/").content.decode()
    assert f"/admin/billing/settlement/{s.pk}/change/" in new_page
    assert "revision 2" in new_page
    assert 'id="approve-settlement"' in new_page


def test_it_refuses_a_negative_amount_and_approves_a_disputed_settlement(
    october: tuple[Settlement, APIClient], reviewer: Client
) -> None:
    # given
    s, _ = october
    url = f"/admin/billing/settlement/{s.pk}/"

    # when: a negative amount, then a valid dispute, then Approve from the disputed page
    refused = reviewer.post(url + "dispute/", {"reason": "x", "amount": "-1"})
    reviewer.post(url + "dispute/", {"reason": "too high"})
    disputed_page = reviewer.get(url + "change/").content.decode()
    approved = reviewer.post(url + "approve/")

    # then
    assert refused.status_code == 200
    assert "amount" in refused.context["form"].errors
    assert 'id="approve-settlement"' in disputed_page
    assert 'id="dispute-settlement"' not in disputed_page
    assert approved.status_code == 302
    s.refresh_from_db()
    assert (s.status, s.decided_by) == ("approved", "admin:reviewer")
