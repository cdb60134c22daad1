"""The SQL aggregation (billing/aggregation.py) against the rating engine's reference grouping,
and the worked examples 2-4 of docs/rating.md through the whole run: per-token with a minimum, a
version change mid-month resolved in SQL, and a calendar-year threshold counted across months."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from rest_framework.test import APIClient

from billing.aggregation import UsageFilter, aggregate_groups, terms_from_row
from billing.rerating import usage_group_from_row
from licensing.catalog import catalog_import
from licensing.models import Agreement, Host, LicenseVersion
from licensing.rating import UsageRecord, WindowState, rate, rate_records, terms_in_force
from tests.billing.conftest import post_usage, record, run_billing, settlement_of


def catalog(versions: list[dict[str, Any]], *, license_slug: str = "tl") -> dict[str, Any]:
    return {
        "licensors": [{"slug": "falcon", "name": "Falcon"}],
        "hosts": [{"slug": "hoster", "name": "Hoster", "currency": "USD"}],
        "licenses": [
            {"slug": license_slug, "licensor": "falcon", "name": "TL", "versions": versions}
        ],
        "models": [{"slug": "falcon-40b", "licensor": "falcon", "license": license_slug}],
    }


def version(
    label: str, effective_from: str, rules: list[dict[str, Any]], **extra: Any
) -> dict[str, Any]:
    return {
        "version": label,
        "effective_from": effective_from,
        "currency": "USD",
        "rules": rules,
        **extra,
    }


SHARE_12 = [{"charge": {"type": "revenue_share", "percent": "12"}}]


def test_it_bills_example_2_per_token_with_a_minimum(
    db: None, client_for: Callable[..., APIClient]
) -> None:
    # given: $0.03 / $0.005 / $0.12 per million, $10,000 minimum; 90B / 30B / 40B tokens
    rates = {"input": "0.03", "cached_input": "0.005", "output": "0.12"}
    catalog_import(
        catalog(
            [
                version(
                    "v1",
                    "2026-01-01T00:00:00Z",
                    [{"charge": {"type": "per_token", "per_million": rates}}],
                    minimum_per_month="10000.00",
                )
            ]
        )
    )
    client = client_for(host=Host.objects.get(slug="hoster"))
    post_usage(
        client,
        [
            record(
                f"t-{i}",
                model="falcon-40b",
                input_tokens=30 * 10**9,
                cached_input_tokens=10 * 10**9,
                output_tokens=40 * 10**9 // 3 + (1 if i == 0 else 0) * (40 * 10**9 % 3),
                at=f"2026-10-0{i + 1}T00:00:00Z",
            )
            for i in range(3)
        ],
    )

    # when
    run_billing("2026-10")

    # then
    settlement = settlement_of(licensor="falcon", host="hoster", period="2026-10")
    assert [(li.kind, li.amount) for li in settlement.lines.all()] == [
        ("usage", Decimal("7650.00")),
        ("minimum_true_up", Decimal("2350.00")),
    ]
    assert settlement.total == Decimal("10000.00")


def test_it_bills_example_3_a_version_change_mid_month_by_occurred_at(
    db: None, client_for: Callable[..., APIClient]
) -> None:
    # given: free until the 15th 00:00 UTC, then 12%
    catalog_import(
        catalog(
            [
                version("free", "2026-01-01T00:00:00Z", [{"charge": {"type": "free"}}]),
                version("paid", "2026-10-15T00:00:00Z", SHARE_12),
            ]
        )
    )
    client = client_for(host=Host.objects.get(slug="hoster"))
    post_usage(
        client,
        [
            record("before", model="falcon-40b", revenue="9999.00", at="2026-10-14T23:59:59Z"),
            record("after-1", model="falcon-40b", revenue="41000.00", at="2026-10-15T00:00:00Z"),
            record("after-2", model="falcon-40b", revenue="400.00", at="2026-10-31T12:00:00Z"),
        ],
    )

    # when
    run_billing("2026-10")

    # then
    settlement = settlement_of(licensor="falcon", host="hoster", period="2026-10")
    assert [(li.license_version, li.revenue, li.amount) for li in settlement.lines.all()] == [
        ("free", Decimal("9999.00"), Decimal("0.00")),
        ("paid", Decimal("41400.00"), Decimal("4968.00")),
    ]


def test_it_bills_example_4_a_calendar_year_threshold_across_months(
    db: None, client_for: Callable[..., APIClient]
) -> None:
    # given: 10% above $1,000,000 of calendar-year revenue; $950,000 through July
    above = {"metric": "revenue", "window": "calendar_year", "amount": "1000000"}
    catalog_import(
        catalog(
            [
                version(
                    "falcon-1.0",
                    "2026-01-01T00:00:00Z",
                    [{"charge": {"type": "revenue_share", "percent": "10", "above": above}}],
                )
            ]
        )
    )
    client = client_for(host=Host.objects.get(slug="hoster"))
    post_usage(
        client,
        [
            record(f"h1-{m}", model="falcon-40b", revenue="135000.00", at=f"2026-0{m}-10T00:00:00Z")
            for m in range(1, 8)
        ]
        + [record("h1-jul", model="falcon-40b", revenue="5000.00", at="2026-07-31T00:00:00Z")],
    )
    post_usage(
        client,
        [
            record("aug-1", model="falcon-40b", revenue="30000.00", at="2026-08-03T00:00:00Z"),
            record("aug-2", model="falcon-40b", revenue="100000.00", at="2026-08-10T00:00:00Z"),
            record("aug-3", model="falcon-40b", revenue="50000.00", at="2026-08-20T00:00:00Z"),
            record("sep-1", model="falcon-40b", revenue="160000.00", at="2026-09-05T00:00:00Z"),
        ],
    )

    # when
    run_billing("2026-08")
    run_billing("2026-09")

    # then
    assert settlement_of(licensor="falcon", host="hoster", period="2026-08").total == Decimal(
        "13000.00"
    )
    assert settlement_of(licensor="falcon", host="hoster", period="2026-09").total == Decimal(
        "16000.00"
    )


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_it_groups_threshold_usage_like_the_reference_grouping(
    seed: int, db: None, client_for: Callable[..., APIClient]
) -> None:
    # given: thresholds on monthly revenue and on tokens, a version change mid-month, and
    # records with corrections, in random order and with tied timestamps
    rng = random.Random(seed)
    rules: list[dict[str, Any]] = [
        {
            "match": {"customer_category": ["commercial"]},
            "charge": {
                "type": "revenue_share",
                "percent": "10",
                "above": {"metric": "revenue", "window": "month", "amount": "5000"},
            },
        },
        {
            "charge": {
                "type": "per_token",
                "per_million": {"input": "1", "output": "2"},
                "above": {"metric": "tokens", "window": "month", "amount": "3000000"},
            }
        },
    ]
    catalog_import(
        catalog(
            [
                version("v1", "2026-01-01T00:00:00Z", rules),
                version("v2", "2026-10-16T00:00:00Z", [*rules[:1], {"charge": {"type": "free"}}]),
            ]
        )
    )
    host = Host.objects.get(slug="hoster")
    start = datetime(2026, 10, 1, tzinfo=UTC)
    records = []
    for i in range(80):
        at = start + timedelta(hours=rng.randrange(0, 30 * 24, 7))
        records.append(
            record(
                f"e{rng.randrange(10**6):06d}-{i}",
                model="falcon-40b",
                category=rng.choice(["commercial", "individual", "research"]),
                revenue=f"{rng.randrange(0, 40000) / 100:.2f}",
                input_tokens=rng.randrange(0, 200_000),
                output_tokens=rng.randrange(0, 100_000),
                region=rng.choice(["US", "DE"]),
                at=at.isoformat().replace("+00:00", "Z"),
            )
        )
    corrections = [
        {
            **r,
            "event_id": f"fix-{n}",
            "corrects": r["event_id"],
            "revenue": "-1.00",
            "input_tokens": 0,
            "output_tokens": 0,
            "requests": 0,
        }
        for n, r in enumerate(records[:5])
        if Decimal(r["revenue"]) >= 1
    ]
    client = client_for(host=host)
    post_usage(client, records)
    post_usage(client, corrections)

    # when: the SQL groups are rated, and the reference grouping of the same records is rated
    rows = aggregate_groups("2026-10", UsageFilter(host_id=host.pk))
    terms = [terms_from_row(v) for v in LicenseVersion.objects.all()]
    by_sql = rate(
        period="2026-10",
        terms=terms,
        usage=[usage_group_from_row(r) for r in rows],
        window_state=WindowState(2026),
    )
    net: dict[str, dict[str, Any]] = {r["event_id"]: dict(r) for r in records}
    for c in corrections:
        net[c["corrects"]]["revenue"] = str(Decimal(net[c["corrects"]]["revenue"]) - 1)
    reference = rate_records(
        period="2026-10",
        terms=terms,
        records=[
            UsageRecord(
                event_id=r["event_id"],
                occurred_at=datetime.fromisoformat(r["occurred_at"]),
                model="falcon-40b",
                customer_category=r["customer_category"],
                terms_label="v2" if r["occurred_at"] >= "2026-10-16" else "v1",
                region=r["region"],
                input_tokens=r["input_tokens"],
                output_tokens=r["output_tokens"],
                requests=1,
                revenue=Decimal(r["revenue"]),
            )
            for r in net.values()
        ],
        window_state=WindowState(2026),
    )

    # then: the same lines, total and even the same usage digest (the same groups)
    assert by_sql.lines == reference.lines
    assert by_sql.total == reference.total
    assert by_sql.usage_digest == reference.usage_digest


def test_it_labels_every_group_with_the_terms_in_force_of_the_rating_engine(
    db: None, client_for: Callable[..., APIClient]
) -> None:
    # given: a version change on the 16th for everyone, and an agreement of one host only from
    # the 20th; records of both hosts on either side of each change
    data = catalog(
        [
            version("v1", "2026-01-01T00:00:00Z", SHARE_12),
            version("v2", "2026-10-16T00:00:00Z", SHARE_12),
        ]
    )
    data["hosts"].append({"slug": "other", "name": "Other", "currency": "USD"})
    data["agreements"] = [
        {
            "host": "hoster",
            "license": "tl",
            "version": "ag",
            "effective_from": "2026-10-20T00:00:00Z",
            "currency": "USD",
            "rules": SHARE_12,
        }
    ]
    catalog_import(data)
    instants = [
        "2026-10-01T00:00:00Z",
        "2026-10-15T23:59:59Z",
        "2026-10-16T00:00:00Z",
        "2026-10-19T23:59:59Z",
        "2026-10-20T00:00:00Z",
        "2026-10-31T23:59:59Z",
    ]
    expected: dict[tuple[str, str], Decimal] = {}
    versions = list(LicenseVersion.objects.all())
    for slug in ("hoster", "other"):
        host = Host.objects.get(slug=slug)
        revenues = [Decimal(10**n) for n in range(len(instants))]
        post_usage(
            client_for(host=host),
            [
                record(f"{slug}-{n}", model="falcon-40b", revenue=str(rev), at=at)
                for n, (at, rev) in enumerate(zip(instants, revenues, strict=True))
            ],
        )
        for at, rev in zip(instants, revenues, strict=True):
            terms = terms_in_force(
                versions,
                list(Agreement.objects.filter(host=host)),
                datetime.fromisoformat(at),
            )
            assert terms is not None
            key = (slug, terms.label)
            expected[key] = expected.get(key, Decimal(0)) + rev

    # when
    rows = aggregate_groups("2026-10", UsageFilter())

    # then: the SQL put every record under the terms licensing.rating.terms_in_force chose
    slugs = dict(Host.objects.values_list("id", "slug"))
    got: dict[tuple[str, str], Decimal] = {}
    for row in rows:
        key = (slugs[row["host_id"]], row["terms_label"])
        got[key] = got.get(key, Decimal(0)) + row["revenue"]
    assert got == expected
    assert got == {
        ("hoster", "v1"): Decimal("11"),
        ("hoster", "v2"): Decimal("1100"),
        ("hoster", "ag"): Decimal("110000"),
        ("other", "v1"): Decimal("11"),
        ("other", "v2"): Decimal("111100"),
    }
