"""No run stays `running` after its process is gone (docs/billing.md, "A run whose process
died"): a `run_billing` killed with SIGKILL mid-run is marked failed by the next invocation, which
then completes; a Celery run that stops advancing is resumed after BILLING_RUN_RESUME_SECONDS
(its pairs not done queued again) and failed after BILLING_RUN_STALE_SECONDS."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.db import connection
from django.utils import timezone
from rest_framework.test import APIClient

from billing.models import BillingRun, Settlement
from billing.runs import billing_pair_settle, billing_run_start
from billing.stale import billing_runs_reap, billing_runs_resume
from billing.tasks import reap_billing_runs
from licensing.catalog import catalog_import
from licensing.models import Host, Licensor
from tests.billing.conftest import minimax_catalog, post_usage, record, run_billing
from tests.conftest import subprocess_database_url

ROOT = Path(__file__).resolve().parents[2]
HOSTS = ("h-1", "h-2", "h-3", "h-4")


def four_hosts_usage(client_for: Callable[..., APIClient]) -> None:
    catalog_import(minimax_catalog(hosts=HOSTS))
    for slug in HOSTS:
        host = Host.objects.get(slug=slug)
        post_usage(client_for(host=host), [record(f"{slug}-1", revenue="100.00")])


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_it_fails_a_killed_run_billing_and_the_next_run_completes(
    client_for: Callable[..., APIClient], tmp_path: Path
) -> None:
    # given: run_billing of October, one second per pair, killed after its first pair
    four_hosts_usage(client_for)
    log = tmp_path / "run_billing.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.billing.slow_run_billing", "--period", "2026-10"],
        cwd=ROOT,
        env={
            **os.environ,
            "DATABASE_URL": subprocess_database_url(),
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "TEST_PAIR_PAUSE": "1.0",
        },
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while not BillingRun.objects.filter(period="2026-10", pairs_done__gte=1).exists():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    killed = BillingRun.objects.get(period="2026-10")
    assert killed.status == "running"
    assert killed.owner == f"{socket.gethostname()}:{proc.pid}"

    # when: the next run_billing, of another month
    run_billing("2026-11")

    # then: the killed run is failed, naming its dead process and how far it got
    killed.refresh_from_db()
    assert killed.status == "failed"
    assert killed.finished_at is not None
    assert re.fullmatch(
        rf"abandoned after [12]/4 pairs: its process {socket.gethostname()}:{proc.pid} is gone\n",
        killed.error,
    ), killed.error
    # and October run again completes every pair
    out = run_billing("2026-10")
    assert re.search(r"run \d+ of 2026-10: done, 4/4 pairs, 0 failed", out), out
    assert sorted(
        Settlement.objects.filter(period="2026-10").values_list("host__slug", "total")
    ) == [(slug, Decimal("12.00")) for slug in HOSTS]
    assert not BillingRun.objects.filter(status="running").exists()


@pytest.mark.django_db
def test_it_fails_a_run_that_stopped_advancing(client_for: Callable[..., APIClient]) -> None:
    # given: a Celery run (no owner process) whose pair tasks never ran
    four_hosts_usage(client_for)
    run = billing_run_start(period="2026-10", trigger="task")
    assert (run.owner, run.status) == ("", "running")
    # when: reaped within BILLING_RUN_STALE_SECONDS (3600), nothing happens
    assert billing_runs_reap(now=timezone.now() + timedelta(seconds=3000)) == []
    assert reap_billing_runs() == []
    # then: after it, the run is failed
    later = timezone.now() + timedelta(seconds=3700)
    assert [r.pk for r in billing_runs_reap(now=later)] == [run.pk]
    run.refresh_from_db()
    assert run.status == "failed"
    assert run.error.startswith("abandoned after 0/4 pairs: no pair finished since ")
    # and a pair task of it that comes late writes nothing
    host = Host.objects.get(slug="h-1")
    outcome = billing_pair_settle(
        run_id=run.pk, host_id=host.pk, licensor_id=Licensor.objects.get().pk
    )
    assert outcome.skipped
    assert not Settlement.objects.exists()


@pytest.mark.django_db
def test_it_resumes_a_celery_run_that_stopped_advancing(
    client_for: Callable[..., APIClient],
) -> None:
    # given: a Celery run with one pair settled, whose other pair tasks were lost
    four_hosts_usage(client_for)
    run = billing_run_start(period="2026-10", trigger="task")
    licensor = Licensor.objects.get()
    hosts = {slug: Host.objects.get(slug=slug).pk for slug in HOSTS}
    billing_pair_settle(run_id=run.pk, host_id=hosts["h-1"], licensor_id=licensor.pk)
    start = timezone.now()
    resume = settings.BILLING_RUN_RESUME_SECONDS
    # when: within BILLING_RUN_RESUME_SECONDS of its last pair, nothing is resumed
    assert billing_runs_resume(now=start + timedelta(seconds=resume - 60)) == {}
    # then: after it, its pairs not done are handed back, once per quiet period
    first = start + timedelta(seconds=resume + 1)
    expected = [(hosts[slug], licensor.pk) for slug in HOSTS[1:]]
    assert billing_runs_resume(now=first) == {run.pk: expected}
    assert billing_runs_resume(now=first + timedelta(seconds=60)) == {}
    assert billing_runs_resume(now=first + timedelta(seconds=resume + 1)) == {run.pk: expected}
    run.refresh_from_db()
    assert (run.status, run.resumes) == ("running", 2)
    # and: the reaping still fails it once it has not advanced for BILLING_RUN_STALE_SECONDS
    assert billing_runs_reap(now=start + timedelta(seconds=resume + 60)) == []
    later = start + timedelta(seconds=settings.BILLING_RUN_STALE_SECONDS + 1)
    assert [r.pk for r in billing_runs_reap(now=later)] == [run.pk]


@pytest.mark.django_db
def test_a_run_billing_run_is_never_resumed(client_for: Callable[..., APIClient]) -> None:
    # given: a run of run_billing (its own process drives its pairs)
    four_hosts_usage(client_for)
    run = billing_run_start(period="2026-10", trigger="command")
    # when: it has not advanced for longer than BILLING_RUN_RESUME_SECONDS
    quiet = timezone.now() + timedelta(seconds=settings.BILLING_RUN_RESUME_SECONDS + 1)
    # then: it is not resumed (reaping alone judges it)
    assert billing_runs_resume(now=quiet) == {}
    run.refresh_from_db()
    assert (run.status, run.resumes, run.resumed_at) == ("running", 0, None)


@pytest.mark.django_db
def test_the_reap_task_completes_a_resumed_run(
    client_for: Callable[..., APIClient], settings: Any
) -> None:
    # given: a Celery run none of whose pair tasks ever ran, and no quiet time needed
    four_hosts_usage(client_for)
    run = billing_run_start(period="2026-10", trigger="task")
    settings.BILLING_RUN_RESUME_SECONDS = 0
    # when: beat's reap task runs (in-process, eager: the batches it queues run here)
    assert reap_billing_runs() == []
    # then: the run is done, every pair settled
    run.refresh_from_db()
    assert (run.status, run.pairs_done, run.resumes) == ("done", 4, 1)
    assert Settlement.objects.filter(period="2026-10").count() == 4


@pytest.mark.django_db
def test_pair_transactions_commit_durably(
    client_for: Callable[..., APIClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    # given: a spy on what each batch's transaction would commit with, 2 pairs a batch
    from billing import runs

    seen: list[str] = []
    write = runs.settlements_write

    def spy(**kwargs: Any) -> Any:
        with connection.cursor() as cursor:
            cursor.execute("SHOW synchronous_commit")
            seen.append(cursor.fetchone()[0])
        return write(**kwargs)

    monkeypatch.setattr(runs, "settlements_write", spy)
    monkeypatch.setattr(settings, "BILLING_PAIRS_PER_BATCH", 2)
    four_hosts_usage(client_for)
    # when
    run_billing("2026-10")
    # then: every batch's settlements are on disk when its commit returns
    assert seen == ["on"] * 2


@pytest.mark.django_db
def test_a_resume_the_broker_refused_is_tried_again_at_the_next_reap(
    client_for: Callable[..., APIClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    # given: a Celery run none of whose pair tasks ran, quiet for 2 minutes (resumes after 1)
    four_hosts_usage(client_for)
    run = billing_run_start(period="2026-10", trigger="task")
    BillingRun.objects.filter(pk=run.pk).update(
        heartbeat_at=timezone.now() - timedelta(seconds=120)
    )
    monkeypatch.setattr(settings, "BILLING_RUN_RESUME_SECONDS", 60)
    # and a broker that refuses every message
    from kombu.exceptions import OperationalError

    from billing.tasks import bill_pairs

    def refused(*args: Any, **kwargs: Any) -> Any:
        raise OperationalError("connection refused")

    monkeypatch.setattr(bill_pairs, "delay", refused)

    # when: beat's reap runs
    assert reap_billing_runs() == []

    # then: the run is still running, and its resume is undone
    run.refresh_from_db()
    assert (run.status, run.pairs_done, run.resumes, run.resumed_at) == ("running", 0, 0, None)

    # when: the broker is back, and the next reap runs (in-process, eager)
    monkeypatch.undo()
    monkeypatch.setattr(settings, "BILLING_RUN_RESUME_SECONDS", 60)
    assert reap_billing_runs() == []

    # then: it resumed the run at once, not a resume window later, and the run completed
    run.refresh_from_db()
    assert (run.status, run.pairs_done, run.resumes) == ("done", 4, 1)
    assert Settlement.objects.filter(period="2026-10").count() == 4
