"""Properties of the rating engine, checked with hypothesis against random months."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from core.money import quantize, to_minor_units
from licensing.rating import (
    Terms,
    UsageRecord,
    WindowState,
    group_records,
    rate,
    rate_records,
    rerate_settled,
)
from tests.rating.helpers import terms

FAST = settings(max_examples=40, deadline=None)

RULES = [
    {"match": {"customer_category": ["individual", "nonprofit"]}, "charge": {"type": "free"}},
    {"match": {"customer_category": ["research"], "region_in": ["US", "DE"]},
     "charge": {"type": "flat", "amount": "250.00"}},
    {"match": {"customer_category": ["commercial"], "region_not_in": ["CN"]},
     "charge": {"type": "greater_of", "of": [
         {"type": "revenue_share", "percent": "12",
          "above": {"metric": "revenue", "window": "calendar_year", "amount": "5000"}},
         {"type": "per_token", "per_million": {"input": "0.03", "cached_input": "0.005",
                                                "output": "0.12"},
          "above": {"metric": "tokens", "window": "month", "amount": "300000000"}},
     ]}},
    {"match": {"customer_category": ["commercial"]},
     "charge": {"type": "revenue_share", "percent": "7.5",
                "above": {"metric": "revenue", "window": "month", "amount": "1000"}}},
]
V1 = terms("v1", RULES, effective_from="2026-01-01", minimum="300", cap="20000")
V2 = terms("v2", [RULES[0], {"charge": {"type": "revenue_share", "percent": "9.25"}}],
           effective_from="2026-10-16", minimum="400")
TERMS = [V1, V2]
START = datetime(2026, 10, 1, tzinfo=UTC)
SPLIT = datetime(2026, 10, 16, tzinfo=UTC)


@st.composite
def records(draw: st.DrawFn, month_start: datetime = START, prefix: str = "e",
            max_size: int = 25) -> list[UsageRecord]:
    n = draw(st.integers(0, max_size))
    result = []
    for i in range(n):
        when = month_start + timedelta(minutes=draw(st.integers(0, 28 * 24 * 60 - 1)))
        category = draw(st.sampled_from(["individual", "commercial", "research", "nonprofit"]))
        label = "v2" if when >= SPLIT else "v1"
        result.append(UsageRecord(
            event_id=f"{prefix}{i:03}",
            occurred_at=when,
            model=draw(st.sampled_from(["m-a", "m-b"])),
            customer_category=category,
            terms_label=label,
            region=draw(st.sampled_from([None, "US", "DE", "CN"])),
            input_tokens=draw(st.integers(0, 10**8)),
            cached_input_tokens=draw(st.integers(0, 10**8)),
            output_tokens=draw(st.integers(0, 10**8)),
            requests=draw(st.integers(0, 5)),
            revenue=draw(st.decimals(0, 3000, places=6)),
        ))
    return result


states = st.builds(WindowState, st.just(2026), st.decimals(0, 8000, places=2),
                   st.integers(0, 10**9))


def _rate(recs: list[UsageRecord], state: WindowState, merge: bool = True,
          terms_: list[Terms] = TERMS):
    groups = group_records(recs, period="2026-10", window_state=state, terms=terms_, merge=merge)
    return rate(period="2026-10", terms=terms_, usage=groups, window_state=state)


@FAST
@given(records(), states)
def test_total_is_the_sum_of_lines_each_on_the_minor_unit(recs, state) -> None:
    result = _rate(recs, state)
    assert result.total == sum((line.amount for line in result.lines), Decimal(0))
    for line in result.lines:
        assert quantize(line.amount, "USD") == line.amount
        to_minor_units(line.amount, "USD")


@FAST
@given(records(), states, st.randoms(use_true_random=False))
def test_rating_is_independent_of_input_order(recs, state, rnd: random.Random) -> None:
    shuffled = list(recs)
    rnd.shuffle(shuffled)
    first = _rate(recs, state)
    groups = list(group_records(shuffled, period="2026-10", window_state=state, terms=TERMS))
    rnd.shuffle(groups)
    second = rate(period="2026-10", terms=TERMS[::-1], usage=groups, window_state=state)
    assert first == second


@FAST
@given(records(), states)
def test_grouped_records_rate_the_same_as_individual_records(recs, state) -> None:
    grouped, individual = _rate(recs, state), _rate(recs, state, merge=False)
    assert grouped.lines == individual.lines
    assert grouped.flags == individual.flags
    assert grouped.window_state == individual.window_state


def _marginal_reference(recs: list[UsageRecord], state: WindowState, percent: Decimal,
                        threshold: Decimal) -> dict[str, Decimal]:
    """A naive record-by-record marginal share over the calendar year, per month."""
    ytd = state.revenue
    exact: dict[str, Decimal] = {}
    for r in sorted(recs, key=lambda r: (r.occurred_at, r.event_id)):
        beyond = max(Decimal(0), ytd + r.revenue - max(ytd, threshold))
        month = r.occurred_at.strftime("%Y-%m")
        exact[month] = exact.get(month, Decimal(0)) + beyond * percent / 100
        ytd += r.revenue
    return {month: quantize(amount, "USD") for month, amount in exact.items()}


@FAST
@given(records(max_size=12), records(datetime(2026, 11, 1, tzinfo=UTC), "n", max_size=12),
       st.decimals(0, 8000, places=2))
def test_rating_month_by_month_with_carried_state_equals_rating_the_year_at_once(
    october, november, ytd
) -> None:
    yearly = terms("y", [{"charge": {"type": "revenue_share", "percent": "10", "above": {
        "metric": "revenue", "window": "calendar_year", "amount": "10000"}}}])
    october = [_relabel(r, "y") for r in october]
    november = [_relabel(r, "y") for r in november]
    state = WindowState(2026, ytd)
    first = rate_records(period="2026-10", terms=[yearly], records=october, window_state=state)
    second = rate_records(period="2026-11", terms=[yearly], records=november,
                          window_state=first.window_state)
    expected = _marginal_reference(october + november, state, Decimal(10), Decimal(10000))
    # one line per (model, category) makes the reference per line; compare per month totals of
    # a single model and category to keep the reference simple
    assert _single_line_total(first, october) == expected.get("2026-10", Decimal("0.00"))
    assert _single_line_total(second, november) == expected.get("2026-11", Decimal("0.00"))
    assert second.window_state.revenue == ytd + sum(r.revenue for r in october + november)


def _relabel(r: UsageRecord, label: str) -> UsageRecord:
    return UsageRecord(r.event_id, r.occurred_at, "m-a", "commercial", label, r.region,
                       r.input_tokens, r.cached_input_tokens, r.output_tokens, r.requests,
                       r.revenue)


def _single_line_total(result, recs) -> Decimal:
    assert len(result.lines) == (1 if recs else 0)
    return result.total if recs else Decimal("0.00")


@FAST
@given(records(), states, st.decimals(0, 10**6, places=6))
def test_a_share_never_decreases_when_revenue_grows(recs, state, extra) -> None:
    share = terms("s", [{"charge": {"type": "revenue_share", "percent": "12", "above": {
        "metric": "revenue", "window": "calendar_year", "amount": "5000"}}}])
    recs = [_relabel(r, "s") for r in recs]
    before = rate_records(period="2026-10", terms=[share], records=recs, window_state=state)
    if recs:
        grown = [*recs[:-1], _with_revenue(recs[-1], recs[-1].revenue + extra)]
    else:
        grown = recs
    after = rate_records(period="2026-10", terms=[share], records=grown, window_state=state)
    assert after.total >= before.total


def _with_revenue(r: UsageRecord, revenue: Decimal) -> UsageRecord:
    return UsageRecord(r.event_id, r.occurred_at, r.model, r.customer_category, r.terms_label,
                       r.region, r.input_tokens, r.cached_input_tokens, r.output_tokens,
                       r.requests, revenue)


@FAST
@given(records(), states)
def test_rerating_a_settled_period_without_new_usage_adjusts_nothing(recs, state) -> None:
    settled = _rate(recs, state)
    groups = group_records(recs, period="2026-10", window_state=state, terms=TERMS)
    again = rerate_settled(period="2026-10", terms=TERMS, usage=groups, window_state=state,
                           settled=settled.lines)
    assert again.lines == ()
    assert again.total == Decimal(0)


@FAST
@given(records(), records(prefix="late", max_size=5), states)
def test_settled_plus_adjustment_equals_the_re_rated_period(recs, late, state) -> None:
    settled = _rate(recs, state)
    everything = recs + late
    rerated = _rate(everything, state)
    groups = group_records(everything, period="2026-10", window_state=state, terms=TERMS)
    adjustment = rerate_settled(period="2026-10", terms=TERMS, usage=groups, window_state=state,
                                settled=settled.lines)
    assert settled.total + adjustment.total == rerated.total
    # a second late batch adjusts against everything billed so far for the period
    again = rerate_settled(period="2026-10", terms=TERMS, usage=groups, window_state=state,
                           settled=settled.lines + adjustment.lines)
    assert again.lines == ()


@FAST
@given(records(), states)
def test_the_free_categories_always_yield_zero(recs, state) -> None:
    result = _rate(recs, state)
    for line in result.lines:
        if line.customer_category in ("individual", "nonprofit"):
            assert line.amount == 0
            assert line.description == "free"
