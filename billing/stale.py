"""Runs whose process is gone: no run stays `running` after the process that drove it died
(docs/billing.md, "A run whose process died").

A `run_billing` run records its owner, `<hostname>:<pid>`; on the same machine a dead pid is seen
at once. Every run also has a heartbeat, `heartbeat_at`, moved by each pair that finishes: a run
that has not advanced for `BILLING_RUN_STALE_SECONDS` is taken for dead wherever it ran (a Celery
run's unacknowledged pair tasks come back after the broker's visibility timeout, well within it).
Before that, a Celery run that has not advanced for `BILLING_RUN_RESUME_SECONDS` is resumed: its
pairs not done are queued again, for the tasks the broker lost rather than delayed.

A dead run is marked `failed`, naming why; its drafts stay as they were (re-derivable), and the
next run of the period recomputes them. `billing_run_start` reaps before it starts, and beat reaps
every 10 minutes (`billing.tasks.reap_billing_runs`).
"""

from __future__ import annotations

import os
import socket
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q, TextField, Value
from django.db.models.functions import Concat
from django.utils import timezone

from billing.models import BillingRun, BillingRunPair


def run_owner(trigger: str) -> str:
    """The owner to record for a run started by `trigger` in this process."""
    if trigger != "command":
        return ""
    return f"{socket.gethostname()}:{os.getpid()}"


def _owner_gone(owner: str) -> bool:
    """True when `owner` ran on this machine and its process no longer exists. A pid reused by
    another process reads as alive: the heartbeat then tells."""
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return True
    except PermissionError:  # exists, under another user
        return False
    return False


@transaction.atomic
def billing_runs_reap(*, now: datetime | None = None) -> list[BillingRun]:
    """Mark `failed` every running run whose process is gone or that has not advanced for
    BILLING_RUN_STALE_SECONDS; returns them."""
    now = now or timezone.now()
    stale_before = now - timedelta(seconds=settings.BILLING_RUN_STALE_SECONDS)
    reaped: list[BillingRun] = []
    # Read without a lock: billing_run_start reaps inside its long transaction, and a row lock on
    # a live run would stall its pairs' progress updates until that commits. Only the rows
    # reaped are locked, by the conditional update below.
    for run in BillingRun.objects.filter(status=BillingRun.Status.RUNNING):
        last = run.heartbeat_at or run.started_at
        if run.owner and _owner_gone(run.owner):
            reason = f"its process {run.owner} is gone"
        elif last < stale_before:
            reason = f"no pair finished since {last.isoformat()}"
        else:
            continue
        # Unless a pair finished meanwhile (the heartbeat moved): then it is alive after all.
        unchanged = Q(heartbeat_at=run.heartbeat_at) if run.heartbeat_at else Q(heartbeat_at=None)
        claimed = BillingRun.objects.filter(
            unchanged, pk=run.pk, status=BillingRun.Status.RUNNING
        ).update(
            status=BillingRun.Status.FAILED,
            finished_at=now,
            error=Concat(
                F("error"),
                Value(f"abandoned after {run.pairs_done}/{run.pairs_total} pairs: {reason}\n"),
                output_field=TextField(),
            ),
        )
        if claimed:
            run.refresh_from_db()
            reaped.append(run)
    return reaped


@transaction.atomic
def billing_runs_resume(*, now: datetime | None = None) -> dict[int, list[tuple[int, int]]]:
    """The Celery runs that have not advanced for BILLING_RUN_RESUME_SECONDS (and were not
    resumed within it), each with its pairs not done, as (host_id, licensor_id), for the caller
    to queue again once this commits. Each is marked resumed (`resumed_at`, `resumes`).

    A pair task is normally delivered again by the broker when its worker dies (after the
    visibility timeout), but Redis can also lose it: a worker killed between taking the message
    off the queue and recording it as unacknowledged. Queuing a pair again is harmless (a pair
    done is skipped, two deliveries of a pair serialize on its lock); a run that still does not
    advance is reaped (`billing_runs_reap`) after BILLING_RUN_STALE_SECONDS."""
    now = now or timezone.now()
    quiet_since = now - timedelta(seconds=settings.BILLING_RUN_RESUME_SECONDS)
    stalled = BillingRun.objects.filter(
        Q(heartbeat_at__lt=quiet_since) | Q(heartbeat_at=None, started_at__lt=quiet_since),
        Q(resumed_at=None) | Q(resumed_at__lt=quiet_since),
        status=BillingRun.Status.RUNNING,
        trigger="task",  # a run_billing process drives its own pairs: reaped, never resumed
    )
    resumed: dict[int, list[tuple[int, int]]] = {}
    for run in stalled:
        # Unless a pair finished or another reaper resumed it meanwhile.
        claimed = BillingRun.objects.filter(
            pk=run.pk,
            status=BillingRun.Status.RUNNING,
            heartbeat_at=run.heartbeat_at,
            resumed_at=run.resumed_at,
        ).update(resumed_at=now, resumes=F("resumes") + 1)
        if not claimed:
            continue
        resumed[run.pk] = list(
            BillingRunPair.objects.filter(run=run, done_at=None)
            .order_by("id")
            .values_list("host_id", "licensor_id")
        )
    return resumed


def billing_run_resume_release(*, run_id: int, resumed_at: datetime) -> bool:
    """Undo the resume of `run_id` claimed at `resumed_at` whose pairs could not be queued (the
    broker down): the next reap resumes it again, rather than after another
    BILLING_RUN_RESUME_SECONDS. Returns whether that claim was still the run's."""
    released = BillingRun.objects.filter(
        pk=run_id, status=BillingRun.Status.RUNNING, resumed_at=resumed_at
    ).update(resumed_at=None, resumes=F("resumes") - 1)
    return bool(released)


__all__ = [
    "billing_run_resume_release",
    "billing_runs_reap",
    "billing_runs_resume",
    "run_owner",
]
