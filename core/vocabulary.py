"""The names the API fixes (docs/api.md), defined once and imported everywhere."""

from __future__ import annotations

from typing import Literal, TypeAlias, get_args

__all__ = [
    "CUSTOMER_CATEGORIES",
    "LINE_KINDS",
    "LINE_KIND_LABELS",
    "CustomerCategory",
    "LineKind",
]

CustomerCategory: TypeAlias = Literal["individual", "commercial", "research", "nonprofit"]
CUSTOMER_CATEGORIES: tuple[CustomerCategory, ...] = get_args(CustomerCategory)

# Settlement line kinds, in the order lines are listed on a settlement.
LineKind: TypeAlias = Literal["usage", "flat_fee", "minimum_true_up", "cap_credit", "adjustment"]
LINE_KINDS: tuple[LineKind, ...] = get_args(LineKind)
# How each kind is called on a statement and in the admin.
LINE_KIND_LABELS: dict[LineKind, str] = {
    "usage": "usage",
    "flat_fee": "flat fee",
    "minimum_true_up": "minimum true-up",
    "cap_credit": "cap credit",
    "adjustment": "adjustment",
}
