"""The rules grammar (docs/rating.md, "Rules"): parse and validate, and write back as canonical
JSON.

``parse_rules`` collects every problem before it raises, so a licensor who imports a catalog sees
all the mistakes of a version at once, each prefixed with the path of the bad node.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal, TypeAlias

from core.money import parse_decimal
from core.vocabulary import CUSTOMER_CATEGORIES

__all__ = [
    "Above",
    "Charge",
    "Flat",
    "Free",
    "GreaterOf",
    "Match",
    "PerToken",
    "RevenueShare",
    "Rule",
    "RulesError",
    "charge_to_json",
    "decimal_to_json",
    "first_match",
    "is_valid_region",
    "parse_rules",
    "parse_terms_amount",
    "rule_to_json",
    "rules_to_json",
]

Metric: TypeAlias = Literal["revenue", "tokens"]
Window: TypeAlias = Literal["month", "calendar_year"]

# ISO 3166-1 alpha-2, all 249 officially assigned codes. "UK" and "EU" are not among them: a rule
# that says "UK" would silently never match a record from "GB", so the parser refuses it.
_REGIONS = frozenset(
    """AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR
    BS BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC
    EE EG EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK
    HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN KP KR KW KY KZ LA LB
    LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ
    NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY QA RE RO RS RU
    RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN
    TO TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW""".split()
)
_REGION_HINTS = {
    "UK": "the United Kingdom is GB",
    "EU": "EU is not a country; list the member states",
}


def is_valid_region(code: object) -> bool:
    """True for an assigned ISO 3166-1 alpha-2 code in upper case (``"GB"``, not ``"UK"``)."""
    return isinstance(code, str) and code in _REGIONS


class RulesError(ValueError):
    """Invalid terms. ``errors`` lists every problem as ``"<path>: <message>"``."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


# --- the parsed form: frozen, hashable, Decimal only -------------------------------------------


@dataclass(frozen=True, slots=True)
class Above:
    """Charge only the part of ``metric`` beyond ``amount`` within ``window`` (marginal)."""

    metric: Metric
    window: Window
    amount: Decimal  # revenue in the terms' currency, or a token count


@dataclass(frozen=True, slots=True)
class Free:
    pass


@dataclass(frozen=True, slots=True)
class RevenueShare:
    percent: Decimal  # 12 means 12 % of net revenue
    above: Above | None = None


@dataclass(frozen=True, slots=True)
class PerToken:
    # Price per one million tokens in the terms' currency; None means that kind is not charged.
    input: Decimal | None
    cached_input: Decimal | None
    output: Decimal | None
    above: Above | None = None


@dataclass(frozen=True, slots=True)
class Flat:
    amount: Decimal  # once per month in which the rule matched any usage


@dataclass(frozen=True, slots=True)
class GreaterOf:
    of: tuple[Charge, ...]  # the largest, compared per settlement line


Charge: TypeAlias = Free | RevenueShare | PerToken | Flat | GreaterOf


@dataclass(frozen=True, slots=True)
class Match:
    """Every given condition must fit; None means the key was not given (fits everything)."""

    customer_category: frozenset[str] | None = None
    region_in: frozenset[str] | None = None
    region_not_in: frozenset[str] | None = None

    def fits(self, customer_category: str, region: str | None) -> bool:
        if self.customer_category is not None and customer_category not in self.customer_category:
            return False
        # A record without a region fits no region_in and every region_not_in (docs/rating.md).
        if self.region_in is not None and (region is None or region not in self.region_in):
            return False
        if self.region_not_in is not None and region is not None and region in self.region_not_in:
            return False
        return True


@dataclass(frozen=True, slots=True)
class Rule:
    match: Match
    charge: Charge


def first_match(rules: Sequence[Rule], customer_category: str, region: str | None) -> int | None:
    """The index of the rule that rates usage of this category and region: the first whose
    match fits (contract §4: rules are tried in order); None when none does (unlicensed)."""
    for index, rule in enumerate(rules):
        if rule.match.fits(customer_category, region):
            return index
    return None


# --- parsing ------------------------------------------------------------------------------------

_RULE_KEYS = frozenset({"match", "charge"})
_MATCH_KEYS = frozenset({"customer_category", "region_in", "region_not_in"})
_CHARGE_KEYS: dict[str, frozenset[str]] = {
    "free": frozenset({"type"}),
    "revenue_share": frozenset({"type", "percent", "above"}),
    "per_token": frozenset({"type", "per_million", "above"}),
    "flat": frozenset({"type", "amount"}),
    "greater_of": frozenset({"type", "of"}),
}
_PER_MILLION_KEYS = ("input", "cached_input", "output")
_ABOVE_KEYS = frozenset({"metric", "window", "amount"})


class _Collector:
    def __init__(self) -> None:
        self.errors: list[str] = []

    def add(self, path: str, message: str) -> None:
        self.errors.append(f"{path}: {message}")

    def unknown_keys(self, raw: Mapping[Any, Any], allowed: frozenset[str], path: str) -> None:
        for key in sorted(raw, key=str):
            if key == "above" and "type" in allowed and key not in allowed:
                self.add(f"{path}.above", "above is allowed only on revenue_share and per_token")
            elif key not in allowed:
                expected = ", ".join(sorted(allowed))
                self.add(f"{path}.{key}", f"unknown key (expected one of {expected})")

    def decimal(
        self,
        raw: object,
        path: str,
        *,
        minimum: Decimal,
        maximum: Decimal | None = None,
        strict_minimum: bool = False,
        describe: str,
    ) -> Decimal | None:
        """A decimal string or int in range; None (with the error recorded) otherwise."""
        if isinstance(raw, float):
            self.add(path, f'{describe}, given as a string ("12.5"), not a float')
            return None
        if isinstance(raw, Decimal) or isinstance(raw, bool) or not isinstance(raw, str | int):
            self.add(path, describe)
            return None
        try:
            value = parse_decimal(raw, field=path)
        except (TypeError, ValueError):
            self.add(path, describe)
            return None
        too_low = value <= minimum if strict_minimum else value < minimum
        if too_low or (maximum is not None and value > maximum):
            self.add(path, describe)
            return None
        return value


def parse_rules(raw: object, path: str) -> tuple[Rule, ...]:
    """Validate ``raw`` (decoded JSON) against the rules grammar and return the parsed rules.

    ``path`` names ``raw`` in messages, e.g. ``"licenses[0].versions[1].rules"``. Raises
    ``RulesError`` listing every problem found, each as ``"<path of the bad node>: <message>"``.
    """
    errors = _Collector()
    rules: list[Rule] = []
    if not isinstance(raw, list):
        errors.add(path, "must be a list of rules")
    else:
        for index, raw_rule in enumerate(raw):
            rule = _parse_rule(raw_rule, f"{path}[{index}]", errors)
            if rule is not None:
                rules.append(rule)
    if errors.errors:
        raise RulesError(errors.errors)
    return tuple(rules)


def parse_terms_amount(raw: object, path: str) -> Decimal | None:
    """``minimum_per_month`` / ``cap_per_month``: a decimal string >= 0, or null (None)."""
    if raw is None:
        return None
    errors = _Collector()
    value = errors.decimal(
        raw, path, minimum=Decimal(0), describe="must be a decimal string >= 0 or null"
    )
    if errors.errors:
        raise RulesError(errors.errors)
    return value


def _parse_rule(raw: object, path: str, errors: _Collector) -> Rule | None:
    if not isinstance(raw, Mapping):
        errors.add(path, 'must be an object with "charge" and optionally "match"')
        return None
    errors.unknown_keys(raw, _RULE_KEYS, path)
    match = _parse_match(raw.get("match"), f"{path}.match", errors) if "match" in raw else Match()
    if "charge" not in raw:
        errors.add(f"{path}.charge", "is required")
        return None
    charge = _parse_charge(raw["charge"], f"{path}.charge", errors, nested=False)
    if match is None or charge is None:
        return None
    return Rule(match=match, charge=charge)


def _parse_match(raw: object, path: str, errors: _Collector) -> Match | None:
    if not isinstance(raw, Mapping):
        errors.add(path, "must be an object")
        return None
    before = len(errors.errors)
    errors.unknown_keys(raw, _MATCH_KEYS, path)
    categories = regions_in = regions_not_in = None
    if "customer_category" in raw:
        categories = _parse_code_list(
            raw["customer_category"],
            f"{path}.customer_category",
            errors,
            valid=lambda v: v in CUSTOMER_CATEGORIES,
            describe=f"must be one of {', '.join(CUSTOMER_CATEGORIES)}",
        )
    for key in ("region_in", "region_not_in"):
        if key in raw:
            parsed = _parse_code_list(
                raw[key],
                f"{path}.{key}",
                errors,
                valid=is_valid_region,
                describe="must be an ISO 3166-1 alpha-2 code in upper case",
            )
            if key == "region_in":
                regions_in = parsed
            else:
                regions_not_in = parsed
    if len(errors.errors) > before:
        return None
    return Match(categories, regions_in, regions_not_in)


def _parse_code_list(
    raw: object, path: str, errors: _Collector, *, valid: Any, describe: str
) -> frozenset[str] | None:
    if not isinstance(raw, list) or not raw:
        errors.add(path, "must be a non-empty list")
        return None
    ok = True
    for index, item in enumerate(raw):
        if not isinstance(item, str) or not valid(item):
            hint = _REGION_HINTS.get(item) if isinstance(item, str) else None
            errors.add(f"{path}[{index}]", f"{describe} ({hint})" if hint else describe)
            ok = False
    return frozenset(raw) if ok else None


def _parse_charge(raw: object, path: str, errors: _Collector, *, nested: bool) -> Charge | None:
    if not isinstance(raw, Mapping):
        errors.add(path, 'must be an object with a "type"')
        return None
    kind = raw.get("type")
    if kind not in _CHARGE_KEYS or not isinstance(kind, str):
        errors.add(f"{path}.type", f"must be one of {', '.join(_CHARGE_KEYS)}")
        return None
    before = len(errors.errors)
    errors.unknown_keys(raw, _CHARGE_KEYS[kind], path)
    charge: Charge | None = None
    if kind == "free":
        charge = Free()
    elif kind == "revenue_share":
        if "percent" not in raw:
            errors.add(f"{path}.percent", "is required")
        percent = (
            errors.decimal(
                raw.get("percent"),
                f"{path}.percent",
                minimum=Decimal(0),
                maximum=Decimal(100),
                describe="must be a decimal from 0 to 100",
            )
            if "percent" in raw
            else None
        )
        above = _parse_above(raw["above"], f"{path}.above", errors) if "above" in raw else None
        if percent is not None:
            charge = RevenueShare(percent=percent, above=above)
    elif kind == "per_token":
        charge = _parse_per_token(raw, path, errors)
    elif kind == "flat":
        if nested:
            errors.add(
                f"{path}.type", "flat is charged once per month, so it cannot be inside greater_of"
            )
        elif "amount" not in raw:
            errors.add(f"{path}.amount", "is required")
        else:
            amount = errors.decimal(
                raw["amount"],
                f"{path}.amount",
                minimum=Decimal(0),
                describe="must be a decimal string >= 0",
            )
            if amount is not None:
                charge = Flat(amount=amount)
    else:  # greater_of
        of = raw.get("of")
        if not isinstance(of, list) or len(of) < 2:
            errors.add(f"{path}.of", "must be a list of at least 2 charges")
        else:
            parts = [
                _parse_charge(item, f"{path}.of[{index}]", errors, nested=True)
                for index, item in enumerate(of)
            ]
            if all(part is not None for part in parts):
                charge = GreaterOf(of=tuple(part for part in parts if part is not None))
    if len(errors.errors) > before:
        return None
    return charge


def _parse_per_token(raw: Mapping[str, Any], path: str, errors: _Collector) -> PerToken | None:
    above = _parse_above(raw["above"], f"{path}.above", errors) if "above" in raw else None
    per_million = raw.get("per_million")
    mpath = f"{path}.per_million"
    if not isinstance(per_million, Mapping):
        errors.add(mpath, "must be an object with input, cached_input and/or output")
        return None
    errors.unknown_keys(per_million, frozenset(_PER_MILLION_KEYS), mpath)
    if not any(key in per_million for key in _PER_MILLION_KEYS):
        errors.add(mpath, "needs at least one of input, cached_input, output")
        return None
    rates: dict[str, Decimal | None] = {}
    for key in _PER_MILLION_KEYS:
        rates[key] = (
            errors.decimal(
                per_million[key],
                f"{mpath}.{key}",
                minimum=Decimal(0),
                describe="must be a decimal string >= 0",
            )
            if key in per_million
            else None
        )
    return PerToken(rates["input"], rates["cached_input"], rates["output"], above)


def _parse_above(raw: object, path: str, errors: _Collector) -> Above | None:
    if not isinstance(raw, Mapping):
        errors.add(path, "must be an object with metric, window and amount")
        return None
    errors.unknown_keys(raw, _ABOVE_KEYS, path)
    metric, window = raw.get("metric"), raw.get("window")
    ok = True
    if metric not in ("revenue", "tokens"):
        errors.add(f"{path}.metric", "must be revenue or tokens")
        ok = False
    if window not in ("month", "calendar_year"):
        errors.add(f"{path}.window", "must be month or calendar_year")
        ok = False
    amount = errors.decimal(
        raw.get("amount"),
        f"{path}.amount",
        minimum=Decimal(0),
        strict_minimum=True,
        describe="must be a decimal > 0",
    )
    if not ok or amount is None:
        return None
    if metric == "tokens" and amount != amount.to_integral_value():
        errors.add(f"{path}.amount", "a token threshold must be a whole number")
        return None
    return Above(metric=metric, window=window, amount=amount)  # type: ignore[arg-type]


# --- canonical JSON -------------------------------------------------------------------------------


def decimal_to_json(value: Decimal) -> str:
    """Canonical decimal string: no exponent, no trailing zeros ("12.50" and "12.5" -> "12.5")."""
    text = format(value.normalize(), "f")
    return "0" if text in ("-0", "0") else text


def charge_to_json(charge: Charge) -> dict[str, Any]:
    if isinstance(charge, Free):
        return {"type": "free"}
    if isinstance(charge, Flat):
        return {"type": "flat", "amount": decimal_to_json(charge.amount)}
    if isinstance(charge, GreaterOf):
        return {"type": "greater_of", "of": [charge_to_json(part) for part in charge.of]}
    result: dict[str, Any]
    if isinstance(charge, RevenueShare):
        result = {"type": "revenue_share", "percent": decimal_to_json(charge.percent)}
    else:
        rates = {
            "input": charge.input,
            "cached_input": charge.cached_input,
            "output": charge.output,
        }
        result = {
            "type": "per_token",
            "per_million": {k: decimal_to_json(v) for k, v in rates.items() if v is not None},
        }
    if charge.above is not None:
        result["above"] = {
            "metric": charge.above.metric,
            "window": charge.above.window,
            "amount": decimal_to_json(charge.above.amount),
        }
    return result


def rule_to_json(rule: Rule) -> dict[str, Any]:
    match: dict[str, list[str]] = {}
    if rule.match.customer_category is not None:
        match["customer_category"] = sorted(rule.match.customer_category)
    if rule.match.region_in is not None:
        match["region_in"] = sorted(rule.match.region_in)
    if rule.match.region_not_in is not None:
        match["region_not_in"] = sorted(rule.match.region_not_in)
    return {"match": match, "charge": charge_to_json(rule.charge)}


def rules_to_json(rules: tuple[Rule, ...]) -> list[dict[str, Any]]:
    """Canonical JSON form of parsed rules; ``parse_rules(rules_to_json(r), p) == r``."""
    return [rule_to_json(rule) for rule in rules]
