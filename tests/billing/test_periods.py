"""Open and settled months: a draft is recomputed on a re-run; a settled month never changes and
its later usage becomes an adjustment line (docs/rating.md, worked example 5); --verify re-rates
settled months and catches a tampered line."""

from __future__ import annotations

import io
from collections.abc import Callable
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.db import connection
from rest_framework.test import APIClient

from billing.models import BillingRun, PendingRerate, Settlement
from billing.review import settlement_approve
from billing.verify import settlements_verify
from ledger.selectors import party_balances, trial_balance
from licensing.models import Host, Licensor
from tests.billing.conftest import post_usage, record, run_billing, settlement_of


def lines_of(settlement: Settlement) -> list[tuple[str, str, str, Decimal]]:
    return [(li.kind, li.period, li.customer_category, li.amount) for li in settlement.lines.all()]


def test_it_recomputes_a_draft_on_a_rerun(
    minimax_world: tuple[Host, Licensor], client_for: Callable[..., APIClient]
) -> None:
    # given: a draft for October
    host, _ = minimax_world
    client = client_for(host=host)
    post_usage(client, [record("c-1", revenue="1000.00")])
    run_billing("2026-10")
    draft = settlement_of(licensor="minimax", host="fireworks", period="2026-10")
    assert draft.total == Decimal("120.00")

    # when: more October usage, and the run again
    post_usage(client, [record("c-2", revenue="500.00", at="2026-10-31T23:59:59Z")])
    run_billing("2026-10")

    # then: the same settlement, recomputed
    again = settlement_of(licensor="minimax", host="fireworks", period="2026-10")
    assert again.pk == draft.pk
    assert again.total == Decimal("180.00")
    assert again.usage_digest != draft.usage_digest
    assert Settlement.objects.count() == 1
    assert BillingRun.objects.filter(period="2026-10", status="done").count() == 2


def test_it_bills_late_usage_as_an_adjustment_of_the_next_settlement(
    minimax_world: tuple[Host, Licensor], client_for: Callable[..., APIClient]
) -> None:
    # given: October settled (approved), and November's own usage
    host, _ = minimax_world
    client = client_for(host=host)
    post_usage(client, [record("oct-1", revenue="75300.00")])
    run_billing("2026-10")
    october = settlement_of(licensor="minimax", host="fireworks", period="2026-10")
    settlement_approve(settlement=october, actor="test")
    before = (october.total, october.usage_digest, october.terms_digest, lines_of(october))

    # when: on 3 November the host reports an October record of $500 commercial revenue
    body = post_usage(
        client,
        [
            record("oct-late", revenue="500.00", at="2026-10-28T09:00:00Z"),
            record("nov-1", revenue="1000.00", at="2026-11-02T09:00:00Z"),
        ],
    )
    assert body["accepted"] == 2
    run_billing("2026-11")

    # then: November carries an adjustment line for 2026-10 of $60.00; October is unchanged
    november = settlement_of(licensor="minimax", host="fireworks", period="2026-11")
    assert lines_of(november) == [
        ("usage", "2026-11", "commercial", Decimal("120.00")),
        ("adjustment", "2026-10", "commercial", Decimal("60.00")),
    ]
    adjustment = november.lines.get(kind="adjustment")
    assert adjustment.revenue == Decimal("500.00")
    assert adjustment.requests == 1
    assert november.total == Decimal("180.00")
    october.refresh_from_db()
    assert (october.total, october.usage_digest, october.terms_digest, lines_of(october)) == before

    # and a re-run of November does not bill the adjustment twice
    run_billing("2026-11")
    november = settlement_of(licensor="minimax", host="fireworks", period="2026-11")
    assert november.total == Decimal("180.00")
    # and once November is approved, December bills no further adjustment for October
    settlement_approve(settlement=november, actor="test")
    run_billing("2026-12")
    assert not Settlement.objects.filter(period="2026-12").exists()
    assert party_balances(owner=host) == {"USD": {"receivable": 903600 + 18000}}
    assert trial_balance() == {"USD": 0}


def test_it_rerates_usage_that_arrived_while_the_draft_waited(
    minimax_world: tuple[Host, Licensor], client_for: Callable[..., APIClient]
) -> None:
    # given: October's draft, then a record that arrives before approval (not late: still open)
    host, _ = minimax_world
    client = client_for(host=host)
    post_usage(client, [record("oct-1", revenue="1000.00")])
    run_billing("2026-10")
    october = settlement_of(licensor="minimax", host="fireworks", period="2026-10")
    post_usage(client, [record("oct-2", revenue="100.00", at="2026-10-30T00:00:00Z")])

    # when: approved as computed, then November is billed
    settlement_approve(settlement=october, actor="test")
    run_billing("2026-11")

    # then: the record the approved draft missed is billed as an adjustment
    assert PendingRerate.objects.filter(period="2026-10").exists()
    november = settlement_of(licensor="minimax", host="fireworks", period="2026-11")
    assert lines_of(november) == [("adjustment", "2026-10", "commercial", Decimal("12.00"))]
    # and a settlement of adjustments only verifies once settled
    settlement_approve(settlement=november, actor="test")
    assert "all match" in run_billing("2026-11", "--verify")


def test_it_verifies_settled_months_and_names_a_tampered_settlement(
    minimax_world: tuple[Host, Licensor], client_for: Callable[..., APIClient]
) -> None:
    # given: October approved, then late usage (which must not make verify fail)
    host, _ = minimax_world
    client = client_for(host=host)
    post_usage(
        client,
        [
            record("oct-1", revenue="75300.00"),
            record("oct-2", revenue="4100.00", category="individual"),
        ],
    )
    run_billing("2026-10")
    october = settlement_of(licensor="minimax", host="fireworks", period="2026-10")
    settlement_approve(settlement=october, actor="test")
    post_usage(client, [record("oct-late", revenue="500.00", at="2026-10-28T09:00:00Z")])

    # when / then: it verifies (also from the month's aggregation at once, late usage excluded)
    out = run_billing("2026-10", "--verify")
    assert "verified 1 settled settlement(s) of 2026-10: all match" in out
    assert settlements_verify(period="2026-10", month_at_once=1) == (1, [])

    # when: a line is tampered with behind the triggers' back
    with connection.cursor() as cursor:
        cursor.execute("SET session_replication_role = replica")
        cursor.execute(
            "UPDATE billing_settlementline SET amount = amount + 1"
            " WHERE settlement_id = %s AND customer_category = 'commercial'",
            [october.pk],
        )
        cursor.execute("RESET session_replication_role")

    # then: exit 1, naming the settlement; the month's aggregation at once finds the same
    with pytest.raises(SystemExit) as exited:
        run_billing("2026-10", "--verify")
    assert exited.value.code == 1
    one_by_one = [str(p) for p in settlements_verify(period="2026-10")[1]]
    at_once = [str(p) for p in settlements_verify(period="2026-10", month_at_once=1)[1]]
    assert at_once == one_by_one
    assert len(at_once) == 2 and "lines differ from a re-rating" in at_once[0]


def test_it_names_the_tampered_settlement_on_stderr(
    minimax_world: tuple[Host, Licensor],
    client_for: Callable[..., APIClient],
    capsys: pytest.CaptureFixture[str],
) -> None:
    # given
    host, _ = minimax_world
    post_usage(client_for(host=host), [record("oct-1", revenue="100.00")])
    run_billing("2026-10")
    october = settlement_of(licensor="minimax", host="fireworks", period="2026-10")
    settlement_approve(settlement=october, actor="test")
    with connection.cursor() as cursor:
        cursor.execute("SET session_replication_role = replica")
        cursor.execute(
            "UPDATE billing_settlement SET usage_digest = 'sha256:0' WHERE id = %s", [october.pk]
        )
        cursor.execute("RESET session_replication_role")

    # when
    from django.core.management import call_command

    with pytest.raises(SystemExit):
        call_command("run_billing", "--period", "2026-10", "--verify")

    # then
    err = capsys.readouterr().err
    assert f"MISMATCH settlement {october.pk} (minimax/fireworks 2026-10 USD)" in err
    assert "usage_digest differs" in err


def test_a_month_whose_corrections_take_back_more_is_a_credit_on_the_books(
    minimax_world: tuple[Host, Licensor], client_for: Callable[..., APIClient]
) -> None:
    # given: October settled at $120.00 (12% of $1,000 of commercial revenue)
    host, licensor = minimax_world
    client = client_for(host=host)
    post_usage(client, [record("oct-1", revenue="1000.00")])
    run_billing("2026-10")
    settlement_approve(
        settlement=settlement_of(licensor="minimax", host="fireworks", period="2026-10"),
        actor="test",
    )

    # when: in November the host corrects that record down by $500 and reports nothing else
    post_usage(client, [record("oct-1-fix", revenue="-500.00", corrects="oct-1")])
    run_billing("2026-11")
    november = settlement_of(licensor="minimax", host="fireworks", period="2026-11")

    # then: November is a $60.00 credit, and approving it posts the mirror of an accrual
    assert lines_of(november) == [("adjustment", "2026-10", "commercial", Decimal("-60.00"))]
    assert november.total == Decimal("-60.00")
    settlement_approve(settlement=november, actor="test")
    assert party_balances(owner=host) == {"USD": {"receivable": 12000 - 6000}}
    assert party_balances(owner=licensor) == {"USD": {"payable": -12000 + 6000}}
    assert trial_balance() == {"USD": 0}


def test_verify_rederives_adjustment_lines_and_catches_a_tampered_one(
    minimax_world: tuple[Host, Licensor], client_for: Callable[..., APIClient]
) -> None:
    # given: October settled, late October usage billed as November's adjustment, November settled
    host, _ = minimax_world
    client = client_for(host=host)
    post_usage(client, [record("oct-1", revenue="75300.00")])
    run_billing("2026-10")
    settlement_approve(
        settlement=settlement_of(licensor="minimax", host="fireworks", period="2026-10"),
        actor="test",
    )
    post_usage(
        client,
        [
            record("oct-late", revenue="500.00", at="2026-10-28T09:00:00Z"),
            record("nov-1", revenue="1000.00", at="2026-11-02T09:00:00Z"),
        ],
    )
    run_billing("2026-11")
    november = settlement_of(licensor="minimax", host="fireworks", period="2026-11")
    settlement_approve(settlement=november, actor="test")
    # and more late October usage after that, which belongs to a later settlement
    post_usage(client, [record("oct-later", revenue="100.00", at="2026-10-29T09:00:00Z")])

    # when / then: November, adjustment included, verifies
    assert "all match" in run_billing("2026-11", "--verify")

    # when: the adjustment line is tampered with behind the triggers' back
    with connection.cursor() as cursor:
        cursor.execute("SET session_replication_role = replica")
        cursor.execute(
            "UPDATE billing_settlementline SET amount = amount + 1"
            " WHERE settlement_id = %s AND kind = 'adjustment'",
            [november.pk],
        )
        cursor.execute("RESET session_replication_role")

    # then: exit 1, naming the adjustment lines
    err = io.StringIO()
    with pytest.raises(SystemExit) as exited:
        call_command("run_billing", "--period", "2026-11", "--verify", stdout=err, stderr=err)
    assert exited.value.code == 1
    assert "adjustment lines differ from a re-rating" in err.getvalue()
