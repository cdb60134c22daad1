"""The rules grammar of docs/rating.md: every mistake is reported with the path of the bad node."""

from decimal import Decimal

import pytest

from licensing.rating import (
    Above,
    Flat,
    Free,
    GreaterOf,
    Match,
    PerToken,
    RevenueShare,
    Rule,
    RulesError,
    parse_rules,
    parse_terms_amount,
    rules_to_json,
)

P = "licenses[0].versions[1].rules"


def errors_of(raw: object) -> list[str]:
    with pytest.raises(RulesError) as caught:
        parse_rules(raw, P)
    assert str(caught.value) == "; ".join(caught.value.errors)
    return caught.value.errors


def one_rule(charge: object, match: object = None) -> list[object]:
    rule: dict[str, object] = {"charge": charge}
    if match is not None:
        rule["match"] = match
    return [rule]


def test_it_parses_every_primitive() -> None:
    raw = [
        {"match": {"customer_category": ["individual", "research"]}, "charge": {"type": "free"}},
        {
            "match": {"customer_category": ["commercial"], "region_in": ["CN"],
                      "region_not_in": ["US"]},
            "charge": {"type": "revenue_share", "percent": "12"},
        },
        {"charge": {"type": "per_token",
                    "per_million": {"input": "0.03", "cached_input": "0.005", "output": "0.12"}}},
        {"charge": {"type": "flat", "amount": "5000.00"}},
        {"charge": {"type": "greater_of", "of": [
            {"type": "revenue_share", "percent": 10,
             "above": {"metric": "revenue", "window": "calendar_year", "amount": "1000000"}},
            {"type": "per_token", "per_million": {"output": "0.1"},
             "above": {"metric": "tokens", "window": "month", "amount": 1000}},
        ]}},
    ]
    rules = parse_rules(raw, P)
    assert rules == (
        Rule(Match(customer_category=frozenset({"individual", "research"})), Free()),
        Rule(
            Match(frozenset({"commercial"}), frozenset({"CN"}), frozenset({"US"})),
            RevenueShare(Decimal("12")),
        ),
        Rule(Match(), PerToken(Decimal("0.03"), Decimal("0.005"), Decimal("0.12"))),
        Rule(Match(), Flat(Decimal("5000.00"))),
        Rule(Match(), GreaterOf((
            RevenueShare(Decimal(10), Above("revenue", "calendar_year", Decimal(1000000))),
            PerToken(None, None, Decimal("0.1"), Above("tokens", "month", Decimal(1000))),
        ))),
    )


def test_it_round_trips_through_canonical_json() -> None:
    raw = [{"match": {"region_not_in": ["US", "CN"]},
            "charge": {"type": "revenue_share", "percent": "12.50"}}]
    rules = parse_rules(raw, P)
    assert rules_to_json(rules) == [
        {"match": {"region_not_in": ["CN", "US"]},
         "charge": {"type": "revenue_share", "percent": "12.5"}}
    ]
    assert parse_rules(rules_to_json(rules), P) == rules


def test_an_empty_list_is_valid() -> None:
    assert parse_rules([], P) == ()


def test_rules_must_be_a_list() -> None:
    assert errors_of({"charge": {"type": "free"}}) == [f"{P}: must be a list of rules"]


def test_a_rule_must_be_an_object() -> None:
    assert errors_of(["free"])[0].startswith(f"{P}[0]: must be an object")


def test_a_rule_needs_a_charge() -> None:
    assert errors_of([{"match": {}}]) == [f"{P}[0].charge: is required"]


def test_unknown_keys_are_named_at_every_level() -> None:
    errors = errors_of([
        {"charge": {"type": "free", "percent": "1"}, "when": {}},
        {"match": {"country": ["US"]}, "charge": {"type": "free"}},
        {"charge": {"type": "per_token", "per_million": {"input": "1", "reasoning": "2"}}},
    ])
    paths = [e.split(": ")[0] for e in errors]
    assert paths == [
        f"{P}[0].when",
        f"{P}[0].charge.percent",
        f"{P}[1].match.country",
        f"{P}[2].charge.per_million.reasoning",
    ]


def test_match_must_be_an_object() -> None:
    assert errors_of(one_rule({"type": "free"}, ["commercial"])) == [
        f"{P}[0].match: must be an object"
    ]


def test_customer_category_must_be_a_list_of_known_categories() -> None:
    assert errors_of(one_rule({"type": "free"}, {"customer_category": "commercial"})) == [
        f"{P}[0].match.customer_category: must be a non-empty list"
    ]
    assert errors_of(one_rule({"type": "free"}, {"customer_category": ["commercial", "gov"]})) == [
        f"{P}[0].match.customer_category[1]: "
        "must be one of individual, commercial, research, nonprofit"
    ]


@pytest.mark.parametrize("key", ["region_in", "region_not_in"])
def test_regions_must_be_iso_3166_alpha_2_upper_case(key: str) -> None:
    errors = errors_of(one_rule({"type": "free"}, {key: ["US", "us", "UK", "EU", "USA", 1]}))
    assert [e.split(": ")[0] for e in errors] == [
        f"{P}[0].match.{key}[{i}]" for i in (1, 2, 3, 4, 5)
    ]
    assert "GB" in errors[1]
    assert errors_of(one_rule({"type": "free"}, {key: []})) == [
        f"{P}[0].match.{key}: must be a non-empty list"
    ]


def test_charge_must_be_an_object_with_a_known_type() -> None:
    assert errors_of(one_rule("free"))[0].startswith(f"{P}[0].charge: must be an object")
    assert errors_of(one_rule({"type": "royalty"}))[0].startswith(f"{P}[0].charge.type: ")
    assert errors_of(one_rule({}))[0].startswith(f"{P}[0].charge.type: ")


@pytest.mark.parametrize("percent", ["-1", "100.01", "abc", "1e2", "NaN", "Infinity", None, True])
def test_revenue_share_percent_is_a_decimal_from_0_to_100(percent: object) -> None:
    assert errors_of(one_rule({"type": "revenue_share", "percent": percent})) == [
        f"{P}[0].charge.percent: must be a decimal from 0 to 100"
    ]


def test_revenue_share_percent_is_required() -> None:
    assert errors_of(one_rule({"type": "revenue_share"})) == [f"{P}[0].charge.percent: is required"]


@pytest.mark.parametrize(
    ("percent", "parsed"),
    [("0", Decimal(0)), ("100", Decimal(100)), (0, Decimal(0)), (100, Decimal(100))],
)
def test_revenue_share_percent_bounds_are_inclusive(percent: object, parsed: Decimal) -> None:
    assert parse_rules(one_rule({"type": "revenue_share", "percent": percent}), P) == (
        Rule(Match(), RevenueShare(parsed)),
    )


def test_a_float_is_refused_with_its_path() -> None:
    errors = errors_of(one_rule({"type": "revenue_share", "percent": 12.5}))
    assert errors[0].startswith(f"{P}[0].charge.percent: ")
    assert "float" in errors[0]


def test_per_token_needs_per_million_with_at_least_one_rate() -> None:
    assert errors_of(one_rule({"type": "per_token"}))[0].startswith(f"{P}[0].charge.per_million: ")
    assert errors_of(one_rule({"type": "per_token", "per_million": {}}))[0].startswith(
        f"{P}[0].charge.per_million: needs at least one"
    )


@pytest.mark.parametrize("key", ["input", "cached_input", "output"])
def test_per_token_rates_are_decimals_at_least_0(key: str) -> None:
    assert errors_of(one_rule({"type": "per_token", "per_million": {key: "-0.01"}})) == [
        f"{P}[0].charge.per_million.{key}: must be a decimal string >= 0"
    ]
    assert "float" in errors_of(one_rule({"type": "per_token", "per_million": {key: 0.03}}))[0]


def test_flat_amount_is_a_decimal_at_least_0() -> None:
    assert errors_of(one_rule({"type": "flat", "amount": "-5"})) == [
        f"{P}[0].charge.amount: must be a decimal string >= 0"
    ]
    assert errors_of(one_rule({"type": "flat"})) == [f"{P}[0].charge.amount: is required"]


def test_greater_of_needs_at_least_two_charges() -> None:
    assert errors_of(one_rule({"type": "greater_of", "of": [{"type": "free"}]})) == [
        f"{P}[0].charge.of: must be a list of at least 2 charges"
    ]


def test_greater_of_names_the_nested_path() -> None:
    errors = errors_of(one_rule({"type": "greater_of", "of": [
        {"type": "free"},
        {"type": "revenue_share", "percent": "101"},
        {"type": "greater_of", "of": [{"type": "free"}, {"type": "bogus"}]},
    ]}))
    assert errors == [
        f"{P}[0].charge.of[1].percent: must be a decimal from 0 to 100",
        f"{P}[0].charge.of[2].of[1].type: "
        "must be one of free, revenue_share, per_token, flat, greater_of",
    ]


def test_flat_is_not_allowed_inside_greater_of() -> None:
    errors = errors_of(one_rule({"type": "greater_of", "of": [
        {"type": "free"}, {"type": "flat", "amount": "1"}]}))
    assert errors[0].startswith(f"{P}[0].charge.of[1].type: flat is charged once per month")


@pytest.mark.parametrize("charge", [
    {"type": "free"}, {"type": "flat", "amount": "1"},
    {"type": "greater_of", "of": [{"type": "free"}, {"type": "free"}]},
])
def test_above_is_allowed_only_on_revenue_share_and_per_token(charge: dict[str, object]) -> None:
    above = {"metric": "revenue", "window": "month", "amount": "1"}
    assert errors_of(one_rule({**charge, "above": above})) == [
        f"{P}[0].charge.above: above is allowed only on revenue_share and per_token"
    ]


def test_above_metric_window_and_amount_are_checked() -> None:
    errors = errors_of(one_rule({"type": "revenue_share", "percent": "10", "above": {
        "metric": "users", "window": "week", "amount": "0", "per": "host"}}))
    assert errors == [
        f"{P}[0].charge.above.per: unknown key (expected one of amount, metric, window)",
        f"{P}[0].charge.above.metric: must be revenue or tokens",
        f"{P}[0].charge.above.window: must be month or calendar_year",
        f"{P}[0].charge.above.amount: must be a decimal > 0",
    ]
    assert errors_of(one_rule({"type": "per_token", "per_million": {"input": "1"},
                               "above": "1000000"})) == [
        f"{P}[0].charge.above: must be an object with metric, window and amount"
    ]
    assert errors_of(one_rule({"type": "per_token", "per_million": {"input": "1"},
                               "above": {"metric": "tokens", "window": "month",
                                         "amount": "10.5"}})) == [
        f"{P}[0].charge.above.amount: a token threshold must be a whole number"
    ]


def test_every_problem_is_listed_not_just_the_first() -> None:
    errors = errors_of([
        {"charge": {"type": "revenue_share", "percent": "120"}},
        "oops",
        {"match": {"region_in": ["uk"]}, "charge": {"type": "flat", "amount": 3.5}},
    ])
    assert [e.split(": ")[0] for e in errors] == [
        f"{P}[0].charge.percent",
        f"{P}[1]",
        f"{P}[2].match.region_in[0]",
        f"{P}[2].charge.amount",
    ]


def test_terms_amounts_are_decimal_strings_or_null() -> None:
    assert parse_terms_amount(None, "x.minimum_per_month") is None
    assert parse_terms_amount("10000.00", "x.minimum_per_month") == Decimal("10000.00")
    for bad in ("-1", 10.0, "ten", [], "1E4"):
        with pytest.raises(RulesError) as caught:
            parse_terms_amount(bad, "x.cap_per_month")
        assert caught.value.errors[0].startswith("x.cap_per_month: ")
