"""The Celery app of the worker that tests/billing/test_celery_worker.py starts as a subprocess:
the project's app, with a short broker visibility timeout so that the messages of a worker killed
with SIGKILL come back within seconds (production's is 15 minutes), and an optional pause before
each pair task so that a test can kill the worker while a run is half done."""

from __future__ import annotations

import os
import time
from typing import Any

from celery.signals import task_prerun, worker_process_init

from config.celery import app

app.conf.broker_transport_options = {
    # The production sweep for abandoned messages (config/settings.py: every 10 s), so the tests
    # that kill a worker show a killed worker's tasks come back with it.
    **(app.conf.broker_transport_options or {}),
    "visibility_timeout": int(os.environ.get("TEST_VISIBILITY_TIMEOUT", "4")),
    # A sweep lock left behind by a worker killed mid-sweep (a window of milliseconds) lapses
    # after a few seconds rather than 60, which a test's timeout would not cover.
    "unacked_mutex_expire": 5,
}
PAUSE = float(os.environ.get("TEST_PAIR_PAUSE", "0"))

# For the beat test: the project's own monthly entry (its task name and options), fired every
# second for a fixed period instead of on the 1st at 02:00.
if os.environ.get("TEST_BEAT_PERIOD"):
    from django.conf import settings

    monthly = dict(settings.CELERY_BEAT_SCHEDULE["monthly-billing"])
    monthly.update(schedule=1.0, args=(os.environ["TEST_BEAT_PERIOD"],))
    app.conf.beat_schedule = {"monthly-billing": monthly}

# For the tests of a run that stopped advancing: the project's own reap entry (its task), fired
# every TEST_REAP_EVERY seconds instead of every 10 minutes.
if os.environ.get("TEST_REAP_EVERY"):
    from django.conf import settings

    reap = dict(settings.CELERY_BEAT_SCHEDULE["billing-runs-reap"])
    reap.update(schedule=float(os.environ["TEST_REAP_EVERY"]))
    app.conf.beat_schedule = {"billing-runs-reap": reap}

# For the notification tests: retries of a failed send a second apart instead of a minute.
RETRY_BASE = os.environ.get("TEST_NOTIFICATION_RETRY_BASE")


@task_prerun.connect
def _pause_pairs(sender: Any = None, **kwargs: Any) -> None:
    if PAUSE and getattr(sender, "name", "") in (
        "billing.tasks.bill_pair",
        "billing.tasks.bill_pairs",
    ):
        time.sleep(PAUSE)
    if RETRY_BASE and getattr(sender, "name", "") == "billing.notifications.send_notification":
        from billing import notifications  # the apps are loaded by now

        notifications.RETRY_BASE_SECONDS = float(RETRY_BASE)


# For the test that kills a worker inside a batch's transaction: each batch, once it has written
# its settlements, holds its transaction (and its pairs' locks) open this many seconds.
HOLD = float(os.environ.get("TEST_BATCH_HOLD", "0"))


@worker_process_init.connect
def _hold_batches(**kwargs: Any) -> None:
    if not HOLD:
        return
    from billing import runs

    write = runs.settlements_write

    def held(**kw: Any) -> Any:
        outcome = write(**kw)
        time.sleep(HOLD)
        return outcome

    runs.settlements_write = held  # type: ignore[assignment]


# For the broker restart test (tests/ops/test_broker_restart.py): a task that holds a pool
# process for a while and needs no database, so that one is in flight when Redis goes away.
@app.task(name="tests.pause")
def pause(seconds: float, marker: str) -> str:
    time.sleep(seconds)
    return marker


__all__ = ["app"]
