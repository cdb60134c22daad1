"""The pure rating engine: license terms and usage in, settlement lines out.

No database, no clock, no I/O: the same input gives the same lines and the same digest bytes.
See docs/rating.md for the rules as a licensor reads them.
"""

from licensing.rating.engine import (
    EDITION,
    EDITIONS,
    Edition,
    Flag,
    Line,
    RatingResult,
    rate,
    rate_records,
)
from licensing.rating.rules import (
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
    first_match,
    is_valid_region,
    parse_rules,
    parse_terms_amount,
    rules_to_json,
)
from licensing.rating.settled import Billed, adjustment_lines, rerate_settled
from licensing.rating.terms import Terms, terms_in_force
from licensing.rating.text import describe
from licensing.rating.usage import (
    Threshold,
    UsageGroup,
    UsageRecord,
    WindowState,
    group_records,
    position_class,
    threshold_points,
)

__all__ = [
    "EDITION",
    "EDITIONS",
    "Above",
    "Billed",
    "Charge",
    "Edition",
    "Flag",
    "Flat",
    "Free",
    "GreaterOf",
    "Line",
    "Match",
    "PerToken",
    "RatingResult",
    "RevenueShare",
    "Rule",
    "RulesError",
    "Terms",
    "Threshold",
    "UsageGroup",
    "UsageRecord",
    "WindowState",
    "adjustment_lines",
    "describe",
    "first_match",
    "group_records",
    "is_valid_region",
    "parse_rules",
    "parse_terms_amount",
    "position_class",
    "rate",
    "rate_records",
    "rerate_settled",
    "rules_to_json",
    "terms_in_force",
    "threshold_points",
]
