"""GET /api/v1/usage and /summary: own records only, cursor pages, totals; append-only storage."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection, transaction
from django.db.utils import DatabaseError

from tests.usage.conftest import AT, record
from usage.models import UsageRecord


def test_it_pages_own_records_with_a_cursor(catalog: Any, post: Any, host_client: Any) -> None:
    # given 250 records
    post([record(f"p-{i:03d}") for i in range(250)])

    # when the pages are followed
    seen: list[str] = []
    url = "/api/v1/usage?model=minimax-m2.7"
    while url:
        body = host_client.get(url).json()
        seen += [r["event_id"] for r in body["results"]]
        url = body["next"]

    # then every record is seen exactly once
    assert sorted(seen) == [f"p-{i:03d}" for i in range(250)]


def test_it_never_shows_another_hosts_usage(
    catalog: Any, post: Any, other_host: Any, client_for: Any
) -> None:
    # given host A's record, and host B who sends the same event_id with other content
    post([record("shared-id", input_tokens=1)])
    other = client_for(host=other_host)
    body_b = post([record("shared-id", input_tokens=2)], client=other).json()

    # when B lists its usage and its summary
    listed = other.get("/api/v1/usage").json()["results"]
    summary = other.get(f"/api/v1/usage/summary?period={AT:%Y-%m}").json()

    # then B's record is B's own (no conflict with A's), and B never sees A's
    assert body_b["accepted"] == 1
    assert [r["input_tokens"] for r in listed] == [2]
    assert [t["input_tokens"] for t in summary["totals"]] == [2]
    assert UsageRecord.objects.get(event_id="shared-id", host=other_host).input_tokens == 2


def test_it_writes_only_as_the_keys_host(
    catalog: Any, post: Any, host: Any, other_host: Any
) -> None:
    # given / when host A's key posts a record that names host B
    body = post([record("as-b", host=other_host.slug)]).json()

    # then the record is refused (there is no host field) and B has nothing
    assert body["results"][0]["errors"]["host"][0].startswith("unknown_field: ")
    assert not UsageRecord.objects.filter(host=other_host).exists()


def test_it_sums_a_month_per_model_and_category(catalog: Any, post: Any, host_client: Any) -> None:
    # given two commercial records and a correction, and one research record
    post(
        [
            record("s-1", revenue="1.25"),
            record("s-2", revenue="2.00"),
            record("s-3", customer_category="research", revenue="0"),
        ]
    )
    post([record("s-1-fix", corrects="s-1", input_tokens=-500, output_tokens=0, revenue="-0.25")])

    # when the summary of the month is read
    body = host_client.get(f"/api/v1/usage/summary?period={AT:%Y-%m}").json()

    # then the totals are per model and category, corrections summed in
    commercial = next(t for t in body["totals"] if t["customer_category"] == "commercial")
    assert commercial["records"] == 2
    assert commercial["input_tokens"] == 1500
    assert commercial["revenue"] == "3.000000"
    # and each carries the estimate billing would write now: 12% of commercial, research free
    assert commercial["estimated_charge"] == "0.36"
    research = next(t for t in body["totals"] if t["customer_category"] == "research")
    assert research["estimated_charge"] == "0.00"
    assert body["estimated_charge"] == [{"licensor": "minimax", "currency": "USD", "total": "0.36"}]
    assert host_client.get("/api/v1/usage/summary?period=2026-13").status_code == 400


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE usage_record SET input_tokens = 0",
        "DELETE FROM usage_record",
        "DELETE FROM usage_key",
    ],
)
def test_it_refuses_update_and_delete_by_raw_sql(catalog: Any, post: Any, statement: str) -> None:
    # given a stored record
    post([record("locked")])

    # when raw SQL tries to change or remove it
    with (
        pytest.raises(DatabaseError, match="append-only"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute(statement)

    # then it is still there as it was
    assert UsageRecord.objects.get(event_id="locked").input_tokens == 1000


@pytest.mark.parametrize(
    "query",
    [
        "from=yesterday",
        "to=2026-01-01T00:00:00",
        "cursor=not-a-cursor",
        "cursor=MjAyNi0wMS0wMVQwMDowMDowMCswMDowMHw5OTk5OTk5OTk5OTk5OTk5OTk5OTk5",
        "model=a%00b",
    ],
)
def test_it_answers_bad_list_parameters_with_400(
    catalog: Any, host_client: Any, query: str
) -> None:
    # given / when the list is read with a bad parameter
    response = host_client.get(f"/api/v1/usage?{query}")

    # then 400 naming the parameter
    assert response.status_code == 400, response.content
    assert response.json()["error"]["fields"]
