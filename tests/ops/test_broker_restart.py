"""A worker outlives a restart of its broker while it runs a task: the restart closes the
connection under a message delivered and not yet acknowledged (acks_late), the worker connects
again and takes the next task. Celery 5.7.0 did not: on that connection loss it closed the old
connection again after kombu had released it, and restoring the unacknowledged message there
raised AttributeError, which ended the worker ("Unrecoverable error"); the fault soak's last
billing run then waited for a worker that was gone. config/worker.py repairs it."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from bench.soak_procs import ScratchRedis
from tests.conftest import skip_or_fail

pytestmark = [pytest.mark.services, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


def _send(app_broker: str, seconds: float, marker: str) -> None:
    from celery import Celery

    app = Celery(broker=app_broker)
    try:
        app.send_task("tests.pause", args=[seconds, marker])
    finally:
        app.close()


def _wait_for(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def test_a_worker_with_a_task_in_flight_outlives_a_broker_restart(tmp_path: Path) -> None:
    # given: a Redis of the test's own (it is killed) and a prefork worker on it
    if shutil.which("redis-server") is None:
        skip_or_fail("the test needs redis-server")
    broker = ScratchRedis(tmp_path)
    broker.start()
    log = tmp_path / "worker.log"
    env = {
        **os.environ,
        "CELERY_BROKER_URL": broker.url,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "LOG_LEVEL": "INFO",
    }
    worker = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "celery"),
            "-A",
            "tests.billing.celery_app",
            "worker",
            "--pool=prefork",
            "--concurrency=2",
            "--loglevel=INFO",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ],
        cwd=ROOT,
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    client = redis.Redis.from_url(broker.url, socket_timeout=5)
    try:
        # and: a task in flight: delivered to the worker, not acknowledged (acks_late)
        _send(broker.url, 8, "in-flight")
        assert _wait_for(lambda: client.hlen("unacked") == 1, 60), log.read_text()[-3000:]

        # when: Redis dies and comes back (its append-only file keeps the messages)
        broker.kill()
        time.sleep(0.5)
        broker.start()
        marker = f"after-restart-{uuid.uuid4()}"
        _send(broker.url, 0, marker)

        # then: the worker is still there, and runs the task sent after the restart
        # (the task's result, the marker, is in the worker's "succeeded" line only)
        ran = _wait_for(lambda: marker in log.read_text(), 60)
        text = log.read_text()
        assert "Unrecoverable error" not in text, text[-4000:]
        assert worker.poll() is None, text[-4000:]
        assert ran, text[-4000:]
    finally:
        if worker.poll() is None:
            worker.terminate()
            try:
                worker.wait(timeout=20)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(worker.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        worker.wait(timeout=10)
        broker.kill()
