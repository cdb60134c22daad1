"""Operations endpoints: /healthz and /metrics."""

from __future__ import annotations

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from config.metrics import (
    BillingRunsCollector,
    PayoutsCollector,
    QueueDepthCollector,
    samples_registry,
)


def _database_state() -> str:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return "ok"
    except Exception as exc:  # any failure is the state we report
        return f"error: {exc.__class__.__name__}"


def _broker_state() -> str:
    if not settings.CELERY_BROKER_URL:
        return "eager"  # no broker configured: tasks run in-process
    from config.celery import app

    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
        return "ok"
    except Exception as exc:
        return f"error: {exc.__class__.__name__}"


def healthz(request: HttpRequest) -> JsonResponse:
    state = {"database": _database_state(), "broker": _broker_state()}
    healthy = all(v in {"ok", "eager"} for v in state.values())
    return JsonResponse(
        {"status": "ok" if healthy else "degraded", **state}, status=200 if healthy else 503
    )


# Read from the database and the broker at each scrape (config/metrics.py); a registry of its
# own, so that it is never summed across processes.
_DATABASE_METRICS = CollectorRegistry(auto_describe=False)
_DATABASE_METRICS.register(BillingRunsCollector())
_DATABASE_METRICS.register(PayoutsCollector())
_DATABASE_METRICS.register(QueueDepthCollector())


def metrics(request: HttpRequest) -> HttpResponse:
    # Every process of the machine (gunicorn workers, Celery worker) that writes its samples into
    # PROMETHEUS_MULTIPROC_DIR is summed, then the database's gauges.
    body = generate_latest(samples_registry()) + generate_latest(_DATABASE_METRICS)
    return HttpResponse(body, content_type=CONTENT_TYPE_LATEST)
