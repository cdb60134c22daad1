"""The tasks as beat and the in-process (eager) mode run them."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from unittest.mock import patch

from celery.schedules import crontab
from django.conf import settings
from rest_framework.test import APIClient

from billing.models import BillingRun, Settlement
from billing.tasks import bill_pair, bill_pairs, run_monthly_billing
from config.celery import app
from core.periods import previous_period
from licensing.catalog import catalog_import
from licensing.models import Host, Licensor
from tests.billing.conftest import minimax_catalog, post_usage, record


def test_it_schedules_the_monthly_run_on_the_first_at_two() -> None:
    # given
    entry = settings.CELERY_BEAT_SCHEDULE["monthly-billing"]

    # then: beat names a registered task, on the 1st at 02:00 UTC
    assert entry["task"] in app.tasks
    assert entry["task"] == run_monthly_billing.name
    schedule = entry["schedule"]
    assert isinstance(schedule, crontab)
    # celery-types does not declare crontab's parsed fields
    fields = (schedule.day_of_month, schedule.hour, schedule.minute)  # type: ignore[attr-defined]
    assert fields == ({1}, {2}, {0})
    assert run_monthly_billing.acks_late and bill_pair.acks_late and bill_pairs.acks_late


def test_it_bills_the_previous_utc_month_by_default(
    minimax_world: tuple[Host, Licensor], client_for: Callable[..., APIClient]
) -> None:
    # given: usage in the month before the current one
    period = previous_period(datetime.now(UTC))
    post_usage(
        client_for(host=minimax_world[0]),
        [record("prev-1", revenue="100.00", at=f"{period}-02T00:00:00Z")],
    )

    # when: what beat sends, run in-process (no broker configured)
    run_id = run_monthly_billing.delay().get()

    # then
    run = BillingRun.objects.get(pk=run_id)
    assert (run.period, run.status, run.progress) == (period, "done", "1/1")
    assert Settlement.objects.get(period=period).total_display == "12.00"


def test_it_knows_the_previous_month_across_a_year() -> None:
    assert previous_period(datetime(2027, 1, 1, 2, tzinfo=UTC)) == "2026-12"
    assert previous_period(datetime(2026, 11, 30, 23, 59, tzinfo=UTC)) == "2026-10"


def test_it_queues_one_task_per_batch_of_pairs(
    minimax_world: tuple[Host, Licensor],
    client_for: Callable[..., APIClient],
    settings: Any,
) -> None:
    # given: three hosts with usage, batches of two pairs
    settings.BILLING_PAIRS_PER_BATCH = 2
    catalog_import(minimax_catalog(hosts=("fireworks", "h-2", "h-3")))
    for slug in ("fireworks", "h-2", "h-3"):
        post_usage(
            client_for(host=Host.objects.get(slug=slug)), [record(f"{slug}-1", revenue="100")]
        )
    # when: the monthly task, in-process
    run_id, sent = _monthly_run_batches("2026-10")

    # then: two tasks (2 pairs, then 1), and every pair settled once
    assert [len(batch) for batch in sent] == [2, 1]
    run = BillingRun.objects.get(pk=run_id)
    assert (run.status, run.pairs_done, run.settlements_written) == ("done", 3, 3)
    assert Settlement.objects.filter(period="2026-10").count() == 3


def test_it_cuts_batches_by_the_groups_they_hold(
    minimax_world: tuple[Host, Licensor],
    client_for: Callable[..., APIClient],
    settings: Any,
) -> None:
    # given: three hosts, the first with three groups (three categories), the others with one
    # each; batches of at most 500 pairs but 2 groups
    settings.BILLING_GROUPS_PER_BATCH = 2
    catalog_import(minimax_catalog(hosts=("fireworks", "h-2", "h-3")))
    post_usage(
        client_for(host=minimax_world[0]),
        [
            record("f-1", revenue="100", category="commercial"),
            record("f-2", revenue="100", category="research"),
            record("f-3", revenue="100", category="individual"),
        ],
    )
    for slug in ("h-2", "h-3"):
        post_usage(
            client_for(host=Host.objects.get(slug=slug)), [record(f"{slug}-1", revenue="100")]
        )
    # when: the monthly task, in-process
    run_id, sent = _monthly_run_batches("2026-10")

    # then: the pair of three groups alone (over the limit, a batch of its own), then the two
    # pairs of one group together; every pair settled once
    hosts = dict(Host.objects.values_list("pk", "slug"))
    assert [[hosts[h] for h, _ in batch] for batch in sent] == [["fireworks"], ["h-2", "h-3"]]
    run = BillingRun.objects.get(pk=run_id)
    assert (run.status, run.groups_count, run.pairs_done) == ("done", 5, 3)
    assert Settlement.objects.filter(period="2026-10").count() == 3


def _monthly_run_batches(period: str) -> tuple[int, list[list[list[int]]]]:
    """Run the monthly task in-process; return the run's id and the pairs of each `bill_pairs`
    task it queued, in order (each still runs)."""
    sent: list[list[list[int]]] = []
    real = bill_pairs.delay

    def spy(run_id: int, pairs: list[list[int]]) -> Any:
        sent.append(pairs)
        return real(run_id, pairs)

    with patch.object(bill_pairs, "delay", spy):
        run_id = run_monthly_billing.delay(period).get()
    return run_id, sent
