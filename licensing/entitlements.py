"""May this host serve this model to this kind of customer? (`GET /api/v1/entitlements`)

The answer is the rating of a hypothetical record: the terms in force for the host at `at`
(`licensing.selectors.license_terms_in_force`: its agreement, else the public version) and the
rule of those terms that would rate a record of that category and region
(`licensing.rating.first_match`, the engine's own matching), described as a settlement line
describes it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from core.vocabulary import CUSTOMER_CATEGORIES
from licensing.models import Agreement, Host
from licensing.rating import describe, first_match, is_valid_region, parse_rules
from licensing.selectors import license_terms_in_force, model_resolve

_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:[Zz]|[+-]\d{2}:\d{2})"
)


class EntitlementQueryError(ValueError):
    """A bad query parameter: `fields` names it."""

    def __init__(self, fields: dict[str, list[str]]) -> None:
        super().__init__("; ".join(f"{k}: {v[0]}" for k, v in fields.items()))
        self.fields = fields


@dataclass(frozen=True)
class _Query:
    model: str
    customer_category: str
    region: str | None
    at: datetime


def _at(value: str) -> datetime | None:
    # An unencoded "+01:00" in a query string arrives as " 01:00".
    if len(value) > 6 and value[-6] == " ":
        value = value[:-6] + "+" + value[-5:]
    if not _RFC3339.fullmatch(value):
        return None
    try:
        return datetime.fromisoformat(value.upper().replace(" ", "T")).astimezone(UTC)
    except (ValueError, OverflowError):
        return None


def _parse(
    host: Host, model: str | None, category: str | None, region: str | None, at: str | None
) -> _Query:
    errors: dict[str, list[str]] = {}
    category = category or host.default_customer_category or None
    if not model:
        errors["model"] = ["required: a model slug or alias"]
    if not category:
        errors["customer_category"] = ["required: one of " + ", ".join(CUSTOMER_CATEGORIES)]
    elif category not in CUSTOMER_CATEGORIES:
        errors["customer_category"] = ["invalid: must be one of " + ", ".join(CUSTOMER_CATEGORIES)]
    if region and not is_valid_region(region):
        errors["region"] = ["invalid: must be an ISO 3166-1 alpha-2 code such as US or GB"]
    moment = datetime.now(UTC) if not at else _at(at)
    if moment is None:
        errors["at"] = ["invalid: must be an RFC 3339 timestamp with an offset"]
    if errors:
        raise EntitlementQueryError(errors)
    return _Query(model or "", category or "", region or None, moment)  # type: ignore[arg-type]


def entitlement_check(
    *,
    host: Host,
    model: str | None,
    customer_category: str | None = None,
    region: str | None = None,
    at: str | None = None,
) -> dict[str, Any]:
    """The entitlement of `host` for a record of this model, category (default: the host's
    default_customer_category), region and time (default: now). Raises EntitlementQueryError
    naming the parameter for a missing or bad one, an unknown model included."""
    query = _parse(host, model, customer_category, region, at)
    found = model_resolve(query.model) if "\x00" not in query.model else None
    if found is None:
        raise EntitlementQueryError(
            {"model": [f"unknown_model: no model or alias {query.model!r}"]}
        )
    license = found.effective_license()
    answer: dict[str, Any] = {
        "model": found.slug,
        "licensed": False,
        "terms_version": None,
        "charge": None,
        "attribution": None,
        "reason": None,
    }
    terms = license_terms_in_force(license=license, host=host, at=query.at)
    when = query.at.isoformat().replace("+00:00", "Z")
    if terms is None:
        answer["reason"] = f"no terms of license {license.slug} are in force at {when}"
        return answer
    answer["terms_version"] = terms.label
    rules = parse_rules(terms.rules, "rules")
    index = first_match(rules, query.customer_category, query.region)
    kind = "agreement" if isinstance(terms, Agreement) else "version"
    if index is None:
        where = f"region {query.region}" if query.region else "no region"
        answer["reason"] = (
            f"no rule of {kind} {terms.label} of license {license.slug} matches"
            f" customer_category {query.customer_category} with {where}"
        )
        return answer
    answer["licensed"] = True
    answer["charge"] = describe(rules[index].charge, terms.currency)
    answer["attribution"] = terms.attribution or None
    return answer
