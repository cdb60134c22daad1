"""Prometheus metrics of ingestion and billing (docs/operations.md, "Metrics").

Hooks sit where the numbers are final, outside the code that produces them: ingestion is counted
from the usage endpoints' answers (config/middleware.py), billing from Celery's task signals at
the end of each billing task (config/celery.py), webhook deliveries from billing's signal once an
attempt is recorded (billing/signals.py, connected in config/celery.py: every process imports
that, and this module and prometheus_client load only once a number is recorded); the runs' and
payouts' states are read from the database and the queue's depth from the broker at scrape
time. With `PROMETHEUS_MULTIPROC_DIR` set (the Procfile runner and the image set it), every
process of the machine writes its samples there and `/metrics` sums them, so the figures do not
depend on which gunicorn worker answers the scrape.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from django.db.models import Count, Sum
from django.utils import timezone
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from billing.signals import WEBHOOK_OUTCOMES

# The usage endpoints whose answers are counted, by path, and their label.
INGEST_ENDPOINTS = {"/api/v1/usage": "usage", "/api/v1/events": "events"}

INGEST_RECORDS = Counter(
    "tollgate_ingest_records",
    "Usage records by outcome: accepted, duplicate (a resend, counted once) or rejected.",
    ["endpoint", "outcome"],
)
INGEST_REJECTIONS = Counter(
    "tollgate_ingest_rejections",
    "Rejected usage records by error code (conflict, unknown_model, ...); a record rejected for"
    " two reasons counts under both codes.",
    ["endpoint", "code"],
)
INGEST_BATCHES = Counter(
    "tollgate_ingest_batches",
    "Usage batches answered, by HTTP status and error code ('ok' for a 2xx).",
    ["endpoint", "status", "code"],
)
# Seconds per answered batch (2xx only): a 10,000-record batch takes 0.8-1.9 s on the reference
# machine (docs/performance.md), so the buckets reach well past that.
INGEST_BATCH_SECONDS = Histogram(
    "tollgate_ingest_batch_seconds",
    "Seconds to ingest one usage batch (answered 2xx), as seen by the web process.",
    ["endpoint"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64),
)
# Seconds from a billing run's start to its last pair (runs through Celery; docs/performance.md
# measures 7-11 s for 250 pairs on one process).
BILLING_RUN_SECONDS = Histogram(
    "tollgate_billing_run_seconds",
    "Seconds from a billing run's start to its completion, per completed run.",
    buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400),
)
BILLING_PAIR_FAILURES = Counter(
    "tollgate_billing_pair_failures",
    "Billing pair tasks that raised: 'error' marks the run failed, 'retry' is a lost connection"
    " or a deadlock retried by the task.",
    ["kind"],
)
WEBHOOK_DELIVERIES = Counter(
    "tollgate_webhook_deliveries",
    "Webhook delivery attempts by outcome: delivered (2xx at the first attempt), retried (2xx"
    " after failed attempts), failed (no 2xx, retried later), gave_up (no 2xx, event too old).",
    ["outcome"],
)
for _outcome in WEBHOOK_OUTCOMES:  # every outcome at 0 from the start: rate() sees the first one
    WEBHOOK_DELIVERIES.labels(_outcome)


def webhook_attempt_count(*, outcome: str) -> None:
    """One webhook delivery attempt (billing/signals.py's `webhook_attempted`)."""
    WEBHOOK_DELIVERIES.labels(outcome).inc()


def _error_code(message: str) -> str:
    """The code of a per-record error message, "<code>: <sentence>" (docs/ingestion.md)."""
    code, sep, _ = message.partition(":")
    return code if sep and code.replace("_", "").isalpha() and code.islower() else "invalid"


def observe_ingest(*, path: str, status: int, data: Any, seconds: float) -> None:
    """Count one answer to a POST of a usage endpoint: its records by outcome and its rejections
    by code, or the whole batch's refusal."""
    endpoint = INGEST_ENDPOINTS.get(path.rstrip("/"))
    if endpoint is None:
        return
    if 200 <= status < 300 and isinstance(data, dict) and "accepted" in data:
        INGEST_BATCHES.labels(endpoint, str(status), "ok").inc()
        INGEST_BATCH_SECONDS.labels(endpoint).observe(seconds)
        INGEST_RECORDS.labels(endpoint, "accepted").inc(data.get("accepted", 0))
        INGEST_RECORDS.labels(endpoint, "duplicate").inc(data.get("duplicates", 0))
        INGEST_RECORDS.labels(endpoint, "rejected").inc(data.get("rejected", 0))
        for result in data.get("results", ()):
            if result.get("status") != "rejected":
                continue
            codes = {
                _error_code(str(message))
                for messages in (result.get("errors") or {}).values()
                for message in messages
            }
            for code in codes or {"invalid"}:
                INGEST_REJECTIONS.labels(endpoint, code).inc()
        return
    code = "error"
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        code = str(data["error"].get("code", "error"))
    INGEST_BATCHES.labels(endpoint, str(status), code).inc()


def observe_billing_task(
    *,
    task: str,
    args: tuple[Any, ...],
    state: str | None,
    retval: Any = None,
    started_at: datetime | None = None,
) -> None:
    """At the end of a billing task that started at `started_at`: when it completed its run,
    observe the run's duration. (billing.models is imported here, not at the top: config.celery
    imports this module before Django's apps are loaded.)

    Exactly one pair task (`bill_pair`, or `bill_pairs` for a batch) completes a run: the one
    whose transaction moved the run to `done`, which stamps its pairs' `done_at` and the run's
    `finished_at` with the same instant, after the task started. A later delivery of the same
    pair finds it done and writes nothing; it started after that instant, so it is not counted
    again."""
    from billing.models import BillingRun, BillingRunPair

    if state != "SUCCESS":
        return
    pairs: list[tuple[int, int]] = []
    if task == "billing.tasks.bill_pair" and len(args) == 3:
        pairs = [(args[1], args[2])]
    elif task == "billing.tasks.bill_pairs" and len(args) == 2:
        pairs = [(h, lic) for h, lic in args[1]]
    if pairs and started_at is not None:
        # First the run alone, by its key: a pair task that did not end its run (all but one of
        # them) stops at this one-row read. An OR of one condition per pair, joined to the
        # pairs, cost ~0.17 s a 500-pair batch, paid by every task on the worker between two
        # batches: with Celery's prefetch of one, the worker then sat idle.
        times = (
            BillingRun.objects.filter(
                pk=args[0], status=BillingRun.Status.DONE, finished_at__gte=started_at
            )
            .values_list("started_at", "finished_at")
            .first()
        )
        if times is None:
            return
        # The pairs whose done_at is the run's end (the completing batch's, at most a batch).
        ended = set(
            BillingRunPair.objects.filter(run_id=args[0], done_at=times[1]).values_list(
                "host_id", "licensor_id"
            )
        )
        if ended & {(int(h), int(lic)) for h, lic in pairs}:
            _observe_run(*times)
    elif task == "billing.tasks.run_monthly_billing" and isinstance(retval, int):
        # A run with no pair is done as soon as it starts. The task returns the run's id.
        run = BillingRun.objects.filter(pk=retval).first()
        if run is not None and run.pairs_total == 0 and run.status == BillingRun.Status.DONE:
            _observe_run(run.started_at, run.finished_at)


def _observe_run(started_at: datetime, finished_at: datetime | None) -> None:
    if finished_at is not None:
        BILLING_RUN_SECONDS.observe((finished_at - started_at).total_seconds())


class BillingRunsCollector(Collector):
    """Billing runs by status and the age of the oldest running one, read from the database at
    scrape time: true whichever process ran them (worker, `run_billing`), and after restarts."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        from billing.models import BillingRun

        by_status = GaugeMetricFamily(
            "tollgate_billing_runs", "Billing runs by status (all periods).", labels=["status"]
        )
        oldest = GaugeMetricFamily(
            "tollgate_billing_run_running_seconds",
            "Age in seconds of the oldest billing run still running (0: none).",
        )
        resumes = GaugeMetricFamily(
            "tollgate_billing_run_resumes",
            "Times billing runs were resumed after they stopped advancing (all runs).",
        )
        try:
            counts = dict(
                BillingRun.objects.order_by()
                .values_list("status")
                .annotate(n=Count("id"))
                .values_list("status", "n")
            )
            resumed = BillingRun.objects.aggregate(n=Sum("resumes"))["n"]
            first = (
                BillingRun.objects.filter(status=BillingRun.Status.RUNNING)
                .order_by("started_at")
                .values_list("started_at", flat=True)
                .first()
            )
        except Exception:  # a scrape must not fail with the database: the gauges are left out
            return
        for status in BillingRun.Status.values:
            by_status.add_metric([status], counts.get(status, 0))
        oldest.add_metric([], (timezone.now() - first).total_seconds() if first else 0)
        resumes.add_metric([], resumed or 0)
        yield by_status
        yield oldest
        yield resumes


class PayoutsCollector(Collector):
    """Payouts by status and rail, read from the database at scrape time (a row per licensor,
    currency and day): a pending payout that stays pending, or any failed one, needs an operator
    (docs/payouts.md)."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        from billing.models import Payout, PayoutStatus

        gauge = GaugeMetricFamily(
            "tollgate_payouts", "Payouts by status and rail (every day).", labels=["status", "rail"]
        )
        try:
            counts = {
                (status, rail): n
                for status, rail, n in Payout.objects.order_by()
                .values_list("status", "rail")
                .annotate(n=Count("id"))
                .values_list("status", "rail", "n")
            }
        except Exception:  # a scrape must not fail with the database: the gauge is left out
            return
        for rail in sorted(PAYOUT_RAILS | {rail for _, rail in counts}):
            for status in PayoutStatus.values:
                gauge.add_metric([status, rail], counts.get((status, rail), 0))
        yield gauge


# The rails always shown (at 0 when no payout went by them); licensing's Licensor.payout_rail.
PAYOUT_RAILS = frozenset({"manual", "stripe_connect"})
# Seconds a scrape waits for the broker, to connect and to answer: a scrape must not hang when
# the broker is down (Prometheus's own scrape timeout is 10 s by default).
BROKER_TIMEOUT = 1


class QueueDepthCollector(Collector):
    """Messages waiting in the Celery queue, read from the broker at scrape time. A growing
    depth means the workers are down or too few; a task taken by a worker and not yet
    acknowledged is not counted. Left out of the scrape when there is no broker or it does not
    answer within BROKER_TIMEOUT."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        from django.conf import settings

        url = settings.CELERY_BROKER_URL
        if not url:
            return  # eager: no queue
        from celery import current_app
        from kombu import Connection

        queue = current_app.conf.task_default_queue
        options = {
            **(settings.CELERY_BROKER_TRANSPORT_OPTIONS or {}),
            "socket_timeout": BROKER_TIMEOUT,
            "socket_connect_timeout": BROKER_TIMEOUT,
            "max_retries": 0,
        }
        try:
            with Connection(url, connect_timeout=BROKER_TIMEOUT, transport_options=options) as conn:
                conn.ensure_connection(max_retries=0, timeout=BROKER_TIMEOUT)
                # Not passive: an empty queue has no key in Redis. Declaring writes nothing.
                channel: Any = conn.default_channel  # kombu's stubs type it without queues
                depth = channel.queue_declare(queue=queue).message_count
        except Exception:  # a scrape must not fail with the broker: the gauge is left out
            return
        gauge = GaugeMetricFamily(
            "tollgate_celery_queue_depth", "Tasks waiting in the Celery queue.", labels=["queue"]
        )
        gauge.add_metric([queue], depth)
        yield gauge


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def samples_registry() -> CollectorRegistry:
    """What a scrape serves of the processes' own samples: with PROMETHEUS_MULTIPROC_DIR, the sum
    of every process writing there (a fresh registry per scrape); otherwise this process's."""
    directory = multiprocess_dir()
    if not directory:
        return REGISTRY
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=directory)
    return registry


def worker_metrics_serve(port: int, addr: str) -> None:
    """A Celery worker's own /metrics (CELERY_METRICS_PORT, config/celery.py): on a machine or in
    a container without a web process, nothing else serves the billing tasks' samples."""
    start_http_server(port, addr=addr, registry=samples_registry())
