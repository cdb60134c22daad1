"""The five worked examples of docs/rating.md, to the cent."""

from decimal import Decimal

from licensing.rating import (
    UsageGroup,
    WindowState,
    rate,
    rate_records,
    rerate_settled,
    terms_in_force,
)
from tests.rating.helpers import SHARE_12, at, record, terms


def test_example_1_share_and_a_free_category() -> None:
    # given: an agreement of 12% for commercial use, free for individuals
    agreement = terms("fw-2026-06", SHARE_12, kind="agreement", effective_from="2026-06-01",
                      attribution="Built with MiniMax M2.7")
    usage = [
        UsageGroup("minimax-m2.7", "commercial", "fw-2026-06", revenue=Decimal("75300.00"),
                   record_count=1000, requests=1000),
        UsageGroup("minimax-m2.7", "individual", "fw-2026-06", revenue=Decimal("4100.00"),
                   record_count=300, requests=300),
    ]
    # when
    result = rate(period="2026-10", terms=[agreement], usage=usage,
                  window_state=WindowState(2026))
    # then
    amounts = {(line.customer_category, line.amount) for line in result.lines}
    assert amounts == {("commercial", Decimal("9036.00")), ("individual", Decimal("0.00"))}
    assert result.total == Decimal("9036.00")
    commercial = next(line for line in result.lines if line.customer_category == "commercial")
    assert commercial.to_json() == {
        "kind": "usage", "model": "minimax-m2.7", "customer_category": "commercial",
        "period": "2026-10", "license_version": "fw-2026-06", "input_tokens": 0,
        "cached_input_tokens": 0, "output_tokens": 0, "requests": 1000, "revenue": "75300.00",
        "amount": "9036.00", "description": "12% of net revenue",
    }
    assert {(f.kind, f.customer_category) for f in result.flags} == {
        ("attribution", "commercial"), ("attribution", "individual"),
    }
    assert result.currency == "USD"
    assert result.terms_digest.startswith("sha256:") and len(result.terms_digest) == 71


def test_example_2_per_token_with_a_minimum() -> None:
    version = terms("2026-04-15", [{"charge": {"type": "per_token", "per_million": {
        "input": "0.03", "cached_input": "0.005", "output": "0.12"}}}], minimum="10000.00")
    usage = [UsageGroup("minimax-m2.7", "commercial", "2026-04-15",
                        input_tokens=90 * 10**9, cached_input_tokens=30 * 10**9,
                        output_tokens=40 * 10**9, requests=5, record_count=5)]
    result = rate(period="2026-10", terms=[version], usage=usage, window_state=WindowState(2026))
    assert [(line.kind, line.amount, line.description) for line in result.lines] == [
        ("usage", Decimal("7650.00"),
         "$0.03 / $0.005 / $0.12 per 1M input / cached input / output tokens"),
        ("minimum_true_up", Decimal("2350.00"), "minimum guarantee true-up"),
    ]
    assert result.total == Decimal("10000.00")


def test_example_3_a_version_change_mid_month_splits_by_occurred_at() -> None:
    free = terms("2026-10-01", [{"charge": {"type": "free"}}], effective_from="2026-10-01")
    share = terms("2026-10-15", SHARE_12, effective_from="2026-10-15")
    versions = [free, share]

    def label(when: str) -> str | None:
        t = terms_in_force(versions, [], at(when))
        return t.label if t else None

    records = [
        # reported late, but it occurred before the 15th: free
        record("a", "2026-10-14T23:59", label("2026-10-14T23:59"), revenue="9000.00"),
        record("b", "2026-10-15T00:00", label("2026-10-15T00:00"), revenue="40000.00"),
        record("c", "2026-10-30T10:00", label("2026-10-30T10:00"), revenue="1400.00"),
    ]
    result = rate_records(period="2026-10", terms=versions, records=records,
                          window_state=WindowState(2026))
    assert [(line.license_version, line.revenue, line.amount) for line in result.lines] == [
        ("2026-10-01", Decimal("9000.00"), Decimal("0.00")),
        ("2026-10-15", Decimal("41400.00"), Decimal("4968.00")),
    ]


def test_example_4_marginal_yearly_threshold() -> None:
    falcon = terms("1.0", [{"charge": {"type": "revenue_share", "percent": "10", "above": {
        "metric": "revenue", "window": "calendar_year", "amount": "1000000"}}}])
    through_july = WindowState(2026, revenue=Decimal("950000"))

    august = rate_records(period="2026-08", terms=[falcon], window_state=through_july, records=[
        record("aug-1", "2026-08-05", "1.0", revenue="30000"),
        record("aug-2", "2026-08-12", "1.0", revenue="60000"),  # crosses $1,000,000
        record("aug-3", "2026-08-20", "1.0", revenue="90000"),
    ])
    assert august.total == Decimal("13000.00")
    assert august.lines[0].description == (
        "10% of net revenue above $1,000,000 of revenue per calendar year"
    )
    assert august.window_state == WindowState(2026, revenue=Decimal("1130000"))

    september = rate(period="2026-09", terms=[falcon], window_state=august.window_state, usage=[
        UsageGroup("falcon-40b", "commercial", "1.0", revenue=Decimal("160000"), record_count=40),
    ])
    assert september.total == Decimal("16000.00")

    # and a new year starts again from zero
    january = rate(period="2027-01", terms=[falcon], window_state=september.window_state, usage=[
        UsageGroup("falcon-40b", "commercial", "1.0", revenue=Decimal("160000"), record_count=40),
    ])
    assert january.total == Decimal("0.00")


def test_example_5_late_usage_becomes_an_adjustment_on_the_next_settlement() -> None:
    version = terms("2026-04-15", SHARE_12)
    october_usage = [UsageGroup("minimax-m2.7", "commercial", "2026-04-15",
                                revenue=Decimal("75300.00"), requests=10, record_count=10)]
    october = rate(period="2026-10", terms=[version], usage=october_usage,
                   window_state=WindowState(2026))
    settled_lines, settled_digests = october.lines, (october.terms_digest, october.usage_digest)

    # on 3 November, an October record with $500.00 of commercial revenue arrives
    late = UsageGroup("minimax-m2.7", "commercial", "2026-04-15", revenue=Decimal("500.00"),
                      requests=1, record_count=1, revenue_before=Decimal("75300.00"))
    adjustment = rerate_settled(period="2026-10", terms=[version],
                                usage=[*october_usage, late],
                                window_state=WindowState(2026), settled=settled_lines)

    assert [line.to_json() for line in adjustment.lines] == [{
        "kind": "adjustment", "model": "minimax-m2.7", "customer_category": "commercial",
        "period": "2026-10", "license_version": "2026-04-15", "input_tokens": 0,
        "cached_input_tokens": 0, "output_tokens": 0, "requests": 1, "revenue": "500.00",
        "amount": "60.00", "description": "adjustment for 2026-10",
    }]
    assert adjustment.total == Decimal("60.00")
    # October's own result is untouched: still 12% of $75,300.00, and rating October's settled
    # usage again gives the same lines and digests (the late record went only into the adjustment)
    assert [line.to_json() for line in october.lines] == [{
        "kind": "usage", "model": "minimax-m2.7", "customer_category": "commercial",
        "period": "2026-10", "license_version": "2026-04-15", "input_tokens": 0,
        "cached_input_tokens": 0, "output_tokens": 0, "requests": 10, "revenue": "75300.00",
        "amount": "9036.00", "description": "12% of net revenue",
    }]
    again = rate(period="2026-10", terms=[version], usage=october_usage,
                 window_state=WindowState(2026))
    assert again.lines == settled_lines
    assert (again.terms_digest, again.usage_digest) == settled_digests
    assert adjustment.usage_digest != october.usage_digest
