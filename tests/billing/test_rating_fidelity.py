"""The rating rules of docs/rating.md through the REST API and a billing run: one line per model,
category and version rounded once; unlicensed usage never drives a minimum or a cap; flat fees of
the latest version only; the settlement's flags in its JSON and CSV; and a month settled under
edition 1 of the rules, which later runs and --verify leave as it was."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

from django.db import connection
from rest_framework.test import APIClient

from billing import aggregation
from billing.aggregation import UsageFilter
from billing.models import Settlement, SettlementLine
from billing.rerating import CatalogSnapshot, pair_period_rate
from billing.review import settlement_approve
from licensing.models import Host, Licensor
from tests.billing.conftest import post_usage, record, run_billing, settlement_of

MODEL = "acme-1"
COMMERCIAL_10 = {"match": {"customer_category": ["commercial"]},
                 "charge": {"type": "revenue_share", "percent": "10"}}
CN_10 = {"match": {"customer_category": ["commercial"], "region_in": ["CN"]},
         "charge": {"type": "revenue_share", "percent": "10"}}
RESEARCH_FREE = {"match": {"customer_category": ["research"]}, "charge": {"type": "free"}}


def version(label: str, rules: list[dict[str, Any]], *, minimum: str | None = None,
            cap: str | None = None) -> dict[str, Any]:
    return {"version": label, "effective_from": f"{label}T00:00:00Z", "currency": "USD",
            "rules": rules, "minimum_per_month": minimum, "cap_per_month": cap}


def catalog(*versions: dict[str, Any]) -> dict[str, Any]:
    return {
        "licensors": [{"slug": "acme", "name": "Acme", "email": "billing@acme.example"}],
        "hosts": [{"slug": "fireworks", "name": "Fireworks", "currency": "USD"}],
        "licenses": [{"slug": "acme-l", "licensor": "acme", "name": "Acme License",
                      "versions": list(versions)}],
        "models": [{"slug": MODEL, "licensor": "acme", "license": "acme-l"}],
    }


def use(rec: dict[str, Any]) -> dict[str, Any]:
    return {**rec, "model": MODEL}


def billed(
    import_catalog: Callable[[dict[str, Any]], None],
    client_for: Callable[..., APIClient],
    data: dict[str, Any],
    records: list[dict[str, Any]],
) -> tuple[Settlement, dict[str, Any], APIClient]:
    """Import, post the records as the host, bill October; the settlement and its JSON as the
    licensor reads it."""
    import_catalog(data)
    post_usage(client_for(host=Host.objects.get(slug="fireworks")), [use(r) for r in records])
    run_billing("2026-10")
    settlement = settlement_of(licensor="acme", host="fireworks", period="2026-10")
    licensor = client_for(licensor=Licensor.objects.get(slug="acme"))
    response = licensor.get(f"/api/v1/settlements/{settlement.pk}")
    assert response.status_code == 200
    return settlement, response.json(), licensor


def lines(body: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    return [(li["kind"], li["license_version"], li["amount"], li["description"])
            for li in body["lines"]]


def test_two_rules_of_a_version_make_one_line_rounded_once(import_catalog, client_for) -> None:
    _, body, _ = billed(import_catalog, client_for, catalog(version("2026-01-01", [
        CN_10, COMMERCIAL_10])), [
        record("cn", revenue="0.05", region="CN"), record("us", revenue="0.05", region="US")])
    assert lines(body) == [("usage", "2026-01-01", "0.01", "10% of net revenue")]
    assert body["lines"][0]["revenue"] == "0.10"
    assert body["total"] == "0.01"
    assert body["flags"] == []


def test_case_a_unlicensed_usage_of_a_later_version_keeps_the_earlier_minimum(
    import_catalog, client_for
) -> None:
    settlement, body, licensor = billed(import_catalog, client_for, catalog(
        version("2026-01-01", [COMMERCIAL_10], minimum="1000"),
        version("2026-10-15", [RESEARCH_FREE]),
    ), [record("d5", revenue="100", at="2026-10-05T10:00:00Z"),
        record("d20", revenue="100", at="2026-10-20T10:00:00Z")])
    assert lines(body) == [
        ("usage", "2026-01-01", "10.00", "10% of net revenue"),
        ("minimum_true_up", "2026-01-01", "990.00", "minimum guarantee true-up"),
    ]
    assert body["total"] == "1000.00"
    assert body["flags"] == [{
        "kind": "unlicensed", "model": MODEL, "customer_category": "commercial",
        "record_count": 1, "message": "no rule of 2026-10-15 matches this usage; billed nothing",
    }]
    # and the CSV statement carries the flag after the lines
    rows = licensor.get(f"/api/v1/settlements/{settlement.pk}/statement.csv").content.decode()
    flag_row = rows.splitlines()[-1].split(",")
    # (position, line id and kind are empty: a flag is no line)
    assert flag_row[6:13] == ["", "", "", MODEL, "commercial", "2026-10", "2026-10-15"]
    assert flag_row[-2:] == [
        "no rule of 2026-10-15 matches this usage; billed nothing (1 records)", "unlicensed"]


def test_case_b_unlicensed_usage_alone_triggers_no_minimum(import_catalog, client_for) -> None:
    _, body, _ = billed(import_catalog, client_for, catalog(
        version("2026-01-01", [RESEARCH_FREE], minimum="500"),
    ), [record("c1", revenue="100")])
    assert body["lines"] == []
    assert body["total"] == "0.00"
    assert [(f["kind"], f["record_count"]) for f in body["flags"]] == [("unlicensed", 1)]


def test_unlicensed_usage_of_a_later_version_does_not_apply_its_cap(
    import_catalog, client_for
) -> None:
    _, body, _ = billed(import_catalog, client_for, catalog(
        version("2026-01-01", [COMMERCIAL_10], cap="1000"),
        version("2026-10-15", [RESEARCH_FREE], cap="5"),
    ), [record("d5", revenue="100", at="2026-10-05T10:00:00Z"),
        record("d20", revenue="100", at="2026-10-20T10:00:00Z")])
    assert lines(body) == [("usage", "2026-01-01", "10.00", "10% of net revenue")]
    assert body["total"] == "10.00"


def test_flat_fees_of_the_latest_version_only(import_catalog, client_for) -> None:
    def flat(amount: str) -> dict[str, Any]:
        return {"match": {"customer_category": ["commercial"]},
                "charge": {"type": "flat", "amount": amount}}

    _, body, _ = billed(import_catalog, client_for, catalog(
        version("2026-01-01", [flat("5000")]), version("2026-10-15", [flat("3000")]),
    ), [record("d5", revenue="100", at="2026-10-05T10:00:00Z"),
        record("d20", revenue="100", at="2026-10-20T10:00:00Z")])
    assert lines(body) == [
        ("usage", "2026-01-01", "0.00", "included in flat monthly fee"),
        ("usage", "2026-10-15", "0.00", "included in flat monthly fee"),
        ("flat_fee", "2026-10-15", "3000.00", "flat monthly fee"),
    ]
    assert body["total"] == "3000.00"


# --- a month settled under edition 1 -------------------------------------------------------------


def as_written_by_edition_1(draft: Settlement) -> None:
    """Rewrite a draft the way the billing run wrote it before edition 2 (what a database
    settled before then holds): its lines and total from edition 1 of the rules."""
    rows = aggregation.aggregate_groups(
        draft.period, UsageFilter(host_id=draft.host_id, licensor_id=draft.licensor_id,
                                  received_until=draft.computed_at))
    bundle = pair_period_rate(draft.period, rows, CatalogSnapshot.load(), edition=1)["USD"]
    draft.lines.all().delete()
    SettlementLine.objects.bulk_create([
        SettlementLine(settlement=draft, position=n, license_id=license_id, kind=line.kind,
                       model=line.model, customer_category=line.customer_category,
                       period=line.period, license_version=line.license_version,
                       input_tokens=line.input_tokens,
                       cached_input_tokens=line.cached_input_tokens,
                       output_tokens=line.output_tokens, requests=line.requests,
                       revenue=line.revenue, amount=line.amount, description=line.description,
                       flags=flags)
        for n, (license_id, line, flags) in enumerate(bundle.lines, start=1)])
    Settlement.objects.filter(pk=draft.pk).update(
        total=sum((line.amount for _, line, _ in bundle.lines), Decimal(0)))


def test_a_month_settled_under_edition_1_gets_no_adjustment_from_the_new_rules(
    import_catalog, client_for
) -> None:
    # given: October billed and approved under edition 1: two lines of 0.01 (rounded per rule)
    # and no minimum (the unlicensed record of the 20th made 2026-10-15 "the last version")
    october, _, _ = billed(import_catalog, client_for, catalog(
        version("2026-01-01", [CN_10, COMMERCIAL_10], minimum="1000"),
        version("2026-10-15", [RESEARCH_FREE]),
    ), [record("cn", revenue="0.05", region="CN", at="2026-10-05T10:00:00Z"),
        record("us", revenue="0.05", region="US", at="2026-10-06T10:00:00Z"),
        record("d20", revenue="100", at="2026-10-20T10:00:00Z")])
    assert october.total == Decimal("1000.00")  # what edition 2 bills
    as_written_by_edition_1(october)
    settlement_approve(settlement=Settlement.objects.get(pk=october.pk), actor="test")
    october.refresh_from_db()
    assert (october.status, october.total) == ("approved", Decimal("0.02"))
    assert "all match" in run_billing("2026-10", "--verify")

    # when: November has nothing of its own, and nothing arrived late
    run_billing("2026-11")
    # then: no settlement at all (the change of rules is not billed)
    assert not Settlement.objects.filter(period="2026-11").exists()

    # when: a late October record of $300.00 from CN
    host = Host.objects.get(slug="fireworks")
    post_usage(client_for(host=host), [use(record("late", revenue="300.00", region="CN",
                                                  at="2026-10-10T10:00:00Z"))])
    run_billing("2026-11")

    # then: November adjusts for that record alone, as edition 2 rates October with and
    # without it: +30.00 of usage, and the true-up 30.00 smaller (never the 999.98 that
    # comparing edition 2 with the stored lines would bill)
    november = settlement_of(licensor="acme", host="fireworks", period="2026-11")
    assert sorted((li.kind, li.model, li.revenue, li.amount) for li in november.lines.all()) == [
        ("adjustment", "", Decimal("0"), Decimal("-30.00")),
        ("adjustment", MODEL, Decimal("300.00"), Decimal("30.00")),
    ]
    assert november.total == Decimal("0.00")
    settlement_approve(settlement=november, actor="test")
    assert "all match" in run_billing("2026-11", "--verify")
    assert "all match" in run_billing("2026-10", "--verify")
    # and December bills nothing more for October
    run_billing("2026-12")
    assert not Settlement.objects.filter(period="2026-12").exists()
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM billing_settlementline WHERE period = '2026-10'")
        assert cursor.fetchone() == (4,)  # October's two lines, November's two adjustments


def test_adjustments_written_under_edition_1_verify_and_later_runs_build_on_them(
    import_catalog, client_for
) -> None:
    # given: October billed under edition 1 ($0.02), then its late CN record of $300.00 billed in
    # November as edition 1's code did: 10 % of 300.05 -> 30.01, + 0.01 for the US part, no
    # minimum (2026-10-15 "last"), less the 0.02 billed: one adjustment of $30.00
    october, _, _ = billed(import_catalog, client_for, catalog(
        version("2026-01-01", [CN_10, COMMERCIAL_10], minimum="1000"),
        version("2026-10-15", [RESEARCH_FREE]),
    ), [record("cn", revenue="0.05", region="CN", at="2026-10-05T10:00:00Z"),
        record("us", revenue="0.05", region="US", at="2026-10-06T10:00:00Z"),
        record("d20", revenue="100", at="2026-10-20T10:00:00Z")])
    as_written_by_edition_1(october)
    settlement_approve(settlement=Settlement.objects.get(pk=october.pk), actor="test")
    host_client = client_for(host=Host.objects.get(slug="fireworks"))
    post_usage(host_client, [use(record("late", revenue="300.00", region="CN",
                                        at="2026-10-10T10:00:00Z"))])
    run_billing("2026-11")
    november = settlement_of(licensor="acme", host="fireworks", period="2026-11")
    license_id = november.lines.first().license_id  # type: ignore[union-attr]
    november.lines.all().delete()
    SettlementLine.objects.create(
        settlement=november, position=1, license_id=license_id, kind="adjustment", model=MODEL,
        customer_category="commercial", period="2026-10", license_version="2026-01-01",
        requests=1, revenue=Decimal("300.00"), amount=Decimal("30.00"),
        description="adjustment for 2026-10")
    Settlement.objects.filter(pk=november.pk).update(total=Decimal("30.00"))
    settlement_approve(settlement=Settlement.objects.get(pk=november.pk), actor="test")

    # then: both verify
    assert "all match" in run_billing("2026-10", "--verify")
    assert "all match" in run_billing("2026-11", "--verify")

    # when: another late October record, $0.30 from the US
    post_usage(host_client, [use(record("later", revenue="0.30", region="US",
                                        at="2026-10-11T10:00:00Z"))])
    run_billing("2026-12")

    # then: December adjusts by what that record changes under edition 2: the line
    # 30.01 -> 30.04 (10 % of 300.40) and the true-up 969.99 -> 969.96
    december = settlement_of(licensor="acme", host="fireworks", period="2026-12")
    assert sorted((li.model, li.revenue, li.amount) for li in december.lines.all()) == [
        ("", Decimal("0"), Decimal("-0.03")),
        (MODEL, Decimal("0.30"), Decimal("0.03")),
    ]
    settlement_approve(settlement=december, actor="test")
    assert "all match" in run_billing("2026-12", "--verify")
    run_billing("2027-01")
    assert not Settlement.objects.filter(period="2027-01").exists()
