"""The names the API fixes (docs/api.md), defined once and imported everywhere."""

from __future__ import annotations

from typing import Literal, TypeAlias, get_args

__all__ = [
    "CUSTOMER_CATEGORIES",
    "FLAG_KINDS",
    "LINE_KINDS",
    "LINE_KIND_LABELS",
    "CustomerCategory",
    "FlagKind",
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

# Settlement flag kinds: usage no rule of its terms matched, and an attribution to display.
FlagKind: TypeAlias = Literal["unlicensed", "attribution"]
FLAG_KINDS: tuple[FlagKind, ...] = get_args(FlagKind)
