"""The production shape starts: the Procfile's web (gunicorn), worker and beat run for real as
subprocesses against this test database and Redis (db 13, set for the children only), take a
batch over HTTP with a host key, bill it through beat's monthly task, and stop cleanly with no
process left behind."""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from billing.models import BillingRun, Settlement
from config.procfile import procfile_parse
from licensing.catalog import catalog_import
from licensing.models import Host
from licensing.services import api_key_create
from tests.billing.conftest import minimax_catalog, record
from tests.conftest import redis_test_url, skip_or_fail, subprocess_database_url

pytestmark = [pytest.mark.services, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
BROKER = redis_test_url("procfile")  # a Redis database the test owns (tests/conftest.py)
PERIOD = "2026-10"


def _broker() -> str:
    try:
        import redis

        client = redis.Redis.from_url(BROKER, socket_connect_timeout=1)
        client.ping()
        client.flushdb()  # our own db: no message of an earlier run
    except Exception as exc:
        skip_or_fail(f"no Redis at {BROKER} ({exc!r})")
    return BROKER


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for(
    predicate: Callable[[], Any],
    *,
    timeout: float,
    what: str,
    log: Path,
    runner: subprocess.Popen[bytes],
) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and runner.poll() is None:
        try:
            value = predicate()
        except (httpx.HTTPError, OSError):
            value = None
        if value:
            return value
        time.sleep(0.3)
    tail = log.read_text()[-4000:] if log.exists() else "(no log)"
    pytest.fail(f"timed out waiting for {what}; log:\n{tail}")


def _in_group(pgid: int) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except (ProcessLookupError, psutil.Error):
            continue
    return found


def _samples(text: str) -> dict[str, float]:
    """Prometheus text format: sample name with labels -> value."""
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def test_the_procfile_lists_web_worker_and_beat() -> None:
    processes = procfile_parse(ROOT / "Procfile")

    assert list(processes) == ["web", "worker", "beat"]
    assert processes["web"].startswith("gunicorn config.wsgi:application")
    assert " worker " in processes["worker"]
    assert " beat " in processes["beat"]


@pytest.mark.django_db(transaction=True)
def test_the_process_list_serves_a_batch_bills_it_through_beat_and_stops_cleanly(
    tmp_path: Path,
) -> None:
    # given: a catalog and a host key, committed where the children can see them
    broker = _broker()
    catalog_import(minimax_catalog())
    key = api_key_create(host=Host.objects.get(slug="fireworks")).key
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "procfile.log"
    env = {
        **os.environ,
        "DATABASE_URL": subprocess_database_url(),
        "CELERY_BROKER_URL": broker,  # the children's only: this process stays eager
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DEBUG": "False",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "ALLOWED_HOSTS": "127.0.0.1",
        # Plain http on the loopback: no redirect to https, no https-only cookies.
        "SECURE_SSL_REDIRECT": "False",
        "SECURE_COOKIES": "False",
        "GUNICORN_BIND": f"127.0.0.1:{port}",
        "GUNICORN_WORKERS": "2",
        "CELERY_CONCURRENCY": "2",
        # The beat test's app (tests/billing/celery_app.py): the project's own monthly entry,
        # fired every second for PERIOD instead of on the 1st at 02:00.
        "CELERY_APP": "tests.billing.celery_app",
        "TEST_BEAT_PERIOD": PERIOD,
        "CELERY_BEAT_SCHEDULE": str(tmp_path / "beat-schedule"),
        "PROCFILE_STOP_TIMEOUT": "30",
        "LOG_FORMAT": "json",
        "CELERY_METRICS_PORT": str(worker_port := _free_port()),
        "CELERY_METRICS_ADDR": "127.0.0.1",
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    runner = subprocess.Popen(
        [sys.executable, "-m", "config.procfile"],
        cwd=ROOT,
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: the finally below kills all of it
    )
    try:
        with httpx.Client(base_url=base, timeout=30) as http:
            health = _wait_for(
                lambda: http.get("/healthz").json(),
                timeout=60,
                what="the web",
                log=log,
                runner=runner,
            )
            assert health == {"status": "ok", "database": "ok", "broker": "ok"}

            # when: a host posts a batch over HTTP
            response = http.post(
                "/api/v1/usage",
                headers={"Authorization": f"Bearer {key}"},
                json={
                    "records": [
                        record("proc-1", revenue="1000.00"),
                        record("proc-2", revenue="500.00", category="individual"),
                        record("proc-1", revenue="1000.00"),
                    ]
                },
            )
            assert response.status_code == 200, response.text
            assert response.json()["accepted"] == 2
            assert response.json()["duplicates"] == 1

            # then: beat sends the monthly task, the worker bills the pair
            run = _wait_for(
                lambda: BillingRun.objects.filter(period=PERIOD, status="done").first(),
                timeout=90,
                what="beat's billing run",
                log=log,
                runner=runner,
            )
            assert (run.pairs_done, run.pairs_total) == (1, 1)
            settlement = Settlement.objects.get(period=PERIOD, host__slug="fireworks")
            assert settlement.total == Decimal("120.00")  # 12% of the commercial 1,000.00

            # and: /metrics sums every process's samples (the web's ingestion counts, the
            # worker's run durations) and reads the runs from the database
            # The worker observes the run's duration when the task that completed it ends, a
            # moment after that task's commit made the run `done` (config/metrics.py): waited for.
            def run_observed() -> dict[str, float] | None:
                samples = _samples(http.get("/metrics").text)
                observed = samples.get("tollgate_billing_run_seconds_count", 0) >= 1
                return samples if observed else None

            metrics = _wait_for(
                run_observed,
                timeout=30,
                what="the run's duration in /metrics",
                log=log,
                runner=runner,
            )
            usage = '{endpoint="usage",outcome="%s"}'
            assert metrics["tollgate_ingest_records_total" + usage % "accepted"] == 2
            assert metrics["tollgate_ingest_records_total" + usage % "duplicate"] == 1
            assert metrics['tollgate_billing_runs{status="done"}'] >= 1
            # the worker's own endpoint, for a machine without a web process
            worker_metrics = _samples(http.get(f"http://127.0.0.1:{worker_port}/").text)
            assert worker_metrics["tollgate_billing_run_seconds_count"] >= 1

        # and: the batch's JSON log line carries the id its answer named
        request_id = response.headers["X-Request-ID"]
        lines = [json.loads(line) for line in log.read_text().splitlines() if line[:1] == "{"]
        batch_line = next(line for line in lines if line.get("path") == "/api/v1/usage")
        assert (batch_line["request_id"], batch_line["status"]) == (request_id, 200)
        assert any(line["logger"] == "celery.app.trace" and line.get("task_id") for line in lines)

        # when: the runner is asked to stop
        processes = psutil.Process(runner.pid).children(recursive=True)
        names = " ".join(" ".join(p.cmdline()) for p in processes)
        assert "gunicorn" in names and " worker " in names and " beat " in names
        runner.send_signal(signal.SIGTERM)
        code = runner.wait(timeout=60)

        # then: every process it started is gone, and it says it stopped on request
        assert code == 0, log.read_text()[-4000:]
        _, alive = psutil.wait_procs(processes, timeout=10)
        assert alive == []
        assert _in_group(runner.pid) == []
    finally:
        try:
            os.killpg(runner.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        runner.wait(timeout=10)
