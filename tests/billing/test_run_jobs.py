"""`run_billing --jobs N` bills the batches of pairs in N processes at once (docs/billing.md,
"Batches"): a batch that waits does not hold the others up, every pair is billed once, the
children die with the command, and a pair that fails in a child process is recorded and named
like in one process."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
from django.core.management.base import CommandError
from rest_framework.test import APIClient

from billing.models import BillingRun, BillingRunPair, Settlement
from licensing.catalog import catalog_import
from licensing.models import Host, Licensor
from tests.billing.conftest import minimax_catalog, post_usage, record, run_billing
from tests.billing.test_run_failures import overflowing_tokenco_usage
from tests.billing.test_run_liveness import HOSTS, ROOT, four_hosts_usage
from tests.conftest import subprocess_database_url

PERIOD = "2026-10"


@dataclass
class Started:
    """A `run_billing --jobs 2` subprocess whose first batch waits for its pair's lock."""

    proc: subprocess.Popen[bytes]
    log: Path
    first: tuple[int, int]  # (host_id, licensor_id) of the waiting pair


@contextmanager
def first_batch_waiting(client_for: Callable[..., APIClient], tmp_path: Path) -> Iterator[Started]:
    """Four pairs, one a batch; h-1's pair (the first batch) locked from another session, as a
    delivery of the same batch still running elsewhere would hold it (billing/runs.py); then
    `run_billing --jobs 2` started, and waited for until the three other pairs are done. The
    lock is released on leaving (and the command killed if it still runs)."""
    four_hosts_usage(client_for)
    first = (Host.objects.get(slug="h-1").pk, Licensor.objects.get(slug="minimax").pk)
    holder = psycopg.connect(subprocess_database_url(), autocommit=True)
    holder.execute(
        "SELECT pg_advisory_lock(hashtextextended(%s, 0))",
        [f"billing:{first[0]}:{first[1]}:{PERIOD}"],
    )
    log = tmp_path / "run_billing.log"
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "run_billing", "--period", PERIOD, "--jobs", "2"],
        cwd=ROOT,
        env={
            **os.environ,
            "DATABASE_URL": subprocess_database_url(),
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "BILLING_PAIRS_PER_BATCH": "1",
        },
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while BillingRunPair.objects.filter(done_at__isnull=False).count() < 3:
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        yield Started(proc=proc, log=log, first=first)
    finally:
        holder.close()  # the lock goes with the session: the waiting batch goes on
        try:
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_batch_that_waits_does_not_hold_up_the_others(
    client_for: Callable[..., APIClient], tmp_path: Path
) -> None:
    # given / when: the first batch waits for its lock
    with first_batch_waiting(client_for, tmp_path) as started:
        # then: the three other pairs were billed by the other process meanwhile
        waiting = BillingRunPair.objects.get(done_at__isnull=True)
        assert (waiting.host_id, waiting.licensor_id) == started.first
        assert BillingRun.objects.get(period=PERIOD).status == "running"

    # and once it is released, the run completes: every pair billed once
    assert started.proc.wait(timeout=60) == 0, started.log.read_text()
    out = started.log.read_text()
    assert "of 2026-10: done, 4/4 pairs, 0 failed" in out, out
    assert sorted(Settlement.objects.filter(period=PERIOD).values_list("host__slug", "total")) == [
        (slug, Decimal("12.00")) for slug in HOSTS
    ]
    assert out.count(" h-") == 4  # one line per settlement


def _children(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="the children's end relies on Linux's prctl")
@pytest.mark.django_db(transaction=True)
def test_the_children_die_with_the_command(
    client_for: Callable[..., APIClient], tmp_path: Path
) -> None:
    # given: h-1's batch waiting for its lock inside its transaction, and the other child done
    # with the other batches, waiting for more
    with first_batch_waiting(client_for, tmp_path) as started:
        children = _children(started.proc.pid)
        assert len(children) == 2

        # when: the command is killed
        started.proc.kill()
        started.proc.wait(timeout=10)

        # then: both children end (not left waiting on the pool's queue with a connection)
        deadline = time.monotonic() + 30
        while any(_alive(c) for c in children):
            assert time.monotonic() < deadline, [c for c in children if _alive(c)]
            time.sleep(0.05)

    # and the waiting batch rolled back: its pair is not done, no settlement of h-1
    assert BillingRunPair.objects.filter(done_at__isnull=True).count() == 1
    assert not Settlement.objects.filter(host__slug="h-1").exists()


@pytest.mark.django_db(transaction=True)
def test_a_pair_that_fails_in_a_child_process_is_named(
    client_for: Callable[..., APIClient], settings: pytest.FixtureRequest
) -> None:
    # given: two minimax pairs and a TokenCo pair whose amount no settlement can hold, one
    # pair a batch (the children are forked: they see these settings)
    settings.BILLING_PAIRS_PER_BATCH = 1  # type: ignore[attr-defined]
    catalog_import(minimax_catalog(hosts=("fireworks", "together")))
    clients = {s: client_for(host=Host.objects.get(slug=s)) for s in ("fireworks", "together")}
    post_usage(clients["fireworks"], [record("fw-1", revenue="1000.00")])
    post_usage(clients["together"], [record("to-1", revenue="500.00")])
    overflowing_tokenco_usage(clients["fireworks"])

    # when
    with pytest.raises(CommandError) as failure:
        run_billing(PERIOD, "--jobs", "2")

    # then: as in one process (tests/billing/test_run_failures.py)
    assert "1 of 3 pair(s) could not be settled (tokenco/fireworks)" in str(failure.value)
    run = BillingRun.objects.get(period=PERIOD)
    assert (run.status, run.pairs_done, run.pairs_failed) == ("partial", 3, 1)
    totals = {
        (s.licensor.slug, s.host.slug): s.total_display
        for s in Settlement.objects.filter(period=PERIOD)
    }
    assert totals == {("minimax", "fireworks"): "120.00", ("minimax", "together"): "60.00"}
    failed = BillingRunPair.objects.get(run=run, licensor__slug="tokenco")
    assert failed.error.startswith("DataError: numeric field overflow")


@pytest.mark.django_db
def test_jobs_must_be_one_or_more() -> None:
    with pytest.raises(CommandError, match="--jobs: must be 1 or more, got 0"):
        run_billing(PERIOD, "--jobs", "0")
