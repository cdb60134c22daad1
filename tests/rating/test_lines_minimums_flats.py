"""One line per model, category and terms; unlicensed usage never drives a minimum or a cap; one
set of flat fees per host, license and month; and edition 1, kept to reproduce older settlements."""

from decimal import Decimal

from licensing.rating import (
    Billed,
    Line,
    UsageGroup,
    WindowState,
    adjustment_lines,
    rate,
    rerate_settled,
)
from tests.rating.helpers import terms

Y = WindowState(2026)
M = "minimax-m2.7"
CN_AND_REST_10 = [
    {"match": {"customer_category": ["commercial"], "region_in": ["CN"]},
     "charge": {"type": "revenue_share", "percent": "10"}},
    {"match": {"customer_category": ["commercial"]},
     "charge": {"type": "revenue_share", "percent": "10"}},
]


def group(label: str | None, **kw: object) -> UsageGroup:
    values: dict[str, object] = {"model": M, "customer_category": "commercial",
                                 "terms_label": label}
    values.update(kw)
    return UsageGroup(**values)  # type: ignore[arg-type]


def kinds(result: object) -> list[tuple[str, str, Decimal]]:
    return [(line.kind, line.license_version, line.amount)  # type: ignore[attr-defined]
            for line in result.lines]  # type: ignore[attr-defined]


# --- one line per model, customer category and terms, rounded once ---


def test_two_rules_rating_one_model_and_category_make_one_line_rounded_once() -> None:
    v1 = terms("v1", CN_AND_REST_10)
    usage = [group("v1", region="CN", revenue=Decimal("0.05")),
             group("v1", region="US", revenue=Decimal("0.05"))]
    result = rate(period="2026-10", terms=[v1], window_state=Y, usage=usage)
    # 10 % of 0.05 + 10 % of 0.05 = 0.010 exactly -> 0.01 (two lines rounded apart made 0.02)
    assert [(line.revenue, line.requests, line.amount, line.description)
            for line in result.lines] == [(Decimal("0.10"), 0, Decimal("0.01"),
                                           "10% of net revenue")]
    assert result.total == Decimal("0.01")
    # edition 1 (settlements written before) rounded each rule's part apart
    old = rate(period="2026-10", terms=[v1], window_state=Y, usage=usage, edition=1)
    assert [line.amount for line in old.lines] == [Decimal("0.01"), Decimal("0.01")]


def test_a_line_names_every_rule_that_contributed_in_rule_order() -> None:
    v1 = terms("v1", [
        {"match": {"region_in": ["DE"]}, "charge": {"type": "free"}},
        {"match": {"region_in": ["FR"]}, "charge": {"type": "flat", "amount": "100"}},
        {"charge": {"type": "per_token", "per_million": {"output": "2"}}},
    ])
    result = rate(period="2026-10", terms=[v1], window_state=Y, usage=[
        group("v1", region=None, output_tokens=3_000_000),
        group("v1", region="FR", output_tokens=5_000_000),
        group("v1", region="DE", output_tokens=7_000_000),
    ])
    assert [(line.kind, line.output_tokens, line.amount, line.description)
            for line in result.lines] == [
        ("usage", 15_000_000, Decimal("6.00"),
         "free; included in flat monthly fee; $2 per 1M output tokens"),
        ("flat_fee", 0, Decimal("100.00"), "flat monthly fee"),
    ]


def test_greater_of_compares_over_the_part_of_the_line_its_rule_rated() -> None:
    # rule 1 (CN): greater of 10 % and $1 per 1M output tokens; rule 2 (elsewhere): 5 %
    v1 = terms("v1", [
        {"match": {"region_in": ["CN"]}, "charge": {"type": "greater_of", "of": [
            {"type": "revenue_share", "percent": "10"},
            {"type": "per_token", "per_million": {"output": "1"}}]}},
        {"charge": {"type": "revenue_share", "percent": "5"}},
    ])
    result = rate(period="2026-10", terms=[v1], window_state=Y, usage=[
        # rule 1's part: share 0.333 vs tokens 0.5015 -> 0.5015
        group("v1", region="CN", revenue=Decimal("1.11"), output_tokens=101_500),
        group("v1", region="CN", revenue=Decimal("2.22"), output_tokens=400_000),
        # rule 2's part: 5 % of 1000.0033 = 50.000165, never compared with rule 1's charges
        group("v1", region="US", revenue=Decimal("1000.0033"), output_tokens=10**9),
    ])
    # 0.5015 + 50.000165 = 50.501665 -> 50.50, one rounding
    assert [(line.amount, line.description) for line in result.lines] == [(
        Decimal("50.50"),
        "greater of 10% of net revenue and $1 per 1M output tokens; 5% of net revenue",
    )]


# --- unlicensed usage is not rated: no minimum, no cap, not "the last version" ---


def test_case_a_unlicensed_usage_under_a_later_version_leaves_the_earlier_minimum() -> None:
    # v1: commercial 10 %, minimum 1,000; v2 from the 15th: free for research only
    v1 = terms("v1", [{"match": {"customer_category": ["commercial"]},
                       "charge": {"type": "revenue_share", "percent": "10"}}],
               effective_from="2026-01-01", minimum="1000")
    v2 = terms("v2", [{"match": {"customer_category": ["research"]},
                       "charge": {"type": "free"}}], effective_from="2026-10-15")
    usage = [group("v1", revenue=Decimal(100), record_count=1),  # the 5th
             group("v2", revenue=Decimal(100), record_count=1)]  # the 20th: unlicensed
    result = rate(period="2026-10", terms=[v1, v2], window_state=Y, usage=usage)
    assert kinds(result) == [("usage", "v1", Decimal("10.00")),
                             ("minimum_true_up", "v1", Decimal("990.00"))]
    assert result.total == Decimal("1000.00")
    assert [(f.kind, f.model, f.customer_category, f.record_count, f.message)
            for f in result.flags] == [
        ("unlicensed", M, "commercial", 1, "no rule of v2 matches this usage; billed nothing")]
    # edition 1 let v2 be the last version, which has no minimum
    assert rate(period="2026-10", terms=[v1, v2], window_state=Y, usage=usage,
                edition=1).total == Decimal("10.00")


def test_case_b_a_minimum_is_not_triggered_by_unlicensed_usage_alone() -> None:
    v1 = terms("v1", [{"match": {"customer_category": ["research"]},
                       "charge": {"type": "free"}}], minimum="500")
    result = rate(period="2026-10", terms=[v1], window_state=Y,
                  usage=[group("v1", revenue=Decimal(100), record_count=1)])
    assert result.lines == () and result.total == Decimal("0")
    assert [(f.kind, f.record_count) for f in result.flags] == [("unlicensed", 1)]
    assert rate(period="2026-10", terms=[v1], window_state=Y, edition=1,
                usage=[group("v1", revenue=Decimal(100))]).total == Decimal("500.00")
    # free usage a rule matched is rated: it triggers the minimum
    free = rate(period="2026-10", terms=[v1], window_state=Y, usage=[
        group("v1", revenue=Decimal(100)), group("v1", customer_category="research")])
    assert kinds(free) == [("usage", "v1", Decimal("0.00")),
                           ("minimum_true_up", "v1", Decimal("500.00"))]


def test_unlicensed_usage_under_a_later_version_does_not_apply_its_cap() -> None:
    v1 = terms("v1", [{"match": {"customer_category": ["commercial"]},
                       "charge": {"type": "revenue_share", "percent": "10"}}], cap="1000")
    v2 = terms("v2", [{"match": {"customer_category": ["research"]},
                       "charge": {"type": "free"}}], effective_from="2026-10-15", cap="5")
    usage = [group("v1", revenue=Decimal(100)), group("v2", revenue=Decimal(100))]
    assert kinds(rate(period="2026-10", terms=[v1, v2], window_state=Y, usage=usage)) == [
        ("usage", "v1", Decimal("10.00"))]
    assert kinds(rate(period="2026-10", terms=[v1, v2], window_state=Y, usage=usage,
                      edition=1))[-1] == ("cap_credit", "v2", Decimal("-5.00"))


# --- flat fees: those of the latest terms whose flat rules matched ---


def test_only_the_flat_rules_of_the_latest_terms_whose_flat_rules_matched_are_billed() -> None:
    v1 = terms("v1", [{"match": {"customer_category": ["commercial"]},
                       "charge": {"type": "flat", "amount": "5000"}}])
    v2 = terms("v2", [
        {"match": {"customer_category": ["commercial"]},
         "charge": {"type": "flat", "amount": "3000"}},
        {"match": {"customer_category": ["research"]}, "charge": {"type": "flat", "amount": "100"}},
        {"match": {"customer_category": ["nonprofit"]}, "charge": {"type": "flat", "amount": "7"}},
        {"charge": {"type": "revenue_share", "percent": "10"}},
    ], effective_from="2026-10-15")
    both = [group("v1"), group("v2"), group("v2", customer_category="research")]
    result = rate(period="2026-10", terms=[v1, v2], window_state=Y, usage=both)
    # v2's two flat rules that matched usage; not v1's, not v2's nonprofit one (no usage)
    assert [line for line in kinds(result) if line[0] == "flat_fee"] == [
        ("flat_fee", "v2", Decimal("3000.00")), ("flat_fee", "v2", Decimal("100.00"))]
    assert result.total == Decimal("3100.00")
    # edition 1 billed every distinct flat rule
    assert rate(period="2026-10", terms=[v1, v2], window_state=Y, usage=both,
                edition=1).total == Decimal("8100.00")
    # v2 rated usage only by its share: v1 is the latest whose flat rules matched
    only_v1_flat = rate(period="2026-10", terms=[v1, v2], window_state=Y, usage=[
        group("v1"), group("v2", customer_category="individual", revenue=Decimal(10))])
    assert kinds(only_v1_flat) == [("usage", "v1", Decimal("0.00")),
                                   ("usage", "v2", Decimal("1.00")),
                                   ("flat_fee", "v1", Decimal("5000.00"))]


# --- a month settled under edition 1 ---


def test_late_usage_of_a_month_settled_under_edition_1_adjusts_only_for_the_late_usage() -> None:
    v1 = terms("v1", CN_AND_REST_10, minimum="1000")
    v2 = terms("v2", [{"match": {"customer_category": ["research"]},
                       "charge": {"type": "free"}}], effective_from="2026-10-15")
    settled_usage = [group("v1", region="CN", revenue=Decimal("0.05")),
                     group("v1", region="US", revenue=Decimal("0.05")),
                     group("v2", revenue=Decimal(7))]
    settled = rate(period="2026-10", terms=[v1, v2], window_state=Y, usage=settled_usage,
                   edition=1).lines
    assert sum(line.amount for line in settled) == Decimal("0.02")  # no true-up: v2 was "last"
    late = group("v1", region="CN", revenue=Decimal("300.00"), record_count=1)
    october = Billed(settled, lambda: (settled_usage, Y))

    def adjust(usage: list[UsageGroup], history: list[Billed]) -> list[tuple[str, Decimal, ...]]:
        billed = [line for b in history for line in b.lines]
        result = rerate_settled(period="2026-10", terms=[v1, v2], usage=usage, window_state=Y,
                                settled=billed, history=history)
        return [(line.model, line.revenue, line.amount) for line in result.lines]

    # nothing new: nothing to adjust, although edition 2 rates the same usage 1000.00
    assert adjust(settled_usage, [october]) == []
    # $300 late: 30.00 of usage, and the true-up falls by as much (edition 2 on both sides)
    everything = [*settled_usage, late]
    first = rerate_settled(period="2026-10", terms=[v1, v2], usage=everything, window_state=Y,
                           settled=settled, history=[october])
    assert [(line.model, line.revenue, line.amount) for line in first.lines] == [
        ("", Decimal("0"), Decimal("-30.00")), (M, Decimal("300.00"), Decimal("30.00"))]
    # once that adjustment is billed, nothing more is due for the same usage
    november = Billed(first.lines, lambda: (everything, Y))
    assert adjust(everything, [october, november]) == []
    # compared with the stored lines alone, the change of rules itself would have been billed
    stored_only = rerate_settled(period="2026-10", terms=[v1, v2], usage=everything,
                                 window_state=Y, settled=settled)
    assert stored_only.total == Decimal("999.98")


def test_adjustments_written_by_edition_1_count_as_edition_1_billing_too() -> None:
    # given: October and its first adjustment both billed under edition 1 (its CN rule and its
    # catch-all rounded apart), then another late record
    v1 = terms("v1", CN_AND_REST_10)
    october_usage = [group("v1", region="CN", revenue=Decimal("0.05")),
                     group("v1", region="US", revenue=Decimal("0.05"))]
    by_november = [*october_usage, group("v1", region="CN", revenue=Decimal("0.10"))]
    by_december = [*by_november, group("v1", region="US", revenue=Decimal("0.30"))]

    def edition_1(usage: list[UsageGroup]) -> tuple[Line, ...]:
        return rate(period="2026-10", terms=[v1], window_state=Y, usage=usage, edition=1).lines

    october = edition_1(october_usage)  # 0.005 -> 0.01, twice: 0.02
    # November's adjustment as edition 1's code computed it: CN 0.015 -> 0.02, US 0.01; 0.03 - 0.02
    first = adjustment_lines(period="2026-10", rerated=edition_1(by_november), settled=october)
    assert [line.amount for line in first] == [Decimal("0.01")]
    history = [Billed(october, lambda: (october_usage, Y)),
               Billed(first, lambda: (by_november, Y))]
    # when
    result = rerate_settled(period="2026-10", terms=[v1], usage=by_december, window_state=Y,
                            settled=[*october, *first], history=history)
    # then: edition 2 of December's usage (0.50 -> 0.05) minus edition 2 of November's
    # (0.20 -> 0.02), although 0.03 was billed
    assert [line.amount for line in result.lines] == [Decimal("0.03")]


def test_a_record_no_settlement_billed_is_billed_even_if_received_before_it() -> None:
    # given: October billed without a record received just before its cut-off (it committed late)
    v1 = terms("v1", CN_AND_REST_10, minimum="1")
    billed_usage = [group("v1", region="US", revenue=Decimal(20))]
    received = [*billed_usage, group("v1", region="CN", revenue=Decimal(5))]
    october = rate(period="2026-10", terms=[v1], window_state=Y, usage=billed_usage).lines
    # when: the engine reads the usage received by October's cut-off, the missed record included
    result = rerate_settled(period="2026-10", terms=[v1], usage=received, window_state=Y,
                            settled=october, history=[Billed(october, lambda: (received, Y))])
    # then: neither edition reproduces October from it, so the stored lines are the baseline
    assert [(line.revenue, line.amount) for line in result.lines] == [
        (Decimal(5), Decimal("0.50"))]
