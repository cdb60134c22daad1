"""Hypothesis properties of the line rule and of unlicensed usage (docs/rating.md)."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from core.money import quantize
from licensing.rating import (
    Billed,
    PerToken,
    RevenueShare,
    Terms,
    UsageRecord,
    WindowState,
    rate,
    rate_records,
    rerate_settled,
)
from licensing.rating.usage import group_records
from tests.rating.helpers import terms

FAST = settings(max_examples=60, deadline=None)
CATEGORIES = ["individual", "commercial", "research", "nonprofit"]
REGIONS = [None, "US", "DE", "CN"]
START = datetime(2026, 10, 1, tzinfo=UTC)
SPLIT = datetime(2026, 10, 16, tzinfo=UTC)


@st.composite
def a_match(draw: st.DrawFn) -> dict[str, Any]:
    match: dict[str, Any] = {}
    if draw(st.booleans()):
        match["customer_category"] = draw(st.lists(st.sampled_from(CATEGORIES), min_size=1,
                                                   max_size=3, unique=True))
    if draw(st.booleans()):
        key = draw(st.sampled_from(["region_in", "region_not_in"]))
        match[key] = draw(st.lists(st.sampled_from(["US", "DE", "CN"]), min_size=1, unique=True))
    return match


money = st.decimals(0, 50, places=3).map(str)
a_charge = st.one_of(
    st.just({"type": "free"}),
    st.builds(lambda p: {"type": "revenue_share", "percent": p}, money),
    st.builds(lambda i, o: {"type": "per_token", "per_million": {"input": i, "output": o}},
              money, money),
)
a_rule = st.builds(lambda m, c: {"match": m, "charge": c}, a_match(), a_charge)


@st.composite
def records(draw: st.DrawFn, labels: tuple[str, str] = ("v1", "v2"), prefix: str = "e",
            max_size: int = 20) -> list[UsageRecord]:
    result = []
    for i in range(draw(st.integers(0, max_size))):
        when = START + timedelta(minutes=draw(st.integers(0, 28 * 24 * 60 - 1)))
        result.append(UsageRecord(
            event_id=f"{prefix}{i:03}",
            occurred_at=when,
            model=draw(st.sampled_from(["m-a", "m-b"])),
            customer_category=draw(st.sampled_from(CATEGORIES)),
            terms_label=labels[1] if when >= SPLIT else labels[0],
            region=draw(st.sampled_from(REGIONS)),
            input_tokens=draw(st.integers(0, 10**7)),
            output_tokens=draw(st.integers(0, 10**7)),
            revenue=draw(st.decimals(0, 5, places=6)),
        ))
    return result


def _exact(rule_charge: object, r: UsageRecord) -> Decimal:
    """One record's exact amount under a charge without thresholds, as docs/rating.md says it."""
    if isinstance(rule_charge, RevenueShare):
        return r.revenue * rule_charge.percent / 100
    if isinstance(rule_charge, PerToken):
        return (r.input_tokens * (rule_charge.input or 0)
                + r.output_tokens * (rule_charge.output or 0)) / Decimal(10**6)
    return Decimal(0)


@FAST
@given(st.lists(a_rule, min_size=1, max_size=5), st.lists(a_rule, min_size=1, max_size=5),
       records())
def test_a_line_is_the_rounded_sum_of_its_records_exact_amounts(rules1, rules2, recs) -> None:
    versions = [terms("v1", rules1, effective_from="2026-01-01"),
                terms("v2", rules2, effective_from="2026-10-16")]
    by_label = {t.label: t for t in versions}
    expected: dict[tuple[str, str, str], Decimal] = defaultdict(Decimal)
    for r in recs:
        t = by_label[r.terms_label or ""]
        rule = next((rule for rule in t.rules if rule.match.fits(r.customer_category, r.region)),
                    None)
        if rule is not None:
            expected[(r.terms_label or "", r.model, r.customer_category)] += _exact(rule.charge, r)
    result = rate_records(period="2026-10", terms=versions, records=recs,
                          window_state=WindowState(2026))
    assert {(line.license_version, line.model, line.customer_category): line.amount
            for line in result.lines} == {key: quantize(amount, "USD")
                                          for key, amount in expected.items()}
    # and one line per key, whatever the number of rules that matched its records
    assert len(result.lines) == len(expected)


# v1: minimum 300, cap 900, rates commercial and individual; v2 from the 16th: minimum 50, cap 5,
# rates research only. Unlicensed usage: no terms yet (label None), or a category no rule matches.
V1 = terms("v1", [
    {"match": {"customer_category": ["commercial"], "region_not_in": ["CN"]},
     "charge": {"type": "revenue_share", "percent": "10"}},
    {"match": {"customer_category": ["commercial"]},
     "charge": {"type": "per_token", "per_million": {"output": "30"}}},
    {"match": {"customer_category": ["individual"]}, "charge": {"type": "free"}},
], effective_from="2026-01-01", minimum="300", cap="900")
V2 = terms("v2", [{"match": {"customer_category": ["research"]}, "charge": {"type": "free"}}],
           effective_from="2026-10-16", minimum="50", cap="5")
VERSIONS: list[Terms] = [V1, V2]


def _licensed(r: UsageRecord) -> bool:
    t = {"v1": V1, "v2": V2}.get(r.terms_label or "")
    return t is not None and any(rule.match.fits(r.customer_category, r.region)
                                 for rule in t.rules)


def _relabel(r: UsageRecord, label: str | None) -> UsageRecord:
    return UsageRecord(r.event_id, r.occurred_at, r.model, r.customer_category, label, r.region,
                       r.input_tokens, r.cached_input_tokens, r.output_tokens, r.requests,
                       r.revenue)


@FAST
@given(records(), records(prefix="u"), st.booleans())
def test_adding_unlicensed_usage_never_changes_minimum_or_cap_lines(recs, extra, untermed) -> None:
    licensed = [r for r in recs if _licensed(r)]
    unlicensed = [_relabel(r, None) if untermed else r for r in extra]
    unlicensed = [r for r in unlicensed if not _licensed(r)]
    before = rate_records(period="2026-10", terms=VERSIONS, records=licensed,
                          window_state=WindowState(2026))
    after = rate_records(period="2026-10", terms=VERSIONS, records=licensed + unlicensed,
                         window_state=WindowState(2026))

    def bounds(result: Any) -> list[Any]:
        return [line for line in result.lines if line.kind in ("minimum_true_up", "cap_credit")]

    assert bounds(after) == bounds(before)
    assert after.lines == before.lines and after.total == before.total
    assert sum(f.record_count for f in after.flags if f.kind == "unlicensed") == len(unlicensed)


@FAST
@given(st.lists(a_rule, min_size=2, max_size=5), records(labels=("v1", "v1")),
       records(labels=("v1", "v1"), prefix="late", max_size=5))
def test_a_month_settled_under_edition_1_is_adjusted_by_the_late_usage_alone(
    rules, recs, late
) -> None:
    v1 = [terms("v1", rules, minimum="3", cap="40")]
    y = WindowState(2026)

    def groups(rs: list[UsageRecord]) -> Any:
        return group_records(rs, period="2026-10", window_state=y, terms=v1)

    settled = rate(period="2026-10", terms=v1, usage=groups(recs), window_state=y, edition=1)
    history = [Billed(settled.lines, lambda: (groups(recs), y))]
    adjustment = rerate_settled(period="2026-10", terms=v1, usage=groups(recs + late),
                                window_state=y, settled=settled.lines, history=history)
    now = rate(period="2026-10", terms=v1, usage=groups(recs + late), window_state=y)
    then = rate(period="2026-10", terms=v1, usage=groups(recs), window_state=y)
    assert adjustment.total == now.total - then.total
    if not late:
        assert adjustment.lines == ()
    # and once it is billed, a later run adjusts nothing more
    history.append(Billed(adjustment.lines, lambda: (groups(recs + late), y)))
    again = rerate_settled(period="2026-10", terms=v1, usage=groups(recs + late), window_state=y,
                           settled=[line for b in history for line in b.lines], history=history)
    assert again.lines == ()
