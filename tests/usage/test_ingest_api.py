"""POST /api/v1/usage: the basic contract of a batch."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from tests.usage.conftest import AT, record
from usage.api import ResultSerializer
from usage.models import UsageRecord


def test_it_stores_a_valid_batch_with_defaults_and_denormalized_ids(
    catalog: Any, post: Any
) -> None:
    # given a host and a catalog with a model and its fine-tune
    model, finetune = catalog["model"], catalog["finetune"]

    # when the host posts two records, one by alias and one for the fine-tune
    response = post(
        [
            record("a-1", model="MiniMaxAI/MiniMax-M2.7"),
            record("a-2", model="m27-tuned", revenue=None, region="DE", customer_ref="cust 9"),
        ]
    )

    # then both are accepted and stored with the resolved ids and the defaults
    assert response.status_code == 200, response.content
    assert response.json() == {
        "accepted": 2,
        "duplicates": 0,
        "rejected": 0,
        "late": 0,
        "results": [],
    }
    first = UsageRecord.objects.get(event_id="a-1")
    assert (first.model_id, first.license_id, first.licensor_id) == (
        model.pk,
        model.license_id,
        model.license.licensor_id,
    )
    assert first.occurred_at == AT
    assert (first.requests, first.cached_input_tokens, first.currency) == (1, 0, "USD")
    assert first.revenue == Decimal("1.50")
    second = UsageRecord.objects.get(event_id="a-2")
    # a derivative is rated under its parent's license, paid to that license's licensor
    assert second.model_id == finetune.pk
    assert second.license_id == model.license_id
    assert second.licensor_id == model.license.licensor_id
    assert (second.revenue, second.region, second.customer_ref) == (Decimal(0), "DE", "cust 9")


def test_it_counts_an_identical_resend_once_as_a_duplicate(catalog: Any, post: Any) -> None:
    # given a stored record
    assert post([record("d-1")]).json()["accepted"] == 1

    # when the same record is sent again (with the default spelled out and the alias for the slug)
    response = post([record("d-1", requests=1, model="MiniMaxAI/MiniMax-M2.7")])

    # then it is a duplicate, a success, and stored once
    assert response.status_code == 200
    assert response.json() == {
        "accepted": 0,
        "duplicates": 1,
        "rejected": 0,
        "late": 0,
        "results": [{"index": 0, "event_id": "d-1", "status": "duplicate", "errors": {}}],
    }
    assert UsageRecord.objects.filter(event_id="d-1").count() == 1


def test_it_rejects_other_content_under_a_stored_event_id_as_a_conflict(
    catalog: Any, post: Any
) -> None:
    # given a stored record
    post([record("c-1", input_tokens=10)])

    # when the same event_id arrives with other content
    body = post([record("c-1", input_tokens=11)]).json()

    # then it is rejected with the code conflict on event_id, and the stored record stays
    assert body["rejected"] == 1
    [result] = body["results"]
    assert result["status"] == "rejected"
    assert result["errors"]["event_id"][0].startswith("conflict: ")
    assert UsageRecord.objects.get(event_id="c-1").input_tokens == 10


def test_it_classifies_copies_within_one_batch(catalog: Any, post: Any) -> None:
    # given one batch holding a record, an identical copy and a changed copy
    batch = [record("w-1"), record("w-1"), record("w-1", output_tokens=1)]

    # when it is posted
    body = post(batch).json()

    # then the first is stored, the copy is a duplicate, the changed copy a conflict
    assert (body["accepted"], body["duplicates"], body["rejected"]) == (1, 1, 1)
    assert [r["status"] for r in body["results"]] == ["duplicate", "rejected"]
    assert UsageRecord.objects.filter(event_id="w-1").count() == 1


def test_it_rejects_currency_that_differs_from_the_terms_in_force(catalog: Any, post: Any) -> None:
    # given a model licensed in EUR and a USD host
    # when the host posts usage in its default currency (USD) and one explicitly in EUR
    body = post(
        [record("e-1", model="euromodel"), record("e-2", model="euromodel", currency="EUR")]
    ).json()

    # then the USD record is rejected with currency_mismatch on currency; the EUR one is stored
    assert body["accepted"] == 1
    [result] = body["results"]
    assert result["index"] == 0
    assert result["errors"]["currency"][0].startswith("currency_mismatch: ")


def test_it_accepts_ndjson_and_gzip(catalog: Any, post: Any) -> None:
    # given two records
    records = [record("n-1"), record("n-2")]

    # when sent as gzipped NDJSON, and then as gzipped JSON
    first = post(records, ndjson=True, gzipped=True)
    second = post(records, gzipped=True)

    # then the first send stores both, the second finds both duplicates
    assert first.status_code == 200, first.content
    assert first.json()["accepted"] == 2
    assert second.json()["duplicates"] == 2
    assert UsageRecord.objects.filter(event_id__in=["n-1", "n-2"]).count() == 2


def test_it_renders_the_results_as_the_result_fields_would(catalog: Any, post: Any) -> None:
    # given a stored record
    assert post([record("r-1")]).json()["accepted"] == 1

    # when a batch answers a duplicate, a conflict and records rejected with and without event_id
    body = post(
        [record("r-1"), record("r-1", revenue="2"), record("bad id!"), {"model": "m27"}]
    ).json()

    # then the fast list rendering is what ResultSerializer's fields make of each result
    assert [r["status"] for r in body["results"]] == [
        "duplicate",
        "rejected",
        "rejected",
        "rejected",
    ]
    assert body["results"][3]["event_id"] is None
    assert body["results"] == [dict(ResultSerializer(r).data) for r in body["results"]]
