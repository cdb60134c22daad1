"""The Celery worker's consumer: Celery's own, with one repair (CELERY_WORKER_CONSUMER).

Celery 5.7.0, on a lost broker connection, first lets kombu release the connection
(`collect()`, which drops the transport's client) and then closes it once more, closing its
default channel. A channel that holds messages delivered and not yet acknowledged (our tasks are
acks_late) then tries to give them back to Redis through that released client, and the
AttributeError it meets is not a connection error: the worker ends ("Unrecoverable error")
instead of connecting again. Found by the fault soak (docs/reliability.md) and reproduced by
tests/ops/test_broker_restart.py.

The repair: the lost connection's channel does not give its messages back at that close. Redis
still holds them as unacknowledged, and the workers' sweep hands them out again after the
visibility timeout (config/settings.py), which is what Celery 5.6 did (it only released the
connection). A task that ended while the connection was lost would acknowledge its message on
that released channel and end the worker the same way: the settings stop running tasks on a
lost connection (CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS), so none does.
"""

from __future__ import annotations

from typing import Any

from celery.worker.consumer import Consumer as CeleryConsumer


class Consumer(CeleryConsumer):  # type: ignore[misc]
    def on_connection_error_after_connected(self, exc: Any) -> None:
        connection = self.connection
        channel = getattr(connection, "_default_channel", None) if connection else None
        if channel is not None:
            channel.do_restore = False  # kombu's virtual channel: skip the restore at close
        super().on_connection_error_after_connected(exc)
