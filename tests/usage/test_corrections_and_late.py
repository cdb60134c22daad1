"""Corrections (signed deltas, net ≥ 0, serialized per original) and late usage."""

from __future__ import annotations

import threading
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection
from django.db.models import Sum

from tests.usage.conftest import AT, record
from usage.models import PeriodClose, UsageRecord
from usage.services import period_close, usage_batch_ingest


def _net(event_id: str) -> dict[str, Any]:
    rows = UsageRecord.objects.filter(event_id=event_id) | UsageRecord.objects.filter(
        corrects=event_id
    )
    return rows.aggregate(tokens=Sum("input_tokens"), revenue=Sum("revenue"))


def test_it_applies_signed_deltas_of_a_correction(catalog: Any, post: Any) -> None:
    # given an original of 1000 input tokens and 1.50 revenue
    post([record("o-1")])

    # when a correction takes 400 tokens and 0.50 off (requests default to 0 for a delta)
    body = post(
        [record("o-1-fix", corrects="o-1", input_tokens=-400, output_tokens=0, revenue="-0.50")]
    ).json()

    # then it is stored, and the net is 600 tokens, 1.00 revenue, one request
    assert body["accepted"] == 1, body
    assert _net("o-1") == {"tokens": 600, "revenue": Decimal("1.00")}
    assert UsageRecord.objects.get(event_id="o-1-fix").requests == 0


def test_it_refuses_a_correction_that_takes_the_net_below_zero(catalog: Any, post: Any) -> None:
    # given an original of 1000 tokens, already corrected by -600
    post(
        [
            record("o-2"),
            record("o-2-a", corrects="o-2", input_tokens=-600, output_tokens=0, revenue="0"),
        ]
    )

    # when another correction takes 500 more
    body = post(
        [record("o-2-b", corrects="o-2", input_tokens=-500, output_tokens=0, revenue="0")]
    ).json()

    # then it is rejected with negative_net on input_tokens and the net stays 400
    [result] = body["results"]
    assert result["errors"]["input_tokens"][0].startswith("negative_net: ")
    assert _net("o-2")["tokens"] == 400


def test_it_requires_a_correction_to_repeat_its_originals_identity(catalog: Any, post: Any) -> None:
    # given an original
    post([record("o-3")])

    # when a correction names another customer_category, or corrects a correction
    body = post(
        [
            record("o-3-a", corrects="o-3", customer_category="research", input_tokens=-1),
            record("o-3-b", corrects="o-3", input_tokens=-1, output_tokens=0, revenue="0"),
            record("o-3-c", corrects="o-3-b", input_tokens=-1, output_tokens=0, revenue="0"),
        ]
    ).json()

    # then the mismatch names the field, the correction of a correction is not found
    errors = {r["index"]: r["errors"] for r in body["results"]}
    assert errors[0]["customer_category"][0].startswith("correction_mismatch: ")
    assert 1 not in errors
    assert errors[2]["corrects"][0].startswith("correction_not_found: ")


@pytest.mark.django_db(transaction=True)
def test_it_lets_only_one_of_two_concurrent_corrections_pass(catalog: Any, host: Any) -> None:
    # given an original of 1000 input tokens
    usage_batch_ingest(host=host, records=[record("o-4")])
    barrier = threading.Barrier(2)
    results: list[Any] = []

    def correct(event_id: str) -> None:
        try:
            barrier.wait()
            results.append(
                usage_batch_ingest(
                    host=host,
                    records=[
                        record(
                            event_id,
                            corrects="o-4",
                            input_tokens=-1000,
                            output_tokens=0,
                            revenue="0",
                        )
                    ],
                )
            )
        finally:
            connection.close()

    # when two clients each take all 1000 tokens off at the same moment
    threads = [threading.Thread(target=correct, args=(f"o-4-{n}",)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    # then exactly one passes (the original's claim row is locked FOR UPDATE) and the net is 0
    assert sorted(r.accepted for r in results) == [0, 1]
    assert _net("o-4")["tokens"] == 0


def test_it_accepts_usage_of_a_closed_period_marked_late(
    catalog: Any, host: Any, post: Any
) -> None:
    # given a record before billing closed the month, then the close
    model = catalog["model"]
    licensor = model.license.licensor
    post([record("before-close")])
    period_close(host=host, licensor=licensor, period=f"{AT:%Y-%m}")
    period_close(host=host, licensor=licensor, period=f"{AT:%Y-%m}")  # idempotent

    # when more usage of that month arrives, and usage of another licensor's model
    body = post(
        [record("after-close"), record("eur-after", model="euromodel", currency="EUR")]
    ).json()

    # then it is accepted and only the closed licensor's record is late
    assert (body["accepted"], body["late"]) == (2, 1)
    assert not UsageRecord.objects.get(event_id="before-close").late
    assert UsageRecord.objects.get(event_id="after-close").late
    assert not UsageRecord.objects.get(event_id="eur-after").late
    assert PeriodClose.objects.count() == 1
