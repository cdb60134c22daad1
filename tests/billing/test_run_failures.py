"""One pair that cannot be settled must not stop anyone else's billing.

Records near bigint's maximum are inserted with SQL, as a host could once post them (ingestion
bounds what a record may carry; billing must hold whatever is stored)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.management.base import CommandError
from django.db import connection
from django.test import Client
from rest_framework.test import APIClient

from billing.models import BillingRun, BillingRunPair, Settlement
from billing.tasks import bill_pair, run_monthly_billing
from licensing.catalog import catalog_import
from licensing.models import Host, Licensor
from tests.billing.conftest import (
    minimax_catalog,
    post_usage,
    record,
    run_billing,
    settlement_of,
)

BIGINT_MAX = 2**63 - 1


def per_token_catalog(per_million_input: str) -> dict[str, Any]:
    """TokenCo: every token of its model billed at `per_million_input` dollars per million."""
    return {
        "licensors": [{"slug": "tokenco", "name": "TokenCo"}],
        "licenses": [
            {
                "slug": "tokenco-1",
                "licensor": "tokenco",
                "name": "TokenCo License",
                "versions": [
                    {
                        "version": "2026-01-01",
                        "effective_from": "2026-01-01T00:00:00Z",
                        "currency": "USD",
                        "rules": [
                            {
                                "charge": {
                                    "type": "per_token",
                                    "per_million": {"input": per_million_input},
                                }
                            }
                        ],
                    }
                ],
            }
        ],
        "models": [{"slug": "token-1", "licensor": "tokenco", "license": "tokenco-1"}],
    }


def insert_like(
    event_id: str, *, like: str, category: str, input_tokens: int, output_tokens: int = 0
) -> None:
    """A copy of the stored record `like` (same host, model, month) with other counts."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO usage_record (host_id, event_id, model_id, license_id, licensor_id,
                occurred_at, received_at, customer_category, input_tokens, cached_input_tokens,
                output_tokens, requests, revenue, currency, region, customer_ref, corrects, late,
                content_hash)
            SELECT host_id, %s, model_id, license_id, licensor_id, occurred_at, received_at, %s,
                   %s, 0, %s, 1, 0, currency, region, customer_ref, '', late, content_hash
            FROM usage_record WHERE event_id = %s
            """,
            [event_id, category, input_tokens, output_tokens, like],
        )
        assert cursor.rowcount == 1


def overflowing_tokenco_usage(client: APIClient) -> None:
    """TokenCo's $10-a-token terms, and usage of the host behind `client` under them that no
    settlement can hold: a record and two copies of it at bigint's maximum input tokens (1.8e20
    dollars)."""
    catalog_import(per_token_catalog("10000000"))
    post_usage(client, [record("fw-t", model="token-1")])
    insert_like("fw-huge-1", like="fw-t", category="commercial", input_tokens=BIGINT_MAX)
    insert_like("fw-huge-2", like="fw-t", category="commercial", input_tokens=BIGINT_MAX)


@pytest.fixture
def two_hosts(db: None, client_for: Callable[..., APIClient]) -> dict[str, APIClient]:
    catalog_import(minimax_catalog(hosts=("fireworks", "together")))
    return {
        slug: client_for(host=Host.objects.get(slug=slug)) for slug in ("fireworks", "together")
    }


def test_it_settles_token_sums_beyond_bigint(
    minimax_world: tuple[Host, Licensor], client_for: Callable[..., APIClient]
) -> None:
    # given: two free records whose input tokens sum past bigint (2 x (2^63 - 1))
    host, licensor = minimax_world
    post_usage(client_for(host=host), [record("seed", category="individual")])
    insert_like("huge-1", like="seed", category="individual", input_tokens=BIGINT_MAX)
    insert_like("huge-2", like="seed", category="individual", input_tokens=BIGINT_MAX)

    # when
    out = run_billing("2026-10")

    # then: the line holds the exact sum, and the API shows it as an integer
    settlement = settlement_of(licensor="minimax", host="fireworks", period="2026-10")
    line = settlement.lines.get(customer_category="individual")
    assert line.input_tokens == 18446744073709551614
    assert (line.requests, line.amount, settlement.total_display) == (3, 0, "0.00")
    assert ": done, 1/1 pairs, 0 failed" in out
    body = client_for(licensor=licensor).get(f"/api/v1/settlements/{settlement.pk}").json()
    assert body["lines"][0]["input_tokens"] == 18446744073709551614


def test_it_settles_every_other_pair_when_one_fails(
    two_hosts: dict[str, APIClient], client_for: Callable[..., APIClient]
) -> None:
    # given: fireworks and together owe minimax; fireworks also owes TokenCo $10 a token for two
    # records whose amount (1.8e20 dollars) no settlement can hold
    post_usage(two_hosts["fireworks"], [record("fw-1", revenue="1000.00")])
    post_usage(two_hosts["together"], [record("to-1", revenue="500.00")])
    overflowing_tokenco_usage(two_hosts["fireworks"])

    # when
    with pytest.raises(CommandError) as failure:
        run_billing("2026-10")

    # then: the command names the pair that failed, after billing the others
    assert "1 of 3 pair(s) could not be settled (tokenco/fireworks)" in str(failure.value)
    run = BillingRun.objects.get(period="2026-10")
    assert (run.status, run.pairs_done, run.pairs_failed) == ("partial", 3, 1)
    assert run.finished_at is not None
    totals = {
        (s.licensor.slug, s.host.slug): s.total_display
        for s in Settlement.objects.filter(period="2026-10")
    }
    assert totals == {("minimax", "fireworks"): "120.00", ("minimax", "together"): "60.00"}
    failed = BillingRunPair.objects.get(run=run, licensor__slug="tokenco")
    assert failed.done_at is not None
    assert failed.error.startswith("DataError: numeric field overflow")
    assert run.error.startswith("licensor tokenco / host fireworks: DataError: numeric field")
    assert BillingRunPair.objects.filter(run=run, error="").count() == 2


def test_it_shows_the_failed_pair_on_the_runs_admin_page(
    two_hosts: dict[str, APIClient],
) -> None:
    # given: a partial run
    post_usage(two_hosts["together"], [record("to-1", revenue="500.00")])
    overflowing_tokenco_usage(two_hosts["fireworks"])
    with pytest.raises(CommandError):
        run_billing("2026-10")
    run = BillingRun.objects.get(period="2026-10")
    operator = Client()
    operator.force_login(User.objects.create_superuser("ops", password="pw"))

    # when
    page = operator.get(f"/admin/billing/billingrun/{run.pk}/change/")

    # then: which pair, and why
    assert page.status_code == 200
    assert b"partial" in page.content
    assert b"licensor tokenco / host fireworks: DataError: numeric field overflow" in page.content


def test_it_isolates_a_failing_pair_under_celery(two_hosts: dict[str, APIClient]) -> None:
    # given
    post_usage(two_hosts["together"], [record("to-1", revenue="500.00")])
    overflowing_tokenco_usage(two_hosts["fireworks"])

    # when: the run as beat starts it (in-process), then the failed pair's task delivered again
    run_id = run_monthly_billing.delay("2026-10").get()
    failed = BillingRunPair.objects.get(run_id=run_id, licensor__slug="tokenco")
    again = bill_pair.delay(run_id, failed.host_id, failed.licensor_id).get()

    # then: the run is partial, the other pair settled; the redelivery changes nothing
    run = BillingRun.objects.get(pk=run_id)
    assert (run.status, run.progress, run.pairs_failed) == ("partial", "2/2", 1)
    assert settlement_of(licensor="minimax", host="together", period="2026-10").total_display == (
        "60.00"
    )
    assert not Settlement.objects.filter(licensor__slug="tokenco").exists()
    assert again == 0
    assert run.error.count("licensor tokenco / host fireworks") == 1


def test_it_marks_a_run_failed_when_no_pair_could_be_settled(
    minimax_world: tuple[Host, Licensor], client_for: Callable[..., APIClient]
) -> None:
    # given: the only pair cannot be settled
    overflowing_tokenco_usage(client_for(host=minimax_world[0]))

    # when
    with pytest.raises(CommandError, match=r"1 of 1 pair\(s\) could not be settled"):
        run_billing("2026-10")

    # then
    run = BillingRun.objects.get(period="2026-10")
    assert (run.status, run.pairs_done, run.pairs_failed) == ("failed", 1, 1)


def test_it_stores_a_long_line_description(
    minimax_world: tuple[Host, Licensor], client_for: Callable[..., APIClient]
) -> None:
    # given: a greater_of of five per-token charges with thresholds (a description of 500+)
    tiers = [
        {
            "type": "per_token",
            "per_million": {"input": "0.03", "cached_input": "0.005", "output": "0.12"},
            "above": {"metric": "tokens", "window": "calendar_year", "amount": str(n * 1000)},
        }
        for n in range(1, 6)
    ]
    catalog = per_token_catalog("1")
    catalog["licenses"][0]["versions"][0]["rules"] = [
        {"charge": {"type": "greater_of", "of": tiers}}
    ]
    catalog_import(catalog)
    post_usage(
        client_for(host=minimax_world[0]),
        [record("t-1", model="token-1", input_tokens=2_000_000, output_tokens=1_000_000)],
    )

    # when
    run_billing("2026-10")

    # then
    line = settlement_of(licensor="tokenco", host="fireworks", period="2026-10").lines.get()
    assert len(line.description) > 500
    assert line.description.startswith(
        "greater of $0.03 / $0.005 / $0.12 per 1M input / cached input / output tokens above "
        "1,000 tokens per calendar year, "
    )
    assert line.description.endswith("above 5,000 tokens per calendar year")
    assert str(line.amount) == "0.1800"  # 0.18 x (3M - 1,000) / 3M = 0.17994, rounded


def test_it_counts_the_year_to_date_of_records_beyond_bigint(
    minimax_world: tuple[Host, Licensor], client_for: Callable[..., APIClient]
) -> None:
    # given: a calendar-year token threshold, and in September a record whose three counts
    # together pass bigint
    catalog = per_token_catalog("1")
    catalog["licenses"][0]["versions"][0]["rules"] = [
        {
            "charge": {
                "type": "per_token",
                "per_million": {"input": "1"},
                "above": {"metric": "tokens", "window": "calendar_year", "amount": "1000"},
            }
        }
    ]
    catalog_import(catalog)
    client = client_for(host=minimax_world[0])
    post_usage(client, [record("sep", model="token-1", at="2026-09-10T12:00:00Z")])
    insert_like(
        "sep-huge", like="sep", category="commercial", input_tokens=BIGINT_MAX, output_tokens=10
    )
    post_usage(client, [record("oct", model="token-1", input_tokens=2_000_000)])

    # when: October is billed; its threshold is long passed by September's record
    run_billing("2026-10")

    # then: every October token is above it, $1 a million
    october = settlement_of(licensor="tokenco", host="fireworks", period="2026-10")
    assert october.total_display == "2.00"
