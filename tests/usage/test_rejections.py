"""The rejections log: what either ingest endpoint refused, kept 30 days, listed per host."""

from __future__ import annotations

import json
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from licensing.models import Host
from tests.usage.conftest import AT_TEXT, record
from usage.api import BATCHES_BY_PATH, EVENT_BATCHES_BY_PATH
from usage.models import UsageRejection
from usage.tasks import purge_usage_rejections


def bad(event_id: str) -> dict[str, Any]:
    return record(event_id, input_tokens=-1)


def test_a_rejected_record_is_logged_with_its_errors(catalog: Any, post: Any) -> None:
    # given a stored record
    post([record("ok-1")])

    # when a batch holds a duplicate, an accepted record and a rejected one
    post([record("ok-1"), record("ok-2"), bad("bad-1")])

    # then only the rejected one is logged, with the errors it was answered with
    row = UsageRejection.objects.get()
    assert (row.endpoint, row.event_id, row.index) == ("usage", "bad-1", 2)
    assert row.errors == {"input_tokens": ["invalid: must be an integer from 0 to 1000000000000"]}


def test_a_malformed_request_is_logged_whole(catalog: Any, host_client: APIClient) -> None:
    host_client.post("/api/v1/usage", data=b'{"records": 7}', content_type="application/json")
    host_client.post("/api/v1/events", data=b"{}", content_type="text/plain")

    rows = list(UsageRejection.objects.order_by("id").values("endpoint", "event_id", "errors"))
    assert rows[0] == {
        "endpoint": "usage",
        "event_id": "",
        "errors": {"records": ["invalid: a list"]},
    }
    assert rows[1]["endpoint"] == "events"
    assert list(rows[1]["errors"]) == ["request"]
    assert "text/plain" in rows[1]["errors"]["request"][0]


@pytest.fixture
def commercial(host: Host) -> Host:
    host.default_customer_category = "commercial"
    host.save()
    return host


def send_events(client: APIClient, events: list[Any], **headers: str) -> Any:
    return client.post(
        "/api/v1/events",
        data=json.dumps(events).encode(),
        content_type="application/cloudevents-batch+json",
        **headers,
    )


def event(event_id: str, **data: Any) -> dict[str, Any]:
    return {"id": event_id, "time": AT_TEXT, "data": {"model": "minimax-m2.7", **data}}


def test_rejected_events_are_listed_under_the_events_fields(
    catalog: Any, commercial: Host, host_client: APIClient
) -> None:
    # given events refused, one answered with 204 (Prefer: return=minimal)
    send_events(host_client, [event("e-1", cost="-1")])
    send_events(
        host_client, [event("e-2"), event("e-3", model="gpt-17")], HTTP_PREFER="return=minimal"
    )

    # when the host lists its rejections
    response = host_client.get("/api/v1/usage/rejections")

    # then both are there, named as the events named them
    assert response.status_code == 200
    results = response.json()["results"]
    assert [(r["endpoint"], r["event_id"], r["index"]) for r in results] == [
        ("events", "e-1", 0),
        ("events", "e-3", 1),
    ]
    assert results[0]["errors"] == {"data.cost": ["invalid: must be ≥ 0"]}
    assert results[1]["errors"] == {"data.model": ["unknown_model: no model or alias 'gpt-17'"]}
    assert response.json()["next"] is None


def test_the_list_is_per_host_paged_and_filtered_by_since(
    catalog: Any, host: Host, post: Any, client_for: Any, other_host: Host, host_client: APIClient
) -> None:
    # given 101 rejections of this host and one of another host
    post([bad(f"b-{i:03d}") for i in range(101)])
    post([bad("theirs")], client=client_for(host=other_host))

    # when the host pages through its list
    first = host_client.get("/api/v1/usage/rejections").json()
    second = host_client.get(first["next"]).json()

    # then it sees its own 101, 100 and 1, never the other host's
    assert len(first["results"]) == 100
    assert [r["event_id"] for r in second["results"]] == ["b-100"]
    assert second["next"] is None

    # and since after them all lists none
    later = (timezone.now() + timedelta(seconds=1)).isoformat().replace("+00:00", "Z")
    assert host_client.get("/api/v1/usage/rejections", {"since": later}).json()["results"] == []


@pytest.mark.parametrize(
    ("query", "field"), [({"since": "yesterday"}, "since"), ({"cursor": "!!"}, "cursor")]
)
def test_a_bad_query_is_a_400_naming_the_parameter(
    host_client: APIClient, query: dict[str, str], field: str
) -> None:
    response = host_client.get("/api/v1/usage/rejections", query)

    assert response.status_code == 400
    assert field in response.json()["error"]["fields"]


def test_rows_older_than_30_days_are_hidden_then_purged(
    catalog: Any, host: Host, post: Any, host_client: APIClient
) -> None:
    # given a rejection of 31 days ago and one of today
    post([bad("old"), bad("new")])
    UsageRejection.objects.filter(event_id="old").update(
        received_at=timezone.now() - timedelta(days=31)
    )

    # then the list shows today's only
    listed = host_client.get("/api/v1/usage/rejections").json()["results"]
    assert [r["event_id"] for r in listed] == ["new"]

    # when beat's purge runs, the old row is gone
    assert purge_usage_rejections() == 1
    assert list(UsageRejection.objects.values_list("event_id", flat=True)) == ["new"]


def test_operators_see_rejections_in_the_admin(catalog: Any, post: Any) -> None:
    post([bad("seen-in-admin")])
    User.objects.create_superuser("op", "op@example.com", "pw-for-tests")
    client = Client()
    client.login(username="op", password="pw-for-tests")

    response = client.get("/admin/usage/usagerejection/")

    assert response.status_code == 200
    assert "seen-in-admin" in response.content.decode()
    row = UsageRejection.objects.get()
    assert client.get(f"/admin/usage/usagerejection/{row.pk}/change/").status_code == 200


def test_a_nul_in_a_field_name_is_logged_as_text(catalog: Any, post: Any) -> None:
    # PostgreSQL's jsonb holds no NUL: the log writes it out instead of failing the request
    response = post([{**record("nul-1"), "bad\x00key": 1}])

    assert response.status_code == 200
    assert UsageRejection.objects.get().errors == {
        "bad\\u0000key": ["unknown_field: not a field of a usage record"]
    }


def _log_writes(queries: CaptureQueriesContext) -> list[str]:
    return [
        q["sql"]
        for q in queries.captured_queries
        if q["sql"].startswith('INSERT INTO "usage_rejection"')
    ]


LOWER_Z = AT_TEXT.replace("Z", "z")  # valid, but only the per-record path reads it


@pytest.mark.parametrize(
    ("endpoint", "batch", "path", "prefer"),
    [
        ("usage", [record("u-1"), record("u-2")], "fast", ""),
        ("usage", [record("u-1"), record("u-3", revenue=12)], "per_record", ""),
        ("events", [event("e-1"), event("e-2")], "fast", ""),
        ("events", [event("e-1"), {**event("e-3"), "time": LOWER_Z}], "per_record", ""),
        ("events", [event("e-1"), event("e-4")], "fast", "return=minimal"),
    ],
    ids=["usage-fast", "usage-per-record", "events-fast", "events-per-record", "events-204"],
)
def test_an_all_accepted_batch_does_not_write_to_the_log(
    catalog: Any,
    commercial: Host,
    host_client: APIClient,
    endpoint: str,
    batch: list[Any],
    path: str,
    prefer: str,
) -> None:
    # given a stored record or event, which the batch resends (a duplicate is a success)
    def send(items: list[Any]) -> Any:
        body: Any = {"records": items} if endpoint == "usage" else items
        content_type = (
            "application/json" if endpoint == "usage" else "application/cloudevents-batch+json"
        )
        headers: dict[str, Any] = {"HTTP_PREFER": prefer} if prefer else {}
        return host_client.post(
            f"/api/v1/{endpoint}", data=json.dumps(body), content_type=content_type, **headers
        )

    send(batch[:1])
    counter = EVENT_BATCHES_BY_PATH if endpoint == "events" else BATCHES_BY_PATH
    served = counter.copy()

    # when the batch is sent
    with CaptureQueriesContext(connection) as queries:
        response = send(batch)

    # then all is accepted, on the path named, and nothing is written to the log
    assert response.status_code in (200, 202, 204), response.content
    if response.status_code != 204:
        assert response.json()["rejected"] == 0 and response.json()["duplicates"] == 1
    assert counter - served == Counter({path: 1})
    assert _log_writes(queries) == []
    assert not UsageRejection.objects.exists()


def test_a_batch_with_a_rejected_record_writes_the_log_once(catalog: Any, post: Any) -> None:
    # the control of the test above: the query it looks for is the one the log writes
    with CaptureQueriesContext(connection) as queries:
        post([record("ok-1"), bad("bad-1"), bad("bad-2")])

    assert len(_log_writes(queries)) == 1
    assert UsageRejection.objects.count() == 2
