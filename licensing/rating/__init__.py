"""The pure rating engine: license terms and usage in, settlement lines out.

No database, no clock, no I/O: the same input gives the same lines and the same digest bytes.
See docs/rating.md for the rules as a licensor reads them.
"""

from licensing.rating.rules import (
    CUSTOMER_CATEGORIES,
    Above,
    Charge,
    Flat,
    Free,
    GreaterOf,
    Match,
    PerToken,
    RevenueShare,
    Rule,
    RulesError,
    is_valid_region,
    parse_rules,
    parse_terms_amount,
    rules_to_json,
)

__all__ = [
    "CUSTOMER_CATEGORIES",
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
    "is_valid_region",
    "parse_rules",
    "parse_terms_amount",
    "rules_to_json",
]
