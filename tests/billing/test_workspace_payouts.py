"""The payouts page of the licensor's workspace (`/admin/payouts/`, billing/site.py,
billing/workspace_payouts.py): a reviewer sees its own licensor's payouts with their settlements
and CSV statements, never another licensor's (404 on its CSV, absent from the list and the
filter); an operator sees every licensor's; a fixed number of queries at two sizes."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable

import pytest
from django.contrib.auth.models import Permission, User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from rest_framework.test import APIClient

from billing.models import Payout, Settlement, SettlementStatus
from billing.payouts import host_payment_record, payout_mark_paid, run_payouts
from billing.review import settlement_approve
from licensing.models import Licensor
from tests.billing.test_workspace import reviewer_of, seed

pytestmark = pytest.mark.django_db

PAGE = "/admin/payouts/"


def paid_and_paid_out(months: tuple[str, ...]) -> None:
    """Every settlement of each month approved and paid by bank transfer, then that month's
    payout run on the 5th of the next; each payout recorded paid with a bank reference."""
    for month in months:
        for settlement in Settlement.objects.filter(period=month, total__gt=0):
            approved = settlement_approve(settlement=settlement, actor="test")
            host_payment_record(settlement_id=str(approved.pk), reference=f"IN-{approved.pk}")
        year, mon = (int(x) for x in month.split("-"))
        day = dt.date(year + mon // 12, mon % 12 + 1, 5)
        for payout in run_payouts(as_of=day):
            payout_mark_paid(
                payout_id=str(payout.pk), reference=f"OUT-{payout.licensor.slug}-{month}"
            )


@pytest.fixture
def paid_world(client_for: Callable[..., APIClient], settings: object) -> None:
    """MiniMax and Kimi at Fireworks and Together in September and October, every settlement
    paid and paid out: two payouts each."""
    months = ("2026-09", "2026-10")
    seed(client_for, hosts=("fireworks", "together"), months=months)
    paid_and_paid_out(months)


def operator() -> Client:
    user = User.objects.filter(username="operator").first()
    if user is None:
        user = User.objects.create_user("operator", password="pw", is_staff=True)
        user.user_permissions.add(Permission.objects.get(codename="view_payout"))
    client = Client()
    client.force_login(user)
    return client


def test_a_reviewer_sees_its_payouts_with_settlements_and_statements(paid_world: None) -> None:
    # given
    reviewer = reviewer_of("minimax")
    own = list(Payout.objects.filter(licensor__slug="minimax").order_by("-day"))
    other = list(Payout.objects.filter(licensor__slug="kimi"))

    # when
    response = reviewer.get(PAGE)

    # then: both of MiniMax's payouts, newest first, each with its amounts, bank reference,
    # settlements and statement link; none of Kimi's
    assert response.status_code == 200
    html = response.content.decode()
    assert [str(p.pk) for p in own] == re.findall(r'data-payout="([0-9a-f-]+)"', html)
    october = own[0]
    block = html[html.index(f'id="payout-{october.pk}"') :]
    block = block[: block.index("Download CSV statement")]
    assert "2026-11-05" in block and "bank transfer (manual)" in block
    assert ">paid<" in block and "OUT-minimax-2026-10" in block
    # 12% of 1,100.00 at each of two hosts: 264.00 gross, no fee or withholding by default
    assert ">264.00<" in block and block.count("2026-10</a>") == 2
    assert "Fireworks" in block and "Together" in block
    csv_url = reverse("admin:billing_payout_statement_csv", args=[october.pk])
    assert csv_url in html
    for payout in other:
        assert str(payout.pk) not in html
        assert "OUT-kimi" not in html
    assert re.findall(r'<option value="([A-Z]{3})"', html) == ["USD"]


def test_the_csv_is_the_apis_and_another_licensors_is_404(
    paid_world: None, client_for: Callable[..., APIClient]
) -> None:
    # given
    reviewer = reviewer_of("minimax")
    own = Payout.objects.filter(licensor__slug="minimax").first()
    other = Payout.objects.filter(licensor__slug="kimi").first()
    assert own is not None and other is not None
    api = client_for(licensor=Licensor.objects.get(slug="minimax"))

    # when
    mine = reviewer.get(reverse("admin:billing_payout_statement_csv", args=[own.pk]))
    theirs = reviewer.get(reverse("admin:billing_payout_statement_csv", args=[other.pk]))

    # then
    assert mine.status_code == 200
    assert mine.content == api.get(f"/api/v1/payouts/{own.pk}/statement.csv").content
    assert "attachment" in mine["Content-Disposition"]
    assert theirs.status_code == 404


def test_filters_offer_only_the_reviewers_currencies_and_name_a_bad_value(
    paid_world: None,
) -> None:
    # given: Kimi also has a payout in EUR
    Payout.objects.create(
        licensor=Licensor.objects.get(slug="kimi"),
        currency="EUR",
        day=dt.date(2026, 12, 5),
        rail="manual",
        gross_minor=100,
        platform_fee_minor=0,
        withholding_minor=0,
        carried_forward_minor=0,
        net_minor=100,
    )
    reviewer = reviewer_of("minimax")

    # when
    eur = reviewer.get(PAGE, {"currency": "EUR"})
    bad_status = reviewer.get(PAGE, {"status": "sent"})
    pending = reviewer.get(PAGE, {"status": "pending"})
    kimi = operator().get(PAGE, {"currency": "EUR"})

    # then: EUR is not MiniMax's, so it is named as such and nothing of Kimi's is listed
    assert "EUR" not in re.findall(r'<option value="([A-Z]{3})"', eur.content.decode())
    assert b"currency: &#x27;EUR&#x27; is not a currency of your payouts" in eur.content
    assert b"Moonshot Kimi" not in eur.content
    assert b"status: &#x27;sent&#x27; is not one of pending, paid, failed" in bad_status.content
    assert re.findall(rb'data-payout="', pending.content) == []
    assert len(re.findall(rb'data-payout="', kimi.content)) == 1
    assert b"Moonshot Kimi" in kimi.content


def test_an_operator_sees_every_licensors_payouts_and_others_are_refused(
    paid_world: None,
) -> None:
    # given
    nobody = User.objects.create_user("clerk", password="pw", is_staff=True)
    clerk = Client()
    clerk.force_login(nobody)

    # when
    response = operator().get(PAGE)
    index = operator().get("/admin/")
    home = reviewer_of("minimax").get("/admin/")

    # then: all four payouts, with the licensor named; a staff user without the permission 403
    ids = re.findall(r'data-payout="([0-9a-f-]+)"', response.content.decode())
    assert sorted(ids) == sorted(str(p) for p in Payout.objects.values_list("pk", flat=True))
    assert len(ids) == 4
    assert b"Moonshot Kimi" in response.content and b"MiniMax" in response.content
    assert clerk.get(PAGE).status_code == 403
    assert Client().get(PAGE).status_code == 302  # to the login page
    assert f'href="{PAGE}"'.encode() in index.content
    assert f'href="{PAGE}"'.encode() in home.content


def _queries(client: Client, url: str) -> int:
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url)
    assert response.status_code == 200
    return len(captured.captured_queries)


@pytest.mark.parametrize(
    ("hosts", "months"),
    [
        (("fireworks",), ("2026-10",)),
        (("fireworks", "together", "nebius"), ("2026-08", "2026-09", "2026-10")),
    ],
)
def test_the_payouts_page_runs_a_fixed_number_of_queries(
    client_for: Callable[..., APIClient], hosts: tuple[str, ...], months: tuple[str, ...]
) -> None:
    # given: 1 payout of 1 settlement, or 3 payouts of 3 settlements each, for each licensor
    seed(client_for, hosts=hosts, months=months)
    paid_and_paid_out(months)
    assert Payout.objects.filter(licensor__slug="minimax").count() == len(months)
    assert not Settlement.objects.filter(status=SettlementStatus.APPROVED, total__gt=0).exists()

    # then: the same literal counts at both sizes
    assert _queries(reviewer_of("minimax"), PAGE) == REVIEWER_QUERIES
    assert _queries(operator(), PAGE) == OPERATOR_QUERIES


# Session, user, membership; the currencies offered, the count, the page of payouts, their
# settlements, the refunds of those; the reviewer's licensor (the title); the permissions (two,
# for the navigation). An operator has no membership and no title query, and asks for one more
# permission (may it view payouts).
REVIEWER_QUERIES = 11
OPERATOR_QUERIES = 10
