"""What a licensor's reviewer sees of other tenants in the admin: nothing. The settlement list's
filters and facet counts, and the billing runs with their errors, are scoped to the reviewer's
licensor (docs/security.md)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.contrib.auth.models import User
from django.test import Client
from rest_framework.test import APIClient

from billing.admin_runs import REVIEWER_RUN_ERROR
from billing.demo import licensor_reviewer_permissions
from billing.models import BillingRun
from licensing.catalog import catalog_import
from licensing.models import Host, Licensor, LicensorMembership
from tests.billing.conftest import (
    minimax_catalog,
    post_usage,
    record,
    run_billing,
    second_licensor_catalog,
)

pytestmark = pytest.mark.django_db

# A host that deals only with the other licensor (Kimi): MiniMax's reviewer must never learn of it.
HIDDEN_HOST = {"slug": "moonhost", "name": "Moonhost Private Cloud", "currency": "USD"}
SECRET_LABEL = "moonhost-confidential-2026"


@pytest.fixture
def two_licensors(
    minimax_world: tuple[Host, Licensor], client_for: Callable[..., APIClient]
) -> dict[str, BillingRun]:
    """fireworks serves MiniMax and Kimi, together MiniMax; moonhost serves Kimi only, in 2026-09
    and 2026-10."""
    catalog_import(minimax_catalog(hosts=("fireworks", "together")))
    catalog_import(second_licensor_catalog())
    catalog_import({"hosts": [HIDDEN_HOST]})
    fireworks, _ = minimax_world
    moonhost = Host.objects.get(slug="moonhost")
    post_usage(client_for(host=Host.objects.get(slug="together")), [record("t-1", revenue="10.00")])
    post_usage(
        client_for(host=fireworks),
        [record("m-1", revenue="1000.00"), record("k-1", revenue="1000.00", model="kimi-k2.5")],
    )
    post_usage(
        client_for(host=moonhost),
        [
            record("k-9", revenue="500.00", model="kimi-k2.5", at="2026-09-10T12:00:00Z"),
            record("k-10", revenue="500.00", model="kimi-k2.5"),
        ],
    )
    run_billing("2026-09")
    run_billing("2026-10")
    return {run.period: run for run in BillingRun.objects.all()}


@pytest.fixture
def reviewer(minimax_world: tuple[Host, Licensor]) -> Client:
    user = User.objects.create_user("reviewer", password="pw", is_staff=True)
    LicensorMembership.objects.create(user=user, licensor=minimax_world[1])
    user.user_permissions.add(*licensor_reviewer_permissions())
    client = Client()
    client.force_login(user)
    return client


@pytest.mark.parametrize("query", ["", "?_facets=1", "?_facets=1&status__exact=draft"])
def test_the_settlement_list_and_its_filters_name_no_other_tenant(
    two_licensors: dict[str, BillingRun], reviewer: Client, query: str
) -> None:
    # when
    page = reviewer.get(f"/admin/billing/settlement/{query}")

    # then: the host filter lists MiniMax's two hosts (with counts under facets); neither the host
    # of the other licensor nor the period only it billed appears anywhere on the page
    assert page.status_code == 200
    html = page.content.decode()
    assert "Fireworks" in html
    for secret in ("moonhost", "Moonhost", "Moonshot", "kimi", "2026-09"):
        assert secret not in html, secret
    host_filter = next(f for f in page.context["cl"].filter_specs if f.title == "host")
    assert [label for _, label in host_filter.lookup_choices] == ["Fireworks", "Together"]
    if "_facets" in query:
        assert "Fireworks (1)" in html and "Together (1)" in html


def test_a_reviewer_sees_only_runs_that_billed_their_licensor_with_their_own_pairs(
    two_licensors: dict[str, BillingRun], reviewer: Client
) -> None:
    # given: October's run failed on another pair, its error quoting that host's private label
    october = two_licensors["2026-10"]
    BillingRun.objects.filter(pk=october.pk).update(
        status="failed",
        error=f"host=moonhost licensor=kimi: DataError in agreement {SECRET_LABEL!r}",
    )

    # when
    listing = reviewer.get("/admin/billing/billingrun/")
    facets = reviewer.get("/admin/billing/billingrun/?_facets=1")
    detail = reviewer.get(f"/admin/billing/billingrun/{october.pk}/change/")
    other = reviewer.get(f"/admin/billing/billingrun/{two_licensors['2026-09'].pk}/change/")

    # then: October's run only (September's billed Kimi alone), 2/2 of MiniMax's pairs, and a
    # fixed sentence instead of the error
    assert [r.pk for r in listing.context["cl"].queryset] == [october.pk]
    for page in (listing, facets, detail):
        assert page.status_code == 200
        html = page.content.decode()
        assert "2/2" in html
        assert REVIEWER_RUN_ERROR in html
        for secret in (SECRET_LABEL, "moonhost", "kimi", "2026-09", "4/4"):
            assert secret not in html, secret
    assert other.status_code == 302  # the admin's "does not exist" redirect


def test_an_operator_still_sees_every_run_and_its_error(
    two_licensors: dict[str, BillingRun],
) -> None:
    # given
    october = two_licensors["2026-10"]
    BillingRun.objects.filter(pk=october.pk).update(status="failed", error=SECRET_LABEL)
    operator = Client()
    operator.force_login(User.objects.create_superuser("operator", password="pw"))

    # when
    listing = operator.get("/admin/billing/billingrun/")
    detail = operator.get(f"/admin/billing/billingrun/{october.pk}/change/")

    # then
    assert len(listing.context["cl"].queryset) == 2
    assert "4/4" in listing.content.decode()
    assert SECRET_LABEL in detail.content.decode()
