"""Decisions under concurrency, on a real PostgreSQL with committed transactions: two approvals
at once give one approval and one accrual; a run racing an approval never revises or recomputes
a settlement approved under it, and an approval racing a revision finds it superseded."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection, connections
from rest_framework.test import APIClient

from billing.errors import SettlementStateError
from billing.models import BillingRunPair, Settlement
from billing.review import settlement_approve, settlement_dispute
from billing.runs import billing_pair_settle, billing_run_start
from ledger.models import JournalEntry
from licensing.models import Host, Licensor
from tests.billing.conftest import post_usage, record, run_billing

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def october(
    minimax_world: tuple[Host, Licensor], client_for: Callable[..., APIClient]
) -> dict[str, Any]:
    host, _ = minimax_world
    host_client = client_for(host=host)
    post_usage(host_client, [record("c-1", revenue="75300.00")])
    run_billing("2026-10")
    return {"host": host_client, "settlement": Settlement.objects.get(period="2026-10")}


def _in_thread(target: Callable[[], Any], results: list[Any]) -> threading.Thread:
    def run() -> None:
        try:
            results.append(target())
        except Exception as exc:  # the outcome under test
            results.append(exc)
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def _wait_for_lock_waiters(n: int) -> None:
    """Until `n` sessions of this test database wait on a lock (row or advisory), or 10 s."""
    deadline = time.monotonic() + 10
    with connections["default"].cursor() as cursor:
        while time.monotonic() < deadline:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
            if cursor.fetchone()[0] >= n:
                return
            time.sleep(0.02)
    raise AssertionError(f"{n} lock waiter(s) never appeared")


def test_it_gives_one_approval_and_one_accrual_for_two_concurrent_approvals(
    october: dict[str, Any],
) -> None:
    # given a disputed settlement (approval is allowed from disputed too)
    s = october["settlement"]
    settlement_dispute(settlement=s, reason="too high", actor="licensor:minimax")
    barrier = threading.Barrier(2)
    results: list[Any] = []

    def approve() -> Any:
        barrier.wait()
        return settlement_approve(settlement=s, actor="licensor:minimax")

    # when two approvals start at once
    threads = [_in_thread(approve, results) for _ in range(2)]
    for t in threads:
        t.join()

    # then one wins, the other is invalid_state; one accrual, one "approved" event
    assert sorted(type(r).__name__ for r in results) == ["Settlement", "SettlementStateError"]
    assert JournalEntry.objects.filter(reference_type="settlement").count() == 1
    assert s.events.filter(action="approved").count() == 1


def test_it_never_revises_a_settlement_approved_while_the_run_waited(
    october: dict[str, Any],
) -> None:
    # given a disputed settlement, a correction, and a run whose pair task waits on the pair's
    # lock (held here) after the run's snapshot
    s = october["settlement"]
    settlement_dispute(settlement=s, reason="too high", actor="licensor:minimax")
    post_usage(october["host"], [record("c-1-fix", corrects="c-1", revenue="-5300.00")])
    run = billing_run_start(period="2026-10")
    pair = BillingRunPair.objects.get(run=run)
    holder = connections.create_connection("default")
    with holder.cursor() as cursor:
        cursor.execute(
            "SELECT pg_advisory_lock(hashtextextended(%s, 0))",
            [f"billing:{pair.host_id}:{pair.licensor_id}:2026-10"],
        )
    results: list[Any] = []
    thread = _in_thread(
        lambda: billing_pair_settle(
            run_id=run.pk, host_id=pair.host_id, licensor_id=pair.licensor_id
        ),
        results,
    )
    _wait_for_lock_waiters(1)

    # when the licensor approves meanwhile, then the run goes on
    settlement_approve(settlement=s, actor="licensor:minimax")
    holder.close()
    thread.join()

    # then the run left the approved settlement alone: no revision, no recompute
    (outcome,) = results
    assert outcome.written == []
    assert [x.pk for x in outcome.settled] == [s.pk]
    assert Settlement.objects.count() == 1
    s.refresh_from_db()
    assert (s.status, str(s.total)) == ("approved", "9036.0000")
    assert JournalEntry.objects.filter(reference_type="settlement").count() == 1


def test_it_refuses_an_approval_that_waited_for_a_revision(october: dict[str, Any]) -> None:
    # given a disputed settlement and a correction; the run's pair task holds the disputed row
    # FOR UPDATE and waits at its end (on the run's row, held here)
    s = october["settlement"]
    settlement_dispute(settlement=s, reason="too high", actor="licensor:minimax")
    post_usage(october["host"], [record("c-1-fix", corrects="c-1", revenue="-5300.00")])
    run = billing_run_start(period="2026-10")
    pair = BillingRunPair.objects.get(run=run)
    holder = connections.create_connection("default")
    holder.set_autocommit(False)
    with holder.cursor() as cursor:
        cursor.execute("SELECT 1 FROM billing_billingrun WHERE id = %s FOR UPDATE", [run.pk])
    run_results: list[Any] = []
    run_thread = _in_thread(
        lambda: billing_pair_settle(
            run_id=run.pk, host_id=pair.host_id, licensor_id=pair.licensor_id
        ),
        run_results,
    )
    _wait_for_lock_waiters(1)

    # when the licensor approves the disputed settlement meanwhile (it waits for the run)
    approve_results: list[Any] = []
    approve_thread = _in_thread(
        lambda: settlement_approve(settlement=s, actor="licensor:minimax"), approve_results
    )
    _wait_for_lock_waiters(2)
    holder.rollback()
    holder.close()
    run_thread.join()
    approve_thread.join()

    # then the revision stands and the approval found the settlement superseded
    (error,) = approve_results
    assert isinstance(error, SettlementStateError)
    s.refresh_from_db()
    assert s.status == "superseded"
    revision = Settlement.objects.get(supersedes=s)
    assert (revision.status, str(revision.total)) == ("draft", "8400.0000")
    assert not JournalEntry.objects.exists()
