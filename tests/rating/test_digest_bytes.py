"""The digests' fast writers against the one definition of canonical JSON (`canonical_json`):
the same bytes for any input, so every digest already stored (settlements, kits) stays the same."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from licensing.rating import Terms, UsageGroup, WindowState, parse_rules, rate
from licensing.rating.digests import canonical_json, group_json, terms_digest_of
from tests.rating.helpers import terms

MANY = settings(max_examples=400, deadline=None)

# Any text json can write as UTF-8 (lone surrogates cannot be encoded by either writer).
TEXT = st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=12)
COUNTS = st.integers(0, 2**70)  # past bigint: sums of counts may be
MONEY = st.decimals(
    min_value=0, max_value=Decimal("1e12"), allow_nan=False, places=6
) | st.sampled_from(
    [Decimal("1E+3"), Decimal("0E-7"), Decimal("12.500000"), Decimal("-0"), Decimal("1e-6")]
)


def _reference_usage_digest(period: str, opening: WindowState, groups: list[UsageGroup]) -> str:
    """The usage digest as the engine wrote it before its fast writer (every settlement so far)."""
    usage = sorted((g.to_json() for g in groups), key=lambda g: canonical_json(g))
    value = {"period": period, "window_state": opening.to_json(), "usage": usage}
    return "sha256:" + hashlib.sha256(canonical_json(value)).hexdigest()


def _reference_terms_digest(used: list[Terms]) -> str:
    value = [t.to_json() for t in used]
    return "sha256:" + hashlib.sha256(canonical_json(value)).hexdigest()


@st.composite
def groups(draw: st.DrawFn, labels: tuple[str | None, ...] = ("v1", None)) -> UsageGroup:
    return UsageGroup(
        model=draw(TEXT),
        customer_category=draw(
            st.sampled_from(["commercial", "individual", "research", "nonprofit"])
        ),
        terms_label=draw(st.sampled_from(labels)),
        region=draw(st.none() | TEXT),
        input_tokens=draw(COUNTS),
        cached_input_tokens=draw(COUNTS),
        output_tokens=draw(COUNTS),
        requests=draw(COUNTS),
        revenue=draw(MONEY),
        record_count=draw(st.integers(1, 2**40)),
        revenue_before=draw(MONEY),
        tokens_before=draw(COUNTS),
    )


@MANY
@given(groups())
def test_a_group_is_written_as_json_writes_it(group: UsageGroup) -> None:
    # given any group / then the fast writer's bytes are json.dumps's
    assert group_json(group) == canonical_json(group.to_json())


@st.composite
def any_terms(draw: st.DrawFn, label: str) -> Terms:
    rules = parse_rules(
        [
            {
                "match": {"customer_category": ["commercial"]},
                "charge": {
                    "type": "revenue_share",
                    "percent": str(draw(st.decimals(0, 100, places=3))),
                },
            },
            {
                "charge": {
                    "type": "per_token",
                    "per_million": {"input": str(draw(st.decimals(0, 9, places=4)))},
                }
            },
        ],
        "rules",
    )
    return Terms(
        label=label,
        kind=draw(st.sampled_from(["version", "agreement"])),
        effective_from=datetime(2026, 1, 1, tzinfo=UTC)
        + timedelta(seconds=draw(st.integers(0, 10**7))),
        currency="USD",
        rules=rules,
        minimum_per_month=draw(st.none() | st.decimals(0, 1000, places=2)),
        cap_per_month=draw(st.none() | st.decimals(0, 10**6, places=2)),
        attribution=draw(st.none() | TEXT),
    )


@MANY
@given(
    st.lists(groups(labels=("v1", "v2", None)), max_size=8),
    any_terms("v1"),
    any_terms("v2"),
    st.integers(2026, 2026),
    MONEY,
    COUNTS,
)
def test_a_rating_digests_what_the_reference_digests(
    usage: list[UsageGroup], v1: Terms, v2: Terms, year: int, ytd: Decimal, tokens: int
) -> None:
    # given any month of groups under two terms in force one after the other
    v1, v2 = sorted([v1, v2], key=lambda t: t.effective_from)
    v1, v2 = (
        Terms(**{**{f: getattr(t, f) for f in t.__slots__}, "label": label})
        for t, label in ((v1, "v1"), (v2, "v2"))
    )
    window = WindowState(year, ytd, tokens)
    # when it is rated
    result = rate(period="2026-10", terms=[v1, v2], usage=usage, window_state=window)
    # then its digests are those of the reference writers, byte for byte
    assert result.usage_digest == _reference_usage_digest(
        "2026-10", window.opening_for("2026-10"), usage
    )
    used = sorted(
        {t for t in (v1, v2) if any(g.terms_label == t.label for g in usage)},
        key=lambda t: (t.effective_from, t.label),
    )
    assert result.terms_digest == _reference_terms_digest(used)


def test_equal_terms_written_differently_keep_their_own_digest() -> None:
    # given two terms equal as values (Decimal("12") == Decimal("12.0"), same instant in two
    # time zones) but distinct objects
    rules = [{"charge": {"type": "revenue_share", "percent": "12"}}]
    first = terms("v1", rules)
    second = Terms(
        **{**{f: getattr(first, f) for f in first.__slots__}, "attribution": "Built with MiniMax"}
    )
    # when each is digested (the memo is by identity)
    # then each digest is its own terms' canonical JSON
    assert terms_digest_of([first]) == _reference_terms_digest([first])
    assert terms_digest_of([second]) == _reference_terms_digest([second])
    assert terms_digest_of([first]) != terms_digest_of([second])
    assert terms_digest_of([first, second]) == _reference_terms_digest([first, second])


def test_stored_digests_are_unchanged() -> None:
    # given a month with text json escapes ("\u2028", quotes, control characters), a count past
    # bigint, decimals written with exponents and trailing zeros
    t = terms(
        "2026-04-15",
        [
            {
                "match": {"customer_category": ["commercial"], "region_not_in": ["CN"]},
                "charge": {"type": "revenue_share", "percent": "12.50"},
            },
            {"charge": {"type": "per_token", "per_million": {"input": "0.03", "output": "0.120"}}},
        ],
        minimum="100",
        attribution="Built with «Mini» \u2028 M2.7",
    )
    usage = [
        UsageGroup(
            model="mini-m2.7",
            customer_category="commercial",
            terms_label="2026-04-15",
            region="US",
            input_tokens=10**20,
            cached_input_tokens=5,
            output_tokens=7,
            requests=3,
            revenue=Decimal("1234.500000"),
            record_count=2,
            revenue_before=Decimal("0.10"),
            tokens_before=12,
        ),
        UsageGroup(
            model='modèle-é"\\\n\x01',
            customer_category="research",
            terms_label=None,
            region=None,
            input_tokens=1,
            revenue=Decimal("1E+3"),
        ),
        UsageGroup(
            model="mini-m2.7",
            customer_category="individual",
            terms_label="2026-04-15",
            revenue=Decimal("-0") + 0,
        ),
    ]
    # when it is rated
    result = rate(
        period="2026-10", terms=[t], usage=usage, window_state=WindowState(2026, Decimal("5.5"), 9)
    )
    # then the digests are those the engine wrote before its fast writers (main at d87daff)
    assert result.usage_digest == (
        "sha256:c972e749975de243b270f01c736c236071aa532b317b40d560b43589102c112a"
    )
    assert result.terms_digest == (
        "sha256:811093947c676f9a657152608df8df807b5413c7d4a0c69df64854dcf071895a"
    )
    assert json.loads(group_json(usage[1])) == usage[1].to_json()
