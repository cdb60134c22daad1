"""The fast path's column checks (`columns.event_ids_ok`, `timestamps_ok`, `revenues_ok`) say of a
whole column exactly what their per-value rules (`columns.EVENT_ID`, `TIMESTAMP`, `REVENUE`) say
of each value: they are written for speed (bytes.translate and shapes), the rules for reading."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from usage import columns

# Characters that a check could get wrong: the rules' own, their look-alikes (lower-case t and z,
# non-ASCII digits, a full-width colon), separators (the columns are joined by "\n") and a NUL.
_TRICKY = "0123456789-:.TZtz+ _aA\n\r\t\x00\u0663\uff1a\u00e9/"

CHECKS: list[tuple[str, Callable[[list[str]], bool], re.Pattern[str]]] = [
    ("event_id", columns.event_ids_ok, columns.EVENT_ID),
    ("occurred_at", columns.timestamps_ok, columns.TIMESTAMP),
    ("revenue", columns.revenues_ok, columns.REVENUE),
]
BY_NAME = {name: (check, rule) for name, check, rule in CHECKS}


@st.composite
def near_valid(draw: st.DrawFn, rule: re.Pattern[str]) -> str:
    """A value of `rule`, often with one character replaced, inserted or dropped."""
    value = draw(st.from_regex(rule, fullmatch=True))
    edit = draw(st.sampled_from(["none", "replace", "insert", "drop"]))
    if edit == "none":
        return value
    at = draw(st.integers(0, len(value)))
    char = draw(st.sampled_from(_TRICKY))
    if edit == "replace":
        return value[:at] + char + value[at + 1 :]
    if edit == "insert":
        return value[:at] + char + value[at:]
    return value[:at] + value[at + 1 :]


def _column(rule: re.Pattern[str]) -> st.SearchStrategy[list[str]]:
    value = st.one_of(near_valid(rule), st.text(alphabet=_TRICKY, max_size=40))
    return st.lists(value, min_size=1, max_size=12)


@pytest.mark.parametrize(("name", "check", "rule"), CHECKS, ids=[c[0] for c in CHECKS])
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_a_column_passes_exactly_when_every_value_passes_its_rule(
    name: str, check: Callable[[list[str]], bool], rule: re.Pattern[str], data: st.DataObject
) -> None:
    # given a column of values, most of them valid or one edit away from valid
    values = data.draw(_column(rule), label=name)

    # when the column is checked, then it passes exactly when each value passes the rule
    assert check(values) == all(rule.fullmatch(v) for v in values), values


@pytest.mark.parametrize(
    ("name", "values", "expected"),
    [
        ("event_id", ["a" * 128, "b"], True),
        ("event_id", ["a" * 129], False),
        ("event_id", ["ok", ""], False),
        ("event_id", ["two\nids"], False),
        ("event_id", ["caf\u00e9"], False),
        ("occurred_at", ["2026-11-30T23:59:59.123456Z", "2026-11-30T23:59:59+01:00"], True),
        ("occurred_at", ["2026-11-30T23:59:59.1234567Z"], False),
        ("occurred_at", ["2026-11-30t23:59:59Z"], False),
        ("occurred_at", ["2026-11-30T23:59:59z"], False),
        ("occurred_at", ["2026-11-30T23:59:59\u0663Z"], False),
        ("revenue", ["0", "0.5", "10.000001", "999999999999.999999"], True),
        ("revenue", ["01"], False),
        ("revenue", ["0.5", "00.5"], False),
        ("revenue", ["1000000000000"], False),
        ("revenue", ["1."], False),
        ("revenue", ["-1"], False),
    ],
)
def test_it_decides_the_edges_of_each_rule(name: str, values: list[str], expected: bool) -> None:
    # given a column at an edge of its rule
    check, rule = BY_NAME[name]

    # when it is checked, then the answer is the one the rule gives each value
    assert check(values) is expected
    assert all(rule.fullmatch(v) for v in values) is expected


@pytest.mark.parametrize(("name", "check", "rule"), CHECKS, ids=[c[0] for c in CHECKS])
def test_an_empty_column_does_not_pass(
    name: str, check: Callable[[list[str]], bool], rule: re.Pattern[str]
) -> None:
    # given no values, when checked, then the column does not pass (a batch has records)
    assert check([]) is False
