"""Approve and dispute, through the licensor API: the ledger accrual, the closed month, the
state machine, and tenant isolation (another licensor's settlement is 404)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.db import IntegrityError, connection, transaction
from rest_framework.test import APIClient

from billing.errors import SettlementStateError
from billing.models import Settlement, SettlementLine
from billing.review import settlement_approve, settlement_dispute
from ledger.models import JournalEntry
from ledger.selectors import party_balances, trial_balance
from licensing.catalog import catalog_import
from licensing.models import Host, Licensor
from tests.billing.conftest import (
    post_usage,
    record,
    run_billing,
    second_licensor_catalog,
    settlement_of,
)
from usage.models import PeriodClose


@pytest.fixture
def billed_october(
    minimax_world: tuple[Host, Licensor], client_for: Callable[..., APIClient]
) -> Settlement:
    host, _ = minimax_world
    post_usage(client_for(host=host), [record("c-1", revenue="75300.00")])
    run_billing("2026-10")
    return settlement_of(licensor="minimax", host="fireworks", period="2026-10")


def test_it_approves_and_posts_the_accrual_once(
    billed_october: Settlement, client_for: Callable[..., APIClient]
) -> None:
    # given
    licensor_client = client_for(licensor=billed_october.licensor)
    url = f"/api/v1/settlements/{billed_october.pk}/approve"

    # when: approved, then the same request again (a client retry)
    first = licensor_client.post(url)
    second = licensor_client.post(url)

    # then: approved once (approving an approved one is invalid_state), one accrual of
    # 9036.00, balanced books, the month closed
    assert first.status_code == 200, first.content
    assert first.json()["status"] == "approved"
    assert second.status_code == 409
    assert second.json()["error"]["code"] == "invalid_state"
    entries = JournalEntry.objects.filter(reference_type="settlement")
    assert [e.reference_id for e in entries] == [str(billed_october.pk)]
    assert party_balances(owner=billed_october.host) == {"USD": {"receivable": 903600}}
    assert party_balances(owner=billed_october.licensor) == {"USD": {"payable": -903600}}
    assert trial_balance() == {"USD": 0}
    assert PeriodClose.objects.filter(
        host=billed_october.host, licensor=billed_october.licensor, period="2026-10"
    ).exists()


def test_it_disputes_with_a_reason_and_posts_nothing(
    billed_october: Settlement, client_for: Callable[..., APIClient]
) -> None:
    # given
    licensor_client = client_for(licensor=billed_october.licensor)
    url = f"/api/v1/settlements/{billed_october.pk}/dispute"

    # when
    missing = licensor_client.post(url, {}, format="json")
    disputed = licensor_client.post(url, {"reason": "revenue looks low"}, format="json")

    # then
    assert missing.status_code == 400
    assert missing.json()["error"]["fields"] == {"reason": ["This field is required."]}
    assert disputed.status_code == 200
    assert disputed.json()["status"] == "disputed"
    billed_october.refresh_from_db()
    assert billed_october.dispute_reason == "revenue looks low"
    assert not JournalEntry.objects.exists()
    # a disputed month stays open: the host may still correct its usage (closed on approval)
    assert not PeriodClose.objects.filter(period="2026-10").exists()


def test_it_refuses_to_dispute_a_disputed_settlement(billed_october: Settlement) -> None:
    # given
    settlement_dispute(settlement=billed_october, reason="wrong host", actor="test")

    # when / then
    with pytest.raises(SettlementStateError, match="disputed"):
        settlement_dispute(settlement=billed_october, reason="again", actor="test")
    billed_october.refresh_from_db()
    assert billed_october.status == "disputed"
    assert billed_october.dispute_reason == "wrong host"


def test_it_approves_a_disputed_settlement_over_the_api(
    billed_october: Settlement, client_for: Callable[..., APIClient]
) -> None:
    # given
    client = client_for(licensor=billed_october.licensor)
    client.post(f"/api/v1/settlements/{billed_october.pk}/dispute", {"reason": "x"}, format="json")

    # when: the licensor accepts after all
    response = client.post(f"/api/v1/settlements/{billed_october.pk}/approve")

    # then: approved by the licensor, the accrual posted, the month closed
    assert response.status_code == 200, response.content
    assert response.json()["status"] == "approved"
    assert response.json()["decided_by"] == "licensor:minimax"
    assert [e.reference_id for e in JournalEntry.objects.filter(reference_type="settlement")] == [
        str(billed_october.pk)
    ]
    assert PeriodClose.objects.filter(period="2026-10").exists()


def test_it_hides_another_licensors_settlements(
    billed_october: Settlement, client_for: Callable[..., APIClient]
) -> None:
    # given: licensor Y (kimi) with its own key
    catalog_import(second_licensor_catalog())
    other = client_for(licensor=Licensor.objects.get(slug="kimi"))
    url = f"/api/v1/settlements/{billed_october.pk}"

    # when
    listed = other.get("/api/v1/settlements").json()["results"]
    detail = other.get(url)
    approve = other.post(f"{url}/approve")
    dispute = other.post(f"{url}/dispute", {"reason": "mine now"}, format="json")
    statement = other.get(f"{url}/statement.csv")

    # then: 404 everywhere, never 403, and nothing changed
    assert listed == []
    assert [r.status_code for r in (detail, approve, dispute, statement)] == [404] * 4
    assert detail.json()["error"]["code"] == "not_found"
    billed_october.refresh_from_db()
    assert billed_october.status == "draft"


def test_it_hides_other_hosts_settlements_and_lets_hosts_only_read(
    billed_october: Settlement, client_for: Callable[..., APIClient]
) -> None:
    # given
    other_host = Host.objects.create(slug="together", name="Together", currency="USD")
    own = client_for(host=billed_october.host)
    other = client_for(host=other_host)

    # when
    other_detail = other.get(f"/api/v1/settlements/{billed_october.pk}")
    own_approve = own.post(f"/api/v1/settlements/{billed_october.pk}/approve")

    # then
    assert other_detail.status_code == 404
    assert other.get("/api/v1/settlements").json()["results"] == []
    assert own_approve.status_code == 403
    billed_october.refresh_from_db()
    assert billed_october.status == "draft"


def test_it_filters_the_licensor_list(
    billed_october: Settlement, client_for: Callable[..., APIClient]
) -> None:
    # given
    client = client_for(licensor=billed_october.licensor)

    # when
    by_status = client.get("/api/v1/settlements?status=approved").json()["results"]
    by_host = client.get("/api/v1/settlements?host=fireworks&period=2026-10").json()["results"]
    bad = client.get("/api/v1/settlements?period=October")

    # then
    assert by_status == []
    assert [s["id"] for s in by_host] == [str(billed_october.pk)]
    assert bad.status_code == 400


def test_it_serves_the_statement_as_csv(
    billed_october: Settlement, client_for: Callable[..., APIClient]
) -> None:
    # when
    response = client_for(licensor=billed_october.licensor).get(
        f"/api/v1/settlements/{billed_october.pk}/statement.csv"
    )

    # then
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    rows = response.content.decode().splitlines()
    assert rows[0].startswith("settlement_id,licensor,host,settlement_period")
    assert ",usage,minimax-m2.7,commercial,2026-10,fi-2026-06," in rows[1]
    assert rows[1].split(",")[-3:-1] == ["9036.00", "12% of net revenue"]


def test_it_refuses_to_change_a_settled_settlement_in_the_database(
    billed_october: Settlement,
) -> None:
    # given
    settlement_approve(settlement=billed_october, actor="test")
    line = billed_october.lines.first()
    assert line is not None

    # when / then: the triggers refuse edits of the money and of the lines
    with pytest.raises(IntegrityError, match="never change"), transaction.atomic():
        Settlement.objects.filter(pk=billed_october.pk).update(total="1.00")
    with pytest.raises(IntegrityError, match="never change"), transaction.atomic():
        SettlementLine.objects.filter(pk=line.pk).update(amount="1.00")
    with pytest.raises(IntegrityError, match="never change"), transaction.atomic():
        SettlementLine.objects.filter(pk=line.pk).delete()
    with (
        pytest.raises(IntegrityError, match="cannot go from approved to draft"),
        transaction.atomic(),
    ):
        Settlement.objects.filter(pk=billed_october.pk).update(status="draft")


def test_it_refuses_an_unknown_status(billed_october: Settlement) -> None:
    with pytest.raises(IntegrityError), transaction.atomic():
        Settlement.objects.filter(pk=billed_october.pk).update(status="pending")
    with connection.cursor() as cursor:
        cursor.execute("SELECT status FROM billing_settlement WHERE id = %s", [billed_october.pk])
        assert cursor.fetchone() == ("draft",)


def test_it_takes_the_platform_fee_from_the_licensors_share(
    billed_october: Settlement, settings: pytest.FixtureRequest
) -> None:
    # given: a 10% platform fee
    settings.TOLLGATE_PLATFORM_FEE_PERCENT = "10"  # type: ignore[attr-defined]

    # when
    settlement_approve(settlement=billed_october, actor="test")

    # then: the host owes 9036.00; the licensor is owed 8132.40; the platform earns 903.60
    assert party_balances(owner=billed_october.host) == {"USD": {"receivable": 903600}}
    assert party_balances(owner=billed_october.licensor) == {"USD": {"payable": -813240}}
    assert party_balances(owner=None) == {"USD": {"platform_revenue": -90360}}
    assert trial_balance() == {"USD": 0}
