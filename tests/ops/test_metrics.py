"""/metrics moves with real traffic: ingestion counts by outcome and rejection code, batch
latency, billing run durations and pair failures, webhook delivery outcomes after real deliveries
to a real receiver, and the runs' and payouts' states read from the database and the queue's
depth from a real Redis."""

from __future__ import annotations

import io
import re
import socket
import warnings
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
import redis
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from kombu import Connection
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from rest_framework.test import APIClient

from billing.models import BillingRun, BillingRunPair, Payout
from billing.payouts import payout_mark_paid
from billing.review import settlement_approve
from billing.stale import billing_runs_resume
from billing.tasks import bill_pair, run_monthly_billing
from billing.webhook_delivery import RETRY_FOR, delivery_attempt
from billing.webhook_models import WebhookDelivery, WebhookEvent
from config.celery import app as celery_app
from config.metrics import observe_billing_task
from licensing.catalog import catalog_import
from licensing.models import Host, Licensor
from tests.billing.conftest import (
    minimax_catalog,
    post_usage,
    record,
    run_billing,
    settlement_of,
)
from tests.billing.test_webhooks import Receiver, deliver, subscribe
from tests.conftest import redis_test_url, skip_or_fail

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
def test_a_batch_task_that_does_not_end_its_run_reads_only_the_run(
    django_assert_num_queries: Callable[..., Any],
) -> None:
    # given: a running run of 500 pairs, and the end of a batch task naming all of them
    catalog_import(minimax_catalog())
    host, licensor = Host.objects.get(slug="fireworks"), Licensor.objects.get()
    run = BillingRun.objects.create(period=PERIOD, pairs_total=500)
    BillingRunPair.objects.create(run=run, host=host, licensor=licensor)
    batch = [[host.pk, licensor.pk]] + [[host.pk, 10_000 + i] for i in range(499)]
    runs_before = sample("tollgate_billing_run_seconds_count")
    started_at = timezone.now() - timedelta(seconds=5)

    # when: a Celery worker pays this between two batches
    with CaptureQueriesContext(connection) as queries:
        observe_billing_task(
            task="billing.tasks.bill_pairs",
            args=(run.pk, batch),
            state="SUCCESS",
            started_at=started_at,
        )

    # then: one read of the run by its key, not of its pairs (a condition per pair, joined to
    # the pairs, cost ~0.17 s a batch)
    assert len(queries) == 1
    assert "billing_billingrunpair" not in queries[0]["sql"]
    assert sample("tollgate_billing_run_seconds_count") == runs_before

    # given: the batch's transaction ended the run
    ended = timezone.now()
    BillingRunPair.objects.filter(run=run).update(done_at=ended)
    BillingRun.objects.filter(pk=run.pk).update(status="done", finished_at=ended)

    # when / then: the run, then the pairs that ended it: observed once
    with django_assert_num_queries(2):
        observe_billing_task(
            task="billing.tasks.bill_pairs",
            args=(run.pk, batch),
            state="SUCCESS",
            started_at=started_at,
        )
    assert sample("tollgate_billing_run_seconds_count") - runs_before == 1

    # when / then: a batch of other pairs of the same run is not the one that ended it
    observe_billing_task(
        task="billing.tasks.bill_pairs",
        args=(run.pk, batch[1:]),
        state="SUCCESS",
        started_at=started_at,
    )
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
    assert "tollgate_billing_run_resumes 0.0" in body


@pytest.mark.django_db
def test_resumed_runs_are_counted(client: APIClient, settings: Any) -> None:
    # given: two Celery runs that stopped advancing (their pairs never ran), and an older run
    # resumed twice
    settings.BILLING_RUN_RESUME_SECONDS = 3600
    two_hours_ago = timezone.now() - timedelta(hours=2)
    BillingRun.objects.create(period="2026-08", status="done", resumes=2)
    for period in ("2026-09", PERIOD):
        run = BillingRun.objects.create(period=period, trigger="task")
        BillingRun.objects.filter(pk=run.pk).update(
            started_at=two_hours_ago, heartbeat_at=two_hours_ago
        )

    # when: beat's reap resumes them
    assert billing_runs_resume().keys() == set(
        BillingRun.objects.filter(status="running").values_list("pk", flat=True)
    )

    # then
    body = client.get("/metrics").content.decode()
    assert "tollgate_billing_run_resumes 4.0" in body


# --- webhook deliveries, payouts and the queue ---------------------------------------------


def scrape() -> str:
    response = APIClient().get("/metrics")
    assert response.status_code == 200
    return response.content.decode()


def scraped(body: str, name: str, **labels: str) -> float | None:
    """The value of one sample of a scrape's text, or None when it is not there."""
    for family in text_string_to_metric_families(body):
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return float(s.value)
    return None


@pytest.fixture
def receiver(settings: Any) -> Iterator[Receiver]:
    settings.TOLLGATE_WEBHOOKS_ALLOW_PRIVATE = True
    r = Receiver()
    r.thread.start()
    yield r
    r.server.shutdown()
    r.server.server_close()


def test_webhook_outcomes_are_counted_after_real_deliveries(
    db: None, client_for: Callable[..., APIClient], receiver: Receiver
) -> None:
    # given: a licensor subscribed to created settlements, three settlements (three hosts) whose
    # events are waiting, and a receiver that answers 500 twice
    hosts = ("fireworks", "together", "deepinfra")
    catalog_import(minimax_catalog(hosts=hosts))
    licensor = client_for(licensor=Licensor.objects.get(slug="minimax"))
    subscribe(licensor, receiver.url, ["settlement.created"])
    for slug in hosts:
        client = client_for(host=Host.objects.get(slug=slug))
        post_usage(client, [record(f"{slug}-1", revenue="10")])
    run_billing(PERIOD)
    receiver.answers = [500, 500]
    outcomes = ("delivered", "retried", "failed", "gave_up")
    body = scrape()
    before = {o: scraped(body, "tollgate_webhook_deliveries_total", outcome=o) for o in outcomes}

    # when: the due deliveries are sent (one 200, two 500s)
    assert deliver() == "webhooks: 1 delivered, 2 failed (to be retried)\n"
    # and one failed delivery's event is three days old when its receiver answers 503 again,
    # while the other's receiver answers 200
    old, other = WebhookDelivery.objects.filter(status="pending").order_by("id")
    WebhookEvent.objects.filter(pk=old.event_id).update(created_at=timezone.now() - RETRY_FOR)
    receiver.answers = [503]
    assert delivery_attempt(delivery_id=old.pk, force=True) is False
    assert delivery_attempt(delivery_id=other.pk, force=True) is True

    # then: each attempt counted once, by its outcome, as the delivery log has it
    body = scrape()
    after = {o: scraped(body, "tollgate_webhook_deliveries_total", outcome=o) for o in outcomes}
    assert None not in after.values()
    assert {o: (after[o] or 0) - (before[o] or 0) for o in outcomes} == {
        "delivered": 1,
        "retried": 1,
        "failed": 2,
        "gave_up": 1,
    }
    assert sorted(WebhookDelivery.objects.values_list("status", "attempts")) == [
        ("failed", 2),
        ("succeeded", 1),
        ("succeeded", 2),
    ]


def test_payouts_are_shown_by_status_and_rail(
    db: None, client_for: Callable[..., APIClient]
) -> None:
    # given: October approved and paid by the host, and the run of the day
    catalog_import(minimax_catalog())
    post_usage(client_for(host=Host.objects.get(slug="fireworks")), [record("p-1", revenue="100")])
    run_billing(PERIOD)
    settlement = settlement_of(licensor="minimax", host="fireworks", period=PERIOD)
    settlement_approve(settlement=settlement, actor="test")
    call_command(
        "record_host_payment",
        "--settlement",
        str(settlement.pk),
        "--reference",
        "BANK-1",
        stdout=io.StringIO(),
    )
    call_command("run_payouts", "--as-of", "2026-11-05", stdout=io.StringIO())
    payout = Payout.objects.get()

    # then: one pending manual payout, every other state at 0
    body = scrape()
    assert scraped(body, "tollgate_payouts", status="pending", rail="manual") == 1
    assert scraped(body, "tollgate_payouts", status="paid", rail="manual") == 0
    assert scraped(body, "tollgate_payouts", status="pending", rail="stripe_connect") == 0

    # when: the operator records it paid
    payout_mark_paid(payout_id=str(payout.pk), reference="OUT-1")

    # then
    body = scrape()
    assert scraped(body, "tollgate_payouts", status="pending", rail="manual") == 0
    assert scraped(body, "tollgate_payouts", status="paid", rail="manual") == 1


@pytest.fixture
def broker(settings: Any) -> str:
    """A Redis database the test owns (tests/conftest.py, redis_test_url), flushed."""
    url = redis_test_url("metrics")
    try:
        redis.Redis.from_url(url, socket_connect_timeout=1).flushdb()
    except redis.RedisError as exc:
        skip_or_fail(f"no Redis at {url} ({exc!r})")
    settings.CELERY_BROKER_URL = url
    return url


@pytest.mark.services
def test_queue_depth_is_read_from_the_broker(db: None, broker: str) -> None:
    # given: an empty queue
    assert scraped(scrape(), "tollgate_celery_queue_depth", queue="celery") == 0

    # when: three tasks sent to the broker with no worker to take them
    with Connection(broker) as conn, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the test process is eager; send_task sends anyway
        producer = conn.Producer()
        for _ in range(3):
            celery_app.send_task("billing.tasks.deliver_due_webhooks", producer=producer)

    # then
    assert scraped(scrape(), "tollgate_celery_queue_depth", queue="celery") == 3
    redis.Redis.from_url(broker).flushdb()


@pytest.mark.parametrize("broker_state", ["refuses", "never answers"])
def test_a_scrape_answers_without_the_broker(db: None, settings: Any, broker_state: str) -> None:
    # given: a broker address where nothing listens, or where a socket accepts connections (the
    # kernel completes them) and never answers
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        port = silent.getsockname()[1]
        if broker_state == "never answers":
            silent.listen(8)
        else:
            silent.close()
        settings.CELERY_BROKER_URL = f"redis://127.0.0.1:{port}/0"

        # when / then: the scrape answers, with the database's gauges and without the queue's
        body = scrape()
    assert "tollgate_celery_queue_depth" not in body
    assert scraped(body, "tollgate_billing_runs", status="done") == 0
