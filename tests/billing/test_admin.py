"""The settlement admin as a licensor's reviewer uses it: only their licensor's settlements,
approve from the change page, dispute with a reason, and a read-only view of billing runs."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.contrib.auth.models import User
from django.test import Client
from rest_framework.test import APIClient

from billing.models import Settlement
from licensing.catalog import catalog_import
from licensing.models import Host, Licensor, LicensorMembership
from licensing.selectors import licensor_reviewer_permissions
from tests.billing.conftest import (
    post_usage,
    record,
    run_billing,
    second_licensor_catalog,
    settlement_of,
)


@pytest.fixture
def two_settlements(
    minimax_world: tuple[Host, Licensor], client_for: Callable[..., APIClient]
) -> tuple[Settlement, Settlement]:
    catalog_import(second_licensor_catalog())
    host, _ = minimax_world
    post_usage(
        client_for(host=host),
        [
            record("m-1", revenue="1000.00"),
            record("k-1", revenue="1000.00", model="kimi-k2.5"),
        ],
    )
    run_billing("2026-10")
    return (
        settlement_of(licensor="minimax", host="fireworks", period="2026-10"),
        settlement_of(licensor="kimi", host="fireworks", period="2026-10"),
    )


@pytest.fixture
def reviewer_client(minimax_world: tuple[Host, Licensor]) -> Client:
    user = User.objects.create_user("reviewer", password="pw", is_staff=True)
    LicensorMembership.objects.create(user=user, licensor=minimax_world[1])
    permissions = licensor_reviewer_permissions()
    assert len(permissions) == 4  # the demo's codenames all exist
    user.user_permissions.add(*permissions)
    client = Client()
    client.force_login(user)
    return client


def test_it_shows_a_reviewer_only_their_licensors_settlements(
    two_settlements: tuple[Settlement, Settlement], reviewer_client: Client
) -> None:
    # given
    mine, theirs = two_settlements

    # when
    listing = reviewer_client.get("/admin/billing/settlement/")
    own_page = reviewer_client.get(f"/admin/billing/settlement/{mine.pk}/change/")
    other_page = reviewer_client.get(f"/admin/billing/settlement/{theirs.pk}/change/")
    other_approve = reviewer_client.post(f"/admin/billing/settlement/{theirs.pk}/approve/")

    # then
    assert listing.status_code == 200
    assert list(listing.context["cl"].queryset) == [mine]
    assert own_page.status_code == 200
    assert b"120.00" in own_page.content
    assert b'id="approve-settlement"' in own_page.content
    assert other_page.status_code == 302  # the admin's "does not exist" redirect
    assert other_approve.status_code == 404
    theirs.refresh_from_db()
    assert theirs.status == "draft"


def test_it_approves_from_the_change_page(
    two_settlements: tuple[Settlement, Settlement], reviewer_client: Client
) -> None:
    # given
    mine, _ = two_settlements

    # when
    response = reviewer_client.post(f"/admin/billing/settlement/{mine.pk}/approve/")

    # then
    assert response.status_code == 302
    mine.refresh_from_db()
    assert mine.status == "approved"
    assert mine.decided_by == "admin:reviewer"


def test_it_disputes_through_the_action_with_a_reason(
    two_settlements: tuple[Settlement, Settlement], reviewer_client: Client
) -> None:
    # given
    mine, _ = two_settlements
    selection = {"action": "dispute_selected", "_selected_action": [str(mine.pk)]}

    # when: the action asks for a reason first, then disputes
    page = reviewer_client.post("/admin/billing/settlement/", selection)
    done = reviewer_client.post(
        "/admin/billing/settlement/", {**selection, "reason": "traffic was a test load"}
    )

    # then
    assert page.status_code == 200
    assert b'name="reason"' in page.content
    assert done.status_code == 302
    mine.refresh_from_db()
    assert (mine.status, mine.dispute_reason) == ("disputed", "traffic was a test load")


def test_it_shows_billing_runs_read_only(
    two_settlements: tuple[Settlement, Settlement], reviewer_client: Client
) -> None:
    # when
    listing = reviewer_client.get("/admin/billing/billingrun/")

    # then: the progress of MiniMax's own pair; the run's 2/2 counts Kimi's pair too, which a
    # MiniMax reviewer does not see (docs/security.md)
    assert listing.status_code == 200
    assert b"1/1" in listing.content
    assert b"/admin/billing/billingrun/add/" not in listing.content
