"""What a settlement line says about its charge ("12% of net revenue", "$0.03 per 1M input
tokens"): the text of ``describe``, in the terms' currency."""

from __future__ import annotations

from decimal import Decimal

from licensing.rating.rules import (
    Above,
    Charge,
    Flat,
    Free,
    PerToken,
    RevenueShare,
    decimal_to_json,
)

__all__ = ["describe"]

_SYMBOLS = {"USD": "$", "EUR": "€", "GBP": "£", "JPY": "¥"}


def _money(amount: Decimal, currency: str) -> str:
    number = format(Decimal(decimal_to_json(amount)), ",f")
    symbol = _SYMBOLS.get(currency)
    return f"{symbol}{number}" if symbol else f"{currency} {number}"


def _above_text(above: Above | None, currency: str) -> str:
    if above is None:
        return ""
    window = "per month" if above.window == "month" else "per calendar year"
    if above.metric == "revenue":
        return f" above {_money(above.amount, currency)} of revenue {window}"
    return f" above {format(above.amount.normalize(), ',f')} tokens {window}"


def describe(charge: Charge, currency: str) -> str:
    """What a settlement line says about its charge: "12% of net revenue", ..."""
    if isinstance(charge, Free):
        return "free"
    if isinstance(charge, Flat):
        return "included in flat monthly fee"
    if isinstance(charge, RevenueShare):
        return f"{decimal_to_json(charge.percent)}% of net revenue" + _above_text(
            charge.above, currency
        )
    if isinstance(charge, PerToken):
        given = [
            (rate, name)
            for rate, name in (
                (charge.input, "input"),
                (charge.cached_input, "cached input"),
                (charge.output, "output"),
            )
            if rate is not None
        ]
        prices = " / ".join(_money(rate, currency) for rate, _ in given)
        names = " / ".join(name for _, name in given)
        return f"{prices} per 1M {names} tokens" + _above_text(charge.above, currency)
    parts = [describe(part, currency) for part in charge.of]
    return "greater of " + ", ".join(parts[:-1]) + " and " + parts[-1]
