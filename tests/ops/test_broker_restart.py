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

import shutil
import time
import uuid
from pathlib import Path

import pytest
import redis

from bench.soak_procs import ScratchRedis
from tests.billing.test_celery_worker import Worker, wait_for
from tests.conftest import skip_or_fail

pytestmark = [pytest.mark.services, pytest.mark.slow]


def _send(app_broker: str, seconds: float, marker: str) -> None:
    from celery import Celery

    # Not the current app: shared tasks (`.delay`) of later tests in this process would resolve
    # to it and go to this (dead) broker instead of running in-process.
    app = Celery(broker=app_broker, set_as_current=False)
    try:
        app.send_task("tests.pause", args=[seconds, marker])
    finally:
        app.close()


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
    worker = Worker(broker.url, log, pause=0)  # the worker tests' (tests.billing.celery_app)
    worker.start()
    client = redis.Redis.from_url(broker.url, socket_timeout=5)
    try:
        # and: a task in flight: delivered to the worker, not acknowledged (acks_late)
        _send(broker.url, task_seconds, "in-flight")
        wait_for(lambda: client.hlen("unacked") == 1, timeout=60, what="a task in flight", log=log)

        # when: Redis dies and comes back (its append-only file keeps the messages)
        broker.kill()
        time.sleep(down_seconds)
        broker.start()
        marker = f"after-restart-{uuid.uuid4()}"
        _send(broker.url, 0, marker)

        # then: the worker is still there, and runs the task sent after the restart
        # (the task's result, the marker, is in the worker's "succeeded" line only)
        wait_for(lambda: marker in log.read_text(), timeout=60, what="the next task", log=log)
        text = log.read_text()
        assert "Unrecoverable error" not in text, text[-4000:]
        assert worker.proc is not None and worker.proc.poll() is None, text[-4000:]
    finally:
        worker.stop()
        broker.kill()
