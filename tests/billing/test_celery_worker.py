"""The billing run through a real Celery worker against Redis, started as a subprocess: the run
completes; a worker killed with SIGKILL mid-run and restarted still leaves exactly one settlement
per key and balanced books; a task delivered twice changes nothing."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from django.db import connection
from rest_framework.test import APIClient

from billing.models import (
    BillingRun,
    BillingRunPair,
    Settlement,
    SettlementEvent,
    SettlementLine,
)
from billing.review import settlement_approve
from billing.runs import billing_run_start
from ledger.selectors import trial_balance
from ledger.verify import verify_books
from licensing.catalog import catalog_import
from licensing.models import Host
from tests.billing.conftest import minimax_catalog, post_usage, record, second_licensor_catalog
from tests.conftest import redis_test_url, skip_or_fail

pytestmark = [pytest.mark.services, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
HOSTS = tuple(f"host-{i:02d}" for i in range(8))
PERIOD = "2026-10"


def _broker_url() -> str:
    # A Redis database the test owns (it is flushed; tests/conftest.py, redis_test_url); the
    # test process itself stays eager.
    url = redis_test_url("celery")
    try:
        import redis

        client = redis.Redis.from_url(url, socket_connect_timeout=1)
        client.ping()
        client.flushdb()  # our own db: no stale message of an earlier test run
    except Exception as exc:
        skip_or_fail(f"no Redis at {url} ({exc!r})")
    return url


def _test_database_url() -> str:
    s = connection.settings_dict
    auth = s["USER"] + (f":{s['PASSWORD']}" if s.get("PASSWORD") else "")
    return f"postgres://{auth}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


class Worker:
    """A `celery worker` subprocess on the test database, with the prefork pool production runs
    (docker-compose.yml), in its own process group: `kill()` is SIGKILL to the main process and
    its pool children at once, no goodbye (a machine or container dying)."""

    def __init__(self, broker: str, log: Path, pause: float, hold: float = 0.0) -> None:
        self.env = {
            **os.environ,
            "CELERY_BROKER_URL": broker,
            "DATABASE_URL": _test_database_url(),
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "TEST_PAIR_PAUSE": str(pause),
            # Batches of 2 of the 16 pairs: a kill lands between batches that committed.
            "BILLING_PAIRS_PER_BATCH": "2",
            "TEST_BATCH_HOLD": str(hold),
        }
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *command: str) -> None:
        celery = str(Path(sys.executable).parent / "celery")
        self.proc = subprocess.Popen(
            [
                celery,
                "-A",
                "tests.billing.celery_app",
                *(
                    command
                    or (
                        "worker",
                        "--pool=prefork",
                        "--concurrency=4",
                        "--loglevel=INFO",
                        "--without-gossip",
                        "--without-mingle",
                        "--without-heartbeat",
                    )
                ),
            ],
            cwd=ROOT,
            env=self.env,
            stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def kill(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                pass
        try:  # whatever is left of the group, e.g. pool children of a main process that died
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=10)


@pytest.fixture
def broker() -> str:
    return _broker_url()


@pytest.fixture
def worker_factory(broker: str, tmp_path: Path) -> Iterator[Callable[..., Worker]]:
    workers: list[Worker] = []

    def make(pause: float = 0.0, hold: float = 0.0, log: str = "worker.log") -> Worker:
        w = Worker(broker, tmp_path / log, pause, hold)
        workers.append(w)
        return w

    yield make
    for w in workers:
        w.stop()


def start_beat(
    worker_factory: Callable[..., Worker], tmp_path: Path, log: str = "worker.log", **env: str
) -> Worker:
    """A real `celery beat` process on the test's app (tests/billing/celery_app.py: `env` picks
    the entries it fires, and how often)."""
    beat = worker_factory(log=log)
    beat.env.update(env)
    beat.start("beat", "--loglevel=INFO", f"--schedule={tmp_path / 'beat-schedule'}")
    return beat


@pytest.fixture
def producer(broker: str) -> Celery:
    """Sends tasks by name to the broker, as beat does (the test process itself runs eagerly).
    Not the current app: shared tasks (`.delay`) of later tests would resolve to it and go to
    this broker instead of running in-process."""
    return Celery("producer", broker=broker, set_as_current=False)


@pytest.fixture
def month_of_usage(client_for: Callable[..., APIClient]) -> dict[tuple[str, str], Decimal]:
    """8 hosts x 2 licensors: 16 pairs. Returns the expected total per (licensor, host)."""
    catalog_import(minimax_catalog(hosts=HOSTS))
    catalog_import(second_licensor_catalog())
    expected = {}
    for i, slug in enumerate(HOSTS):
        revenue = Decimal(1000 + 100 * i)
        post_usage(
            client_for(host=Host.objects.get(slug=slug)),
            [
                record(f"{slug}-m", revenue=f"{revenue}"),
                record(f"{slug}-k", revenue=f"{revenue}", model="kimi-k2.5"),
            ],
        )
        expected[("minimax", slug)] = revenue * Decimal("0.12")
        expected[("kimi", slug)] = revenue * Decimal("0.05")
    return expected


def wait_for(
    predicate: Callable[[], Any],
    *,
    timeout: float,
    what: str,
    log: Path,
    state: Callable[[], str] | None = None,
) -> Any:
    """Polls `predicate` until it is true; on timeout, fails with what the worker logged (its
    errors and warnings from the whole log, then its tail) and `state()`, what the test sees."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    text = log.read_text(errors="replace") if log.exists() else "(no log)"
    notable = [
        line
        for line in text.splitlines()
        if re.search(r"ERROR|WARNING|Traceback|Error:|retry", line, re.IGNORECASE)
    ]
    report = f"timed out waiting for {what}"
    if state is not None:
        report += f"\n{state()}"
    report += "\nworker log, errors and warnings:\n" + "\n".join(notable[:60])
    report += f"\nworker log, tail:\n{text[-3000:]}"
    pytest.fail(report)


def run_done() -> BillingRun | None:
    """The period's run once it is done; fails at once if it ended otherwise (partial, failed),
    which no wait would change."""
    run = BillingRun.objects.filter(period=PERIOD).order_by("-id").first()
    if run is not None and run.status in ("partial", "failed"):
        pytest.fail(f"run {run.pk} ended {run.status}: {run.error}")
    return run if run is not None and run.status == "done" else None


def run_state(broker: str) -> Callable[[], str]:
    """What a stuck run looks like: the period's runs, their pairs not done, and the broker's
    queue and unacknowledged messages."""

    def describe() -> str:
        import redis

        lines = ["runs of the period (id, status, done/total, failed):"]
        for run in BillingRun.objects.filter(period=PERIOD).order_by("id"):
            lines.append(
                f"  {run.pk} {run.status} {run.pairs_done}/{run.pairs_total} {run.pairs_failed}"
            )
            pending = BillingRunPair.objects.filter(run=run, done_at__isnull=True)
            lines.extend(
                f"    not done: host {p.host_id} licensor {p.licensor_id}" for p in pending
            )
        client = redis.Redis.from_url(broker, socket_timeout=5)
        lines.append(
            f"broker: queue {client.llen('celery')}, unacknowledged {client.hlen('unacked')}"
        )
        for tag, body in client.hgetall("unacked").items():
            lines.append(f"  unacked {tag!r}: {body[:300]!r}")
        return "\n".join(lines)

    return describe


def settlement_totals() -> dict[tuple[str, str], Decimal]:
    return {
        (s.licensor.slug, s.host.slug): s.total
        for s in Settlement.objects.filter(period=PERIOD).select_related("licensor", "host")
    }


@pytest.mark.django_db(transaction=True)
def test_it_completes_a_run_on_a_real_worker(
    month_of_usage: dict[tuple[str, str], Decimal],
    worker_factory: Callable[..., Worker],
    producer: Celery,
    tmp_path: Path,
) -> None:
    # given
    worker = worker_factory()
    worker.start()

    # when: what beat sends on the 1st, for an explicit period
    producer.send_task("billing.tasks.run_monthly_billing", args=[PERIOD])

    # then
    run = wait_for(run_done, timeout=60, what="the run", log=tmp_path / "worker.log")
    assert (run.pairs_done, run.pairs_total) == (16, 16)
    assert settlement_totals() == month_of_usage


@pytest.mark.django_db(transaction=True)
def test_beat_starts_the_monthly_run_on_its_schedule(
    month_of_usage: dict[tuple[str, str], Decimal],
    worker_factory: Callable[..., Worker],
    tmp_path: Path,
) -> None:
    # given: a worker, and a real beat process whose monthly entry fires every second
    worker_factory().start()
    start_beat(worker_factory, tmp_path, TEST_BEAT_PERIOD=PERIOD)

    # when: beat sends the entry and the worker runs it
    run = wait_for(run_done, timeout=60, what="beat's run", log=tmp_path / "worker.log")

    # then: the run billed every pair, once
    assert (run.pairs_done, run.pairs_total) == (16, 16)
    assert settlement_totals() == month_of_usage
    assert "Sending due task monthly-billing" in (tmp_path / "worker.log").read_text()


@pytest.mark.django_db(transaction=True)
def test_it_finishes_after_the_worker_is_killed_mid_run(
    month_of_usage: dict[tuple[str, str], Decimal],
    worker_factory: Callable[..., Worker],
    producer: Celery,
    tmp_path: Path,
    broker: str,
) -> None:
    # given: a worker whose pair tasks take a while
    log = tmp_path / "worker.log"
    first = worker_factory(pause=0.5)
    first.start()
    producer.send_task("billing.tasks.run_monthly_billing", args=[PERIOD])
    wait_for(
        lambda: BillingRunPair.objects.filter(done_at__isnull=False).count() >= 2,
        timeout=60,
        what="a few pairs done",
        log=log,
    )

    # when: SIGKILL mid-run, then a new worker (its own log), and beat reaping every second
    first.kill()
    done_at_kill = BillingRunPair.objects.filter(done_at__isnull=False).count()
    assert done_at_kill < 16, "the run finished before the kill; nothing was tested"
    held = unacked_task_ids(broker)
    second = worker_factory(log="second.log")
    # A task Redis lost in the kill (taken off the queue, not yet recorded unacknowledged: a
    # window of microseconds) comes back when the run is resumed, after 20 s without progress.
    second.env["BILLING_RUN_RESUME_SECONDS"] = "20"
    second.start()
    start_beat(worker_factory, tmp_path, log="beat.log", TEST_REAP_EVERY="1")

    # then: the run completes
    run = wait_for(
        run_done,
        timeout=90,
        what="the run after restart",
        log=tmp_path / "second.log",
        state=run_state(broker),
    )
    assert (run.pairs_done, run.pairs_total) == (16, 16)
    assert Settlement.objects.filter(period=PERIOD).count() == 16
    assert settlement_totals() == month_of_usage
    # and: every task the killed worker held unacknowledged was delivered again, to the new one
    # (usually 3 or 4; none only when the kill lost the run's last batch, resumed instead)
    second_log = (tmp_path / "second.log").read_text()
    assert {t for t in held if f"[{t}] received" not in second_log} == set()
    # and approving everything leaves balanced books
    for settlement in Settlement.objects.filter(period=PERIOD):
        settlement_approve(settlement=settlement, actor="test")
    assert trial_balance() == {"USD": 0}
    report = verify_books()
    assert report.problems == []
    assert report.entries == 16


def unacked_task_ids(broker: str) -> set[str]:
    """The ids of the tasks the broker has delivered and not had acknowledged."""
    import json

    import redis

    client = redis.Redis.from_url(broker, socket_timeout=5)
    return {json.loads(body)[0]["headers"]["id"] for body in client.hvals("unacked")}


@pytest.mark.django_db(transaction=True)
def test_it_resumes_a_run_whose_pair_task_was_lost(
    month_of_usage: dict[tuple[str, str], Decimal],
    worker_factory: Callable[..., Worker],
    producer: Celery,
    tmp_path: Path,
    broker: str,
) -> None:
    # given: a run started as the monthly task starts it, whose batches are queued but one, as
    # if Redis had lost it (a worker killed right after taking it off the queue)
    run = billing_run_start(period=PERIOD, trigger="task")
    pairs = list(
        BillingRunPair.objects.filter(run=run).order_by("id").values_list("host_id", "licensor_id")
    )
    batches = [pairs[i : i + 2] for i in range(0, len(pairs), 2)]
    lost = batches.pop()
    for batch in batches:
        producer.send_task("billing.tasks.bill_pairs", args=[run.pk, [list(p) for p in batch]])

    # when: a worker, and beat reaping every second, with runs resumed after 3 s without progress
    worker = worker_factory()
    worker.env["BILLING_RUN_RESUME_SECONDS"] = "3"
    worker.start()
    start_beat(worker_factory, tmp_path, log="beat.log", TEST_REAP_EVERY="1")

    # then: the run stalls at the lost batch's pairs, is resumed, and completes
    log = tmp_path / "worker.log"
    done = wait_for(run_done, timeout=90, what="the resumed run", log=log, state=run_state(broker))
    assert done.pk == run.pk
    assert (done.pairs_done, done.pairs_total, done.pairs_failed) == (16, 16, 0)
    assert done.resumes >= 1
    assert settlement_totals() == month_of_usage
    assert SettlementEvent.objects.filter(action="computed").count() == 16
    assert re.search(
        rf"billing run {run.pk} stopped advancing: queued its {len(lost)} pairs not done again",
        log.read_text(),
    )


def batches_in_flight() -> int:
    """Pair locks held by uncommitted batch transactions in this database (pg_locks spans every
    database of the server)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        )
        return int(cursor.fetchone()[0])


@pytest.mark.django_db(transaction=True)
def test_it_recovers_a_batch_killed_inside_its_transaction(
    month_of_usage: dict[tuple[str, str], Decimal],
    worker_factory: Callable[..., Worker],
    producer: Celery,
    tmp_path: Path,
    broker: str,
) -> None:
    # given: a worker whose batches (2 pairs each) hold their transaction open after writing
    # their settlements
    log = tmp_path / "worker.log"
    first = worker_factory(hold=60.0)
    first.start()
    producer.send_task("billing.tasks.run_monthly_billing", args=[PERIOD])
    wait_for(batches_in_flight, timeout=60, what="a batch inside its transaction", log=log)

    # when: SIGKILL while batches have written but not committed, then a new worker
    first.kill()
    assert BillingRunPair.objects.filter(done_at__isnull=False).count() == 0
    assert not Settlement.objects.exists()
    worker_factory().start()

    # then: the batches come back and the run completes, every pair settled exactly once
    run = wait_for(
        run_done, timeout=90, what="the run after restart", log=log, state=run_state(broker)
    )
    assert (run.pairs_done, run.pairs_total, run.pairs_failed) == (16, 16, 0)
    assert run.settlements_written == 16
    assert settlement_totals() == month_of_usage
    assert SettlementEvent.objects.filter(action="computed").count() == 16
    assert SettlementLine.objects.count() == Settlement.objects.count()


@pytest.mark.django_db(transaction=True)
def test_it_changes_nothing_when_tasks_are_delivered_twice(
    month_of_usage: dict[tuple[str, str], Decimal],
    worker_factory: Callable[..., Worker],
    producer: Celery,
    tmp_path: Path,
) -> None:
    # given: a completed run
    log = tmp_path / "worker.log"
    worker_factory().start()
    producer.send_task("billing.tasks.run_monthly_billing", args=[PERIOD])
    run = wait_for(run_done, timeout=60, what="the run", log=log)
    before = {
        s.pk: (s.total, s.usage_digest, s.updated_at, [li.amount for li in s.lines.all()])
        for s in Settlement.objects.filter(period=PERIOD)
    }
    pair = BillingRunPair.objects.filter(run=run).first()
    assert pair is not None

    # when: a pair task of that run delivered twice more, and the worker has run both: its log
    # says each succeeded and returned 0 settlements written
    resent = [
        producer.send_task("billing.tasks.bill_pair", args=[run.pk, pair.host_id, pair.licensor_id])
        for _ in range(2)
    ]
    for task in resent:
        line = re.compile(rf"Task billing\.tasks\.bill_pair\[{task.id}\] succeeded in \S+: (\d+)")
        written = wait_for(
            lambda line=line: line.search(log.read_text()),
            timeout=60,
            what=f"the worker to run the resent task {task.id}",
            log=log,
        )
        assert written.group(1) == "0"

    # then: nothing was rewritten
    after = {
        s.pk: (s.total, s.usage_digest, s.updated_at, [li.amount for li in s.lines.all()])
        for s in Settlement.objects.filter(period=PERIOD)
    }
    assert after == before
    run.refresh_from_db()
    assert (run.pairs_done, run.status) == (16, "done")

    # when: the whole run delivered twice at once
    producer.send_task("billing.tasks.run_monthly_billing", args=[PERIOD])
    producer.send_task("billing.tasks.run_monthly_billing", args=[PERIOD])
    wait_for(
        lambda: BillingRun.objects.filter(period=PERIOD).exclude(status="running").count() == 3,
        timeout=60,
        what="both runs",
        log=log,
    )

    # then: the same settlements (same ids), the same money
    assert set(Settlement.objects.filter(period=PERIOD).values_list("pk", flat=True)) == set(before)
    assert settlement_totals() == month_of_usage
