"""Each primitive of docs/rating.md, one behaviour per test."""

from datetime import datetime
from decimal import Decimal

import pytest

from licensing.rating import (
    Threshold,
    UsageGroup,
    UsageRecord,
    WindowState,
    group_records,
    position_class,
    rate,
    rate_records,
    terms_in_force,
    threshold_points,
)
from tests.rating.helpers import SHARE_12, at, record, terms

Y = WindowState(2026)
M = "minimax-m2.7"


def group(label: str | None = "v1", **kw: object) -> UsageGroup:
    values: dict[str, object] = {"model": M, "customer_category": "commercial",
                                 "terms_label": label}
    values.update(kw)
    return UsageGroup(**values)  # type: ignore[arg-type]


def amounts(result: object) -> list[tuple[str, str, Decimal]]:
    return [(line.kind, line.description, line.amount) for line in result.lines]  # type: ignore[attr-defined]


def test_the_first_matching_rule_wins() -> None:
    v1 = terms("v1", [
        {"match": {"region_in": ["CN"]}, "charge": {"type": "revenue_share", "percent": "5"}},
        {"charge": {"type": "revenue_share", "percent": "12"}},
    ])
    result = rate(period="2026-10", terms=[v1], window_state=Y, usage=[
        group(region="CN", revenue=Decimal(100)), group(region="US", revenue=Decimal(100)),
    ])
    # CN at 5 % (not also 12 %), US at 12 %: one line of the model and category, 5 + 12
    assert [(line.amount, line.description) for line in result.lines] == [
        (Decimal("17.00"), "5% of net revenue; 12% of net revenue")
    ]


def test_a_record_without_region_fits_no_region_in_and_every_region_not_in() -> None:
    v1 = terms("v1", [
        {"match": {"region_in": ["US"]}, "charge": {"type": "revenue_share", "percent": "1"}},
        {"match": {"region_not_in": ["US"]}, "charge": {"type": "revenue_share", "percent": "2"}},
    ])
    result = rate(period="2026-10", terms=[v1], window_state=Y,
                  usage=[group(region=None, revenue=Decimal(100))])
    assert result.lines[0].amount == Decimal("2.00")


def test_regions_of_one_rule_merge_into_one_settlement_line() -> None:
    v1 = terms("v1", SHARE_12)
    result = rate(period="2026-10", terms=[v1], window_state=Y, usage=[
        group(region="DE", revenue=Decimal("0.04")), group(region="FR", revenue=Decimal("0.04")),
        group(region=None, revenue=Decimal("0.04")),
    ])
    # one line: 12% of 0.12 = 0.0144 -> 0.01, not three lines of 0.0048 -> 0.00
    assert [(line.revenue, line.amount) for line in result.lines] == [
        (Decimal("0.12"), Decimal("0.01"))
    ]


def test_usage_no_rule_matches_is_billed_nothing_and_flagged() -> None:
    v1 = terms("v1", [{"match": {"customer_category": ["individual"]},
                       "charge": {"type": "free"}}])
    result = rate(period="2026-10", terms=[v1], window_state=Y, usage=[
        group(revenue=Decimal(500), record_count=3, input_tokens=7),
        group(label=None, revenue=Decimal(1)),
    ])
    assert result.lines == ()
    assert result.total == Decimal(0)
    assert [(f.kind, f.license_version, f.record_count, f.revenue, f.tokens)
            for f in result.flags] == [
        ("unlicensed", None, 1, Decimal(1), 0),
        ("unlicensed", "v1", 3, Decimal(500), 7),
    ]


def test_free_is_zero_and_says_so() -> None:
    v1 = terms("v1", SHARE_12)
    result = rate(period="2026-10", terms=[v1], window_state=Y,
                  usage=[group(customer_category="research", revenue=Decimal(10**9))])
    assert amounts(result) == [("usage", "free", Decimal("0.00"))]


def test_flat_is_charged_once_per_month_with_matching_usage() -> None:
    rules = [{"match": {"customer_category": ["commercial"]},
              "charge": {"type": "flat", "amount": "5000.00"}}]
    v1 = terms("v1", rules)
    v2 = terms("v2", rules, effective_from="2026-10-15")  # republished, same flat rule
    result = rate(period="2026-10", terms=[v1, v2], window_state=Y, usage=[
        group("v1", revenue=Decimal(1)), group("v1", model="other", revenue=Decimal(1)),
        group("v2", revenue=Decimal(1)),
    ])
    assert [(line.kind, line.license_version, line.amount) for line in result.lines] == [
        ("usage", "v1", Decimal("0.00")), ("usage", "v1", Decimal("0.00")),
        ("usage", "v2", Decimal("0.00")), ("flat_fee", "v2", Decimal("5000.00")),
    ]
    assert result.lines[-1].description == "flat monthly fee"
    assert result.total == Decimal("5000.00")
    # no matching usage, no fee
    nothing = rate(period="2026-10", terms=[v1], window_state=Y,
                   usage=[group("v1", customer_category="individual")])
    assert nothing.lines == ()


def test_greater_of_is_compared_per_settlement_line() -> None:
    v1 = terms("v1", [{"charge": {"type": "greater_of", "of": [
        {"type": "revenue_share", "percent": "10"},
        {"type": "per_token", "per_million": {"output": "1"}},
    ]}}])
    result = rate(period="2026-10", terms=[v1], window_state=Y, usage=[
        # line A: share 100 vs tokens 50 -> 100 (two groups of one line, compared on their sum)
        group(model="a", revenue=Decimal(600), output_tokens=40 * 10**6),
        group(model="a", revenue=Decimal(400), output_tokens=10 * 10**6, region="US"),
        # line B: share 1 vs tokens 30 -> 30
        group(model="b", revenue=Decimal(10), output_tokens=30 * 10**6),
    ])
    assert [(line.model, line.amount) for line in result.lines] == [
        ("a", Decimal("100.00")), ("b", Decimal("30.00")),
    ]
    assert result.lines[0].description == (
        "greater of 10% of net revenue and $1 per 1M output tokens"
    )


def test_minimum_and_cap_use_the_last_version_that_rated_usage() -> None:
    v1 = terms("v1", SHARE_12, minimum="100")
    v2 = terms("v2", SHARE_12, effective_from="2026-10-15", minimum="1000", cap="5000")
    small = rate(period="2026-10", terms=[v1, v2], window_state=Y, usage=[
        group("v1", revenue=Decimal(100)), group("v2", revenue=Decimal(100)),
    ])
    assert amounts(small)[-1] == ("minimum_true_up", "minimum guarantee true-up",
                                  Decimal("976.00"))
    assert small.lines[-1].license_version == "v2"
    assert small.total == Decimal("1000.00")
    # only v1 rated usage this month: v1's minimum applies
    only_v1 = rate(period="2026-10", terms=[v1, v2], window_state=Y,
                   usage=[group("v1", revenue=Decimal(100))])
    assert only_v1.total == Decimal("100.00")
    big = rate(period="2026-10", terms=[v1, v2], window_state=Y,
               usage=[group("v2", revenue=Decimal(100000))])
    assert amounts(big)[-1] == ("cap_credit", "cap credit", Decimal("-7000.00"))
    assert big.total == Decimal("5000.00")


def test_no_usage_means_no_minimum() -> None:
    v1 = terms("v1", SHARE_12, minimum="10000")
    result = rate(period="2026-10", terms=[v1], window_state=Y, usage=[])
    assert result.lines == () and result.total == Decimal(0) and result.currency is None


def test_an_agreement_in_force_replaces_the_public_version() -> None:
    v1 = terms("2026-04-11", SHARE_12, effective_from="2026-04-11")
    v2 = terms("2026-04-15", SHARE_12, effective_from="2026-04-15")
    fw = terms("fw-2026-06", SHARE_12, kind="agreement", effective_from="2026-06-01")
    assert terms_in_force([v1, v2], [fw], at("2026-04-10")) is None
    assert terms_in_force([v1, v2], [fw], at("2026-04-14T23:59")) == v1
    assert terms_in_force([v1, v2], [fw], at("2026-04-15")) == v2
    assert terms_in_force([v2, v1], [fw], at("2026-06-01")) == fw
    assert terms_in_force([v1, v2], [], at("2026-06-01")) == v2
    with pytest.raises(ValueError, match="aware"):
        terms_in_force([v1], [], datetime(2026, 6, 1))  # noqa: DTZ001


def test_a_record_crossing_a_token_threshold_is_charged_the_fraction_beyond() -> None:
    v1 = terms("v1", [{"charge": {"type": "per_token", "per_million": {
        "input": "1", "output": "3"}, "above": {"metric": "tokens", "window": "month",
                                                "amount": "1000000"}}}])
    records = [
        record("a", "2026-10-01", "v1", input_tokens=600_000),
        # crosses: 400,000 of its 1,000,000 tokens are below, 600,000 (60 %) beyond
        record("b", "2026-10-02", "v1", input_tokens=500_000, output_tokens=500_000),
        record("c", "2026-10-03", "v1", input_tokens=1_000_000),
    ]
    result = rate_records(period="2026-10", terms=[v1], records=records, window_state=Y)
    # b: 0.6 * (0.5 + 1.5) = 1.2; c: 1.0
    assert result.total == Decimal("2.20")
    assert result.lines[0].description == (
        "$1 / $3 per 1M input / output tokens above 1,000,000 tokens per month"
    )


def test_thresholds_count_all_usage_under_the_license_in_event_time_order() -> None:
    # the free research usage and the other model fill the threshold first
    v1 = terms("v1", [
        {"match": {"customer_category": ["research"]}, "charge": {"type": "free"}},
        {"charge": {"type": "revenue_share", "percent": "10",
                    "above": {"metric": "revenue", "window": "month", "amount": "1000"}}},
    ])
    records = [
        record("r", "2026-10-01", "v1", category="research", revenue="700"),
        record("o", "2026-10-02", "v1", model="other", revenue="200"),
        record("x", "2026-10-03", "v1", revenue="300"),  # 100 below, 200 beyond
        record("w", "2026-10-03", "v1", revenue="50"),  # same instant, "w" < "x": before it
    ]
    result = rate_records(period="2026-10", terms=[v1], records=records, window_state=Y)
    by_model = {line.model: line.amount for line in result.lines if line.customer_category
                == "commercial"}
    # w at 900..950 below; x at 950..1250: 250 beyond -> 25.00
    assert by_model == {M: Decimal("25.00"), "other": Decimal("0.00")}


def test_group_records_keeps_multi_record_groups_on_one_side_of_each_threshold() -> None:
    v1 = terms("v1", [{"charge": {"type": "revenue_share", "percent": "10", "above": {
        "metric": "revenue", "window": "calendar_year", "amount": "1000"}}}])
    records = [record(f"e{i:02}", f"2026-10-{i + 1:02}", "v1", revenue="300") for i in range(8)]
    groups = group_records(records, period="2026-10", window_state=WindowState(2026, Decimal(0)),
                           terms=[v1])
    assert sorted((g.record_count, g.revenue_before) for g in groups) == [
        (1, Decimal(900)), (3, Decimal(0)), (4, Decimal(1200)),
    ]
    assert threshold_points([v1]) == {Threshold("revenue", "calendar_year", Decimal(1000))}
    assert position_class(Decimal(900), Decimal(300), Decimal(1000)) == "crossing"
    assert position_class(Decimal(700), Decimal(300), Decimal(1000)) == "below"
    assert position_class(Decimal(1000), Decimal(0), Decimal(1000)) == "above"


def test_group_records_refuses_records_of_another_month() -> None:
    with pytest.raises(ValueError, match="2026-11"):
        group_records([record("a", "2026-11-01", "v1")], period="2026-10", window_state=Y,
                      terms=[])


def test_currencies_round_to_their_own_minor_unit_and_symbol() -> None:
    yen = terms("v1", [{"charge": {"type": "revenue_share", "percent": "12.5"}}],
                currency="JPY")
    result = rate(period="2026-10", terms=[yen], window_state=Y,
                  usage=[group(revenue=Decimal(1003))])
    assert result.lines[0].amount == Decimal("125")  # 125.375 -> 125
    per_token = {"charge": {"type": "per_token", "per_million": {"input": "0.03"}}}
    for currency, text in (("EUR", "€0.03"), ("GBP", "£0.03"), ("CHF", "CHF 0.03"),
                           ("JPY", "¥0.03")):
        t = terms("v1", [per_token], currency=currency)
        line = rate(period="2026-10", terms=[t], window_state=Y,
                    usage=[group(input_tokens=1)]).lines[0]
        assert line.description == f"{text} per 1M input tokens"


def test_terms_in_different_currencies_cannot_share_a_month() -> None:
    v1 = terms("v1", SHARE_12)
    v2 = terms("v2", SHARE_12, currency="EUR", effective_from="2026-10-15")
    with pytest.raises(ValueError, match="different currencies"):
        rate(period="2026-10", terms=[v1, v2], window_state=Y,
             usage=[group("v1"), group("v2")])


def test_unknown_terms_labels_and_bad_periods_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown terms"):
        rate(period="2026-10", terms=[], window_state=Y, usage=[group("v9")])
    with pytest.raises(ValueError, match="YYYY-MM"):
        rate(period="2026-13", terms=[], window_state=Y, usage=[])
    with pytest.raises(ValueError, match="2027"):
        rate(period="2026-10", terms=[], window_state=WindowState(2027), usage=[])


@pytest.mark.parametrize("build", [
    lambda: UsageGroup(M, "commercial", "v1", revenue=1.5),  # type: ignore[arg-type]
    lambda: UsageGroup(M, "commercial", "v1", input_tokens=1.0),  # type: ignore[arg-type]
    lambda: UsageGroup(M, "commercial", "v1", revenue_before=0.0),  # type: ignore[arg-type]
    lambda: UsageRecord("e", at("2026-10-01"), M, "commercial", "v1",
                        revenue=0.1),  # type: ignore[arg-type]
    lambda: WindowState(2026, revenue=0.0),  # type: ignore[arg-type]
    lambda: WindowState(2026, tokens=1.0),  # type: ignore[arg-type]
    lambda: terms("v1", SHARE_12).__class__(
        label="v1", kind="version", effective_from=at("2026-01-01"), currency="USD", rules=(),
        minimum_per_month=100.0),  # type: ignore[arg-type]
])
def test_any_float_reaching_the_engine_is_refused(build: object) -> None:
    with pytest.raises(TypeError, match="float"):
        build()  # type: ignore[operator]


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        UsageRecord("e", datetime(2026, 10, 1), M, "commercial", "v1")  # noqa: DTZ001


def test_digests_are_stable_and_name_what_was_rated() -> None:
    v1 = terms("v1", SHARE_12)
    usage = [group(revenue=Decimal(1)), group(customer_category="research")]
    first = rate(period="2026-10", terms=[v1], window_state=Y, usage=usage)
    again = rate(period="2026-10", terms=[v1, terms("unused", [])], window_state=Y,
                 usage=usage[::-1])
    assert (first.terms_digest, first.usage_digest) == (again.terms_digest, again.usage_digest)
    other = rate(period="2026-10", terms=[v1], window_state=Y, usage=[group(revenue=Decimal(2))])
    assert other.usage_digest != first.usage_digest
    changed = terms("v1", [{"charge": {"type": "revenue_share", "percent": "13"}}])
    assert rate(period="2026-10", terms=[changed], window_state=Y,
                usage=usage).terms_digest != first.terms_digest
    # "12" and "12.00" are the same terms
    same = terms("v1", [{**SHARE_12[0]}, {"match": {"customer_category": ["commercial"]},
                                          "charge": {"type": "revenue_share",
                                                     "percent": "12.00"}}])
    assert rate(period="2026-10", terms=[same], window_state=Y,
                usage=usage).terms_digest == first.terms_digest
