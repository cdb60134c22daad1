"""The Celery app. Broker from CELERY_BROKER_URL; unset, tasks run eagerly in-process."""

import gc
import logging.config
import os
from datetime import datetime
from typing import Any

import structlog
from celery import Celery
from celery.signals import (
    setup_logging,
    task_postrun,
    task_prerun,
    task_retry,
    worker_process_init,
    worker_ready,
)
from django.dispatch import receiver
from django.utils import timezone

from billing.signals import webhook_attempted

# The handlers below import config/metrics.py (prometheus_client) when they first record a number,
# not here: every process imports this module, every manage.py command included, and most record
# nothing (docs/performance.md, "Start-up").

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("tollgate")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@setup_logging.connect
def _logging(**kwargs: Any) -> None:
    """Workers and beat log through the project's LOGGING (config/logs.py), not Celery's own
    handlers, so their lines have the web's format."""
    from django.conf import settings

    logging.config.dictConfig(settings.LOGGING)


@worker_process_init.connect
def _freeze_start_up_heap(**kwargs: Any) -> None:
    """A worker process's start-up heap (Django, the apps, Celery) out of the cyclic collector's
    reach, as `run_billing` does (docs/performance.md, "Billing"): a batch of a billing run
    allocates millions of objects, and every full collection scanned all of it."""
    gc.freeze()


# The billing run's pair tasks: one pair, or a batch of pairs.
PAIR_TASKS = ("billing.tasks.bill_pair", "billing.tasks.bill_pairs")

# When each running billing task started, by task id (this process's tasks only).
_started: dict[str, datetime] = {}


@task_prerun.connect
def _bind_task(task_id: str | None = None, task: Any = None, **kwargs: Any) -> None:
    # Bound next to what is there: a task run eagerly inside a request keeps its request id.
    name = getattr(task, "name", None)
    structlog.contextvars.bind_contextvars(task_id=task_id, task=name)
    if task_id and name in PAIR_TASKS:
        _started[task_id] = timezone.now()


@task_postrun.connect
def _task_end(
    task_id: str | None = None,
    task: Any = None,
    args: Any = None,
    state: str | None = None,
    retval: Any = None,
    **kwargs: Any,
) -> None:
    """The billing tasks' end: the run's duration once it completed (config/metrics.py)."""
    name = getattr(task, "name", "")
    if name.startswith("billing.tasks."):
        from config.metrics import BILLING_PAIR_FAILURES, observe_billing_task

        if name in PAIR_TASKS and state == "FAILURE":
            BILLING_PAIR_FAILURES.labels("error").inc()
        observe_billing_task(
            task=name,
            args=tuple(args or ()),
            state=state,
            retval=retval,
            started_at=_started.pop(task_id or "", None),
        )
    structlog.contextvars.unbind_contextvars("task_id", "task")


@task_retry.connect
def _task_retry(sender: Any = None, **kwargs: Any) -> None:
    if getattr(sender, "name", "") in PAIR_TASKS:
        from config.metrics import BILLING_PAIR_FAILURES

        BILLING_PAIR_FAILURES.labels("retry").inc()


@worker_ready.connect
def _serve_metrics(**kwargs: Any) -> None:
    """With CELERY_METRICS_PORT set, the worker serves its own /metrics (docs/operations.md)."""
    port = os.environ.get("CELERY_METRICS_PORT")
    if port:
        from config.metrics import worker_metrics_serve

        worker_metrics_serve(int(port), os.environ.get("CELERY_METRICS_ADDR", "0.0.0.0"))  # noqa: S104


@receiver(webhook_attempted, dispatch_uid="tollgate-metrics-webhooks")
def _count_webhook(sender: Any = None, outcome: str = "", **kwargs: Any) -> None:
    """Each webhook delivery attempt, counted by outcome (config/metrics.py)."""
    from config.metrics import webhook_attempt_count

    webhook_attempt_count(outcome=outcome)


# Deemed acceptance's task lives beside its service (billing/deeming.py), not in billing/tasks.py,
# which the approval it calls imports.
app.autodiscover_tasks(related_name="deeming")
# The reviewers' email notifications, likewise beside their service (billing/notifications.py).
app.autodiscover_tasks(related_name="notifications")
