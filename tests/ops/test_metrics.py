"""/metrics moves with real traffic: ingestion counts by outcome and rejection code, batch
latency, billing run durations and pair failures, and the runs' states read from the database."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta

import pytest
from django.utils import timezone
from prometheus_client import REGISTRY
from rest_framework.test import APIClient

from billing.models import BillingRun, BillingRunPair
from billing.tasks import bill_pair, run_monthly_billing
from licensing.catalog import catalog_import
from licensing.models import Host
from tests.billing.conftest import minimax_catalog, record

PERIOD = "2026-10"


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
def fireworks_client(db: None, client_for: Callable[..., APIClient]) -> APIClient:
    catalog_import(minimax_catalog())
    return client_for(host=Host.objects.get(slug="fireworks"))


def test_ingestion_counters_move_after_real_requests(fireworks_client: APIClient) -> None:
    # given
    names = [
        ("tollgate_ingest_records_total", {"outcome": "accepted"}),
        ("tollgate_ingest_records_total", {"outcome": "duplicate"}),
        ("tollgate_ingest_records_total", {"outcome": "rejected"}),
        ("tollgate_ingest_rejections_total", {"code": "conflict"}),
        ("tollgate_ingest_rejections_total", {"code": "unknown_model"}),
        ("tollgate_ingest_batch_seconds_count", {}),
        ("tollgate_ingest_batches_total", {"status": "200", "code": "ok"}),
        ("tollgate_ingest_batches_total", {"status": "415", "code": "unsupported_media_type"}),
    ]
    before = [sample(n, endpoint="usage", **labels) for n, labels in names]

    # when: a first batch, then one with a resend, a conflict and an unknown model, then a body
    # of another content type
    first = fireworks_client.post(
        "/api/v1/usage",
        {"records": [record("m-1", revenue="10"), record("m-2", revenue="20")]},
        format="json",
    )
    second = fireworks_client.post(
        "/api/v1/usage",
        {
            "records": [
                record("m-1", revenue="10"),
                record("m-2", revenue="21"),
                record("m-3", model="no-such-model"),
                record("m-4", revenue="5"),
            ]
        },
        format="json",
    )
    refused = fireworks_client.post("/api/v1/usage", "x", content_type="text/plain")

    # then
    assert (first.status_code, second.status_code, refused.status_code) == (200, 200, 415)
    assert (second.json()["accepted"], second.json()["rejected"]) == (1, 2)
    after = [sample(n, endpoint="usage", **labels) for n, labels in names]
    assert [a - b for a, b in zip(after, before, strict=True)] == [3, 1, 2, 1, 1, 2, 2, 1]


def test_reading_usage_counts_no_batch(fireworks_client: APIClient) -> None:
    before = sum(
        sample("tollgate_ingest_batches_total", endpoint="usage", status=status, code=code)
        for status, code in (("200", "ok"), ("200", "error"))
    )

    response = fireworks_client.get("/api/v1/usage")

    assert response.status_code == 200
    after = sum(
        sample("tollgate_ingest_batches_total", endpoint="usage", status=status, code=code)
        for status, code in (("200", "ok"), ("200", "error"))
    )
    assert after == before


def test_metrics_serves_the_ingestion_counters(fireworks_client: APIClient) -> None:
    fireworks_client.post("/api/v1/usage", {"records": [record("s-1")]}, format="json")

    body = APIClient().get("/metrics").content.decode()

    assert 'tollgate_ingest_records_total{endpoint="usage",outcome="accepted"}' in body
    assert 'tollgate_ingest_batch_seconds_bucket{endpoint="usage",le="0.5"}' in body


@pytest.mark.django_db(transaction=True)
def test_billing_metrics_move_when_the_task_completes_a_run(
    client_for: Callable[..., APIClient],
) -> None:
    # given: usage of two hosts in the period
    catalog_import(minimax_catalog(hosts=("fireworks", "together")))
    for slug in ("fireworks", "together"):
        client = client_for(host=Host.objects.get(slug=slug))
        response = client.post(
            "/api/v1/usage", {"records": [record(f"{slug}-1", revenue="100")]}, format="json"
        )
        assert response.json()["accepted"] == 1
    runs_before = sample("tollgate_billing_run_seconds_count")
    failures_before = sample("tollgate_billing_pair_failures_total", kind="error")

    # when: the monthly task, as beat sends it (in-process here: no broker in tests)
    run_id = run_monthly_billing.delay(PERIOD).get()

    # then: one run observed, once, although two pair tasks ended
    run = BillingRun.objects.get(pk=run_id)
    assert (run.status, run.pairs_done) == ("done", 2)
    assert sample("tollgate_billing_run_seconds_count") - runs_before == 1
    assert sample("tollgate_billing_run_seconds_sum") > 0
    body = APIClient().get("/metrics").content.decode()
    assert 'tollgate_billing_runs{status="done"} 1.0' in body
    assert "tollgate_billing_run_running_seconds 0.0" in body

    # when: a pair task of the finished run delivered again (it changes nothing)
    pair = BillingRunPair.objects.filter(run_id=run_id).order_by("id").last()
    assert pair is not None
    assert bill_pair.delay(run_id, pair.host_id, pair.licensor_id).get() == 0

    # then: the run is not observed a second time
    assert sample("tollgate_billing_run_seconds_count") - runs_before == 1

    # when: a pair task that fails (no such pair in the run), its error kept as a worker keeps
    # it (eager tasks raise before Celery's end-of-task signals)
    failed = bill_pair.apply((run_id, 0, 0), throw=False)
    assert failed.state == "FAILURE"

    # then
    assert sample("tollgate_billing_pair_failures_total", kind="error") - failures_before == 1
    assert sample("tollgate_billing_run_seconds_count") - runs_before == 1


@pytest.mark.django_db
def test_a_running_run_shows_its_age(client: APIClient) -> None:
    # given: a run started two hours ago that never finished
    run = BillingRun.objects.create(period=PERIOD)
    BillingRun.objects.filter(pk=run.pk).update(started_at=timezone.now() - timedelta(hours=2))

    body = client.get("/metrics").content.decode()

    assert 'tollgate_billing_runs{status="running"} 1.0' in body
    assert 'tollgate_billing_runs{status="failed"} 0.0' in body
    age = re.search(r"^tollgate_billing_run_running_seconds (\S+)$", body, re.MULTILINE)
    assert age is not None
    assert 7200 <= float(age.group(1)) < 7300
