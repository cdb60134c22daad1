"""Late usage of a (licensor, host) pair that had no settlement of the month (docs/billing.md,
"Late usage of a pair without a settlement"): the month's completed run settles such a pair, so its
later usage is late, billed once as an adjustment by the next run, and a re-run of the month opens
no settlement for it."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from rest_framework.test import APIClient

from billing.models import PendingRerate, Settlement
from billing.runs import billing_pair_settle, billing_run_start
from licensing.models import Host, Licensor
from tests.billing.conftest import (
    minimax_catalog,
    post_usage,
    record,
    run_billing,
    settlement_of,
)
from usage.models import PeriodComplete, PeriodOpen

pytestmark = pytest.mark.django_db


@pytest.fixture
def world(import_catalog: Callable[[dict[str, Any]], None]) -> tuple[Host, Host, Licensor]:
    # given: two hosts, each with the 12%-of-commercial-revenue agreement
    import_catalog(minimax_catalog(hosts=("alpha", "beta")))
    return (
        Host.objects.get(slug="alpha"),
        Host.objects.get(slug="beta"),
        Licensor.objects.get(slug="minimax"),
    )


def _lines(s: Settlement) -> list[tuple[str, str, Decimal]]:
    return [(line.kind, line.period, line.amount) for line in s.lines.order_by("position")]


def test_it_bills_late_usage_of_a_pair_without_settlement_once(
    world: tuple[Host, Host, Licensor], client_for: Callable[..., APIClient]
) -> None:
    alpha, beta, minimax = world
    licensor = client_for(licensor=minimax)
    beta_client = client_for(host=beta)
    # given: October billed and approved for alpha; beta had no October usage
    post_usage(client_for(host=alpha), [record("a-oct", revenue="100.00")])
    run_billing("2026-10")
    a_oct = settlement_of(licensor="minimax", host="alpha", period="2026-10")
    assert a_oct.total == Decimal("12.00")
    assert licensor.post(f"/api/v1/settlements/{a_oct.pk}/approve").status_code == 200
    assert PeriodComplete.objects.filter(period="2026-10").exists()
    assert list(PeriodOpen.objects.values_list("host__slug", "period")) == [("alpha", "2026-10")]

    # when: beta posts October records after the run (the fast path), then one more in a batch
    # that repeats an event_id (the per-record path)
    body = post_usage(beta_client, [record("b-oct-1", revenue="50.00")])
    assert (body["accepted"], body["late"]) == (1, 1)
    repeated = record("b-oct-2", revenue="25.00", at="2026-10-20T08:00:00Z")
    body = post_usage(beta_client, [repeated, repeated])
    assert (body["accepted"], body["late"]) == (1, 1)
    # and in November
    post_usage(beta_client, [record("b-nov", revenue="10.00", at="2026-11-05T00:00:00Z")])

    # then: November bills beta's October as one adjustment: 12% of 75.00
    run_billing("2026-11")
    b_nov = settlement_of(licensor="minimax", host="beta", period="2026-11")
    assert _lines(b_nov) == [
        ("usage", "2026-11", Decimal("1.20")),
        ("adjustment", "2026-10", Decimal("9.00")),
    ]
    assert b_nov.total == Decimal("10.20")
    # a re-run of November recomputes the same draft
    run_billing("2026-11")
    b_nov = settlement_of(licensor="minimax", host="beta", period="2026-11")
    assert b_nov.total == Decimal("10.20")
    assert licensor.post(f"/api/v1/settlements/{b_nov.pk}/approve").status_code == 200

    # once: December has nothing more to adjust for beta
    run_billing("2026-12")
    assert not Settlement.objects.filter(host=beta, period="2026-12").exists()

    # a re-run of October opens no settlement for beta, and leaves alpha's as approved
    run_billing("2026-10")
    assert list(
        Settlement.objects.filter(period="2026-10").values_list("host__slug", "status", "total")
    ) == [("alpha", "approved", Decimal("12.00"))]
    response = beta_client.get("/api/v1/settlements?period=2026-10")
    assert response.json()["results"] == []

    # and --verify reproduces both months
    assert "all match" in run_billing("2026-10", "--verify")
    assert "verified 1 settled settlement(s) of 2026-11: all match" in run_billing(
        "2026-11", "--verify"
    )


def test_usage_of_an_open_pair_stays_on_time(
    world: tuple[Host, Host, Licensor], client_for: Callable[..., APIClient]
) -> None:
    alpha, _, _ = world
    alpha_client = client_for(host=alpha)
    # given: October run completed with alpha's draft not yet decided
    post_usage(alpha_client, [record("a-1", revenue="100.00")])
    run_billing("2026-10")
    # when: alpha posts more October usage
    body = post_usage(alpha_client, [record("a-2", revenue="50.00")])
    # then: it is not late (the draft is open), and a re-run of October bills it in the draft
    assert body["late"] == 0
    run_billing("2026-10")
    assert settlement_of(licensor="minimax", host="alpha", period="2026-10").total == Decimal(
        "18.00"
    )


def _straggler(
    world: tuple[Host, Host, Licensor], client_for: Callable[..., APIClient]
) -> tuple[Host, Host, Licensor]:
    alpha, beta, minimax = world
    post_usage(client_for(host=alpha), [record("a-1", revenue="100.00")])
    # given: October's run has aggregated (alpha only) but not completed
    run = billing_run_start(period="2026-10")
    # when: beta's October record lands before the run completes: not late, not in the run
    body = post_usage(client_for(host=beta), [record("b-1", revenue="40.00")])
    assert body["late"] == 0
    billing_pair_settle(run_id=run.pk, host_id=alpha.pk, licensor_id=minimax.pk)
    return alpha, beta, minimax


def _billed_by_november(beta: Host) -> None:
    run_billing("2026-10")
    assert not Settlement.objects.filter(host=beta, period="2026-10").exists()
    run_billing("2026-11")
    b_nov = settlement_of(licensor="minimax", host="beta", period="2026-11")
    assert _lines(b_nov) == [("adjustment", "2026-10", Decimal("4.80"))]
    assert "all match" in run_billing("2026-11", "--verify")


@pytest.mark.django_db(transaction=True)
def test_usage_committed_between_snapshot_and_completion_is_billed_by_the_next_run(
    world: tuple[Host, Host, Licensor], client_for: Callable[..., APIClient]
) -> None:
    _, beta, _ = _straggler(world, client_for)
    # then: the sweep after the completion's commit has the next run re-rate beta's October
    assert PendingRerate.objects.filter(host=beta, period="2026-10").exists()
    assert PeriodComplete.objects.get(period="2026-10").swept_at is not None
    _billed_by_november(beta)


def test_a_sweep_lost_with_its_process_is_done_by_the_next_run(
    world: tuple[Host, Host, Licensor], client_for: Callable[..., APIClient]
) -> None:
    # given: the completion committed but its sweep never ran (here: the test's transaction
    # never commits, so on_commit callbacks are dropped, as a crash would drop them)
    _, beta, _ = _straggler(world, client_for)
    assert not PendingRerate.objects.exists()
    assert PeriodComplete.objects.get(period="2026-10").swept_at is None
    # then: the next run sweeps first, and bills beta's October in November
    _billed_by_november(beta)
    assert PeriodComplete.objects.get(period="2026-10").swept_at is not None
