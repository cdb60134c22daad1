"""The reviewers' email through a real Celery worker against Redis and a real SMTP server: the
worker process reads EMAIL_URL from its environment, the run's pair task records the message,
and a send the mail server refuses (451, try again later) is retried with the same message,
which arrives once."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from rest_framework.test import APIClient

from billing.notification_models import Notification
from licensing.catalog import catalog_import
from licensing.models import Host
from tests.billing import test_celery_worker as celery_tests
from tests.billing.conftest import minimax_catalog, post_usage, record
from tests.billing.test_celery_worker import PERIOD, Worker, wait_for
from tests.billing.test_notifications import ANN, member
from tests.smtp import Inbox, smtp_server

pytestmark = [pytest.mark.services, pytest.mark.slow]

# The real worker's fixtures (a Redis database of the test's own, the worker subprocess).
broker = celery_tests.broker
producer = celery_tests.producer
worker_factory = celery_tests.worker_factory


class RefusesFirst(Inbox):
    """A mail server that answers the first message with a temporary failure."""

    refused = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if not self.refused:
            self.refused += 1
            return "451 4.3.0 Try again later"
        return await super().handle_DATA(server, session, envelope)


@pytest.mark.django_db(transaction=True)
def test_a_refused_send_is_retried_by_the_worker_and_arrives_once(
    worker_factory: Callable[..., Worker],
    producer: Celery,
    client_for: Callable[..., APIClient],
    tmp_path: Path,
) -> None:
    # given: MiniMax's reviewer, October's usage, and a mail server that refuses once
    catalog_import(minimax_catalog())
    member("ann", "minimax", email=ANN)
    post_usage(
        client_for(host=Host.objects.get(slug="fireworks")), [record("c-1", revenue="75300.00")]
    )
    for inbox in smtp_server(RefusesFirst()):
        worker = worker_factory()
        worker.env["EMAIL_URL"] = inbox.url
        worker.env["TEST_NOTIFICATION_RETRY_BASE"] = "1"
        worker.start()

        # when: beat's monthly run goes through the worker
        producer.send_task("billing.tasks.run_monthly_billing", args=[PERIOD])

        # then: the message was refused, retried, and accepted once
        sent = wait_for(
            lambda: Notification.objects.filter(sent_at__isnull=False).first(),
            timeout=60,
            what="the notification to be sent",
            log=tmp_path / "worker.log",
        )
        assert isinstance(inbox, RefusesFirst) and inbox.refused == 1
        assert [m.rcpt_tos for m in inbox.messages] == [[ANN]]
        assert inbox.messages[0].subject == "[Tollgate] 1 settlement for 2026-10 awaits your review"
        assert "total:      USD 9,036.00" in inbox.messages[0].body
        assert sent.attempts == 2
        assert "Retry in 1" in (tmp_path / "worker.log").read_text()
