"""A worker outlives a restart of its broker while it runs a task. Celery 5.7.0 did not, in two
ways, each of which ended the worker ("Unrecoverable error", an AttributeError) and left the
fault soak's last billing run waiting for a worker that was gone:

- on the connection loss it closed the lost connection again after kombu had released it, and
  the channel tried to give its unacknowledged (acks_late) message back through it;
- a task that ended while Redis was down acknowledged its message on that released channel.

config/worker.py repairs the first; the second is why running tasks are stopped on a lost
connection (CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS): their messages come
back through Redis. Without it the second case below fails; without the first, both do."""

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


@pytest.mark.parametrize(
    ("task_seconds", "down_seconds"),
    [
        (8.0, 0.5),  # the task outlasts the outage: it ends on the new connection
        (1.0, 4.0),  # it would end while Redis is down, its acknowledgement with nowhere to go
    ],
)
def test_a_worker_with_a_task_in_flight_outlives_a_broker_restart(
    tmp_path: Path, task_seconds: float, down_seconds: float
) -> None:
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
        _send(broker.url, task_seconds, "in-flight")
        assert _wait_for(lambda: client.hlen("unacked") == 1, 60), log.read_text()[-3000:]

        # when: Redis dies and comes back (its append-only file keeps the messages)
        broker.kill()
        time.sleep(down_seconds)
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
