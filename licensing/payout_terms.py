"""A licensor's `payout` node of the catalog (docs/catalog.md, docs/payouts.md): how and when the
platform pays the licensor. Validated here, with the path of every bad field, for both the
catalog import and the admin; stored on `Licensor` (the `payout_*` fields).

Percentages and minimums are `Decimal`; a minimum is in major units of its currency (dollars).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from core.money import is_valid_currency, minor_unit_exponent, parse_decimal

RAILS = ("manual", "stripe_connect")
PAYOUT_FIELDS = {"rail", "stripe_account", "minimum", "withholding_percent", "platform_fee_percent"}
# A Stripe connected account id, as Stripe spells them.
STRIPE_ACCOUNT_RE = re.compile(r"^acct_[A-Za-z0-9]{1,64}$")


@dataclass(frozen=True)
class PayoutTerms:
    rail: str = "manual"
    stripe_account: str = ""
    minimum: dict[str, str] = field(default_factory=dict)  # currency -> decimal string, major units
    withholding_percent: Decimal = Decimal(0)
    platform_fee_percent: Decimal | None = None  # None: TOLLGATE_PLATFORM_FEE_PERCENT

    def licensor_values(self) -> dict[str, Any]:
        """The `Licensor` fields that store these terms."""
        return {
            "payout_rail": self.rail,
            "payout_stripe_account": self.stripe_account,
            "payout_minimum": self.minimum,
            "payout_withholding_percent": self.withholding_percent,
            "payout_platform_fee_percent": self.platform_fee_percent,
        }


def _percent(raw: Any, where: str, errors: list[str], *, nullable: bool) -> Decimal | None:
    if raw is None:
        if not nullable:
            errors.append(f"{where}: must be a decimal string from 0 to 100")
        return None
    try:
        value = parse_decimal(raw, field=where, max_places=6)
    except (TypeError, ValueError):
        errors.append(f"{where}: must be a decimal string from 0 to 100")
        return None
    if not Decimal(0) <= value <= Decimal(100):
        errors.append(f"{where}: must be from 0 to 100")
        return None
    return value


def parse_payout(raw: Any, path: str) -> tuple[PayoutTerms | None, list[str]]:
    """The payout node at `path` (e.g. `licensors[0].payout`), or None and its errors as
    '<path>: <message>'. Absent keys take their defaults: rail manual, no minimum (0), no
    withholding, the platform's default fee."""
    errors: list[str] = []
    if not isinstance(raw, dict):
        return None, [f"{path}: must be an object"]
    for key in sorted(set(raw) - PAYOUT_FIELDS):
        errors.append(f"{path}.{key}: unknown field")
    rail = raw.get("rail", "manual")
    if rail not in RAILS:
        errors.append(f"{path}.rail: must be one of {', '.join(RAILS)}")
    account = raw.get("stripe_account")
    if account is not None and (
        not isinstance(account, str) or not STRIPE_ACCOUNT_RE.match(account)
    ):
        errors.append(f"{path}.stripe_account: must be a Stripe account id such as acct_123")
        account = None
    if rail == "stripe_connect" and not account and f"{path}.stripe_account" not in str(errors):
        errors.append(f"{path}.stripe_account: is required when rail is stripe_connect")
    minimum: dict[str, str] = {}
    raw_minimum = raw.get("minimum") or {}
    if not isinstance(raw_minimum, dict):
        errors.append(f"{path}.minimum: must be an object of currency to amount")
        raw_minimum = {}
    for currency, amount in sorted(raw_minimum.items()):
        where = f"{path}.minimum.{currency}"
        if not is_valid_currency(currency):
            errors.append(f"{where}: not an ISO 4217 currency code such as USD")
            continue
        try:
            value = parse_decimal(amount, field=where, max_places=minor_unit_exponent(currency))
        except (TypeError, ValueError):
            errors.append(
                f"{where}: must be a decimal string >= 0 with at most "
                f"{minor_unit_exponent(currency)} decimal places"
            )
            continue
        if value < 0:
            errors.append(f"{where}: must be >= 0")
            continue
        minimum[currency] = format(value, "f")
    withholding = _percent(
        raw.get("withholding_percent", "0"), f"{path}.withholding_percent", errors, nullable=False
    )
    fee = _percent(
        raw.get("platform_fee_percent"), f"{path}.platform_fee_percent", errors, nullable=True
    )
    if errors:
        return None, errors
    return (
        PayoutTerms(
            rail=str(rail),
            stripe_account=account or "",
            minimum=minimum,
            withholding_percent=withholding if withholding is not None else Decimal(0),
            platform_fee_percent=fee,
        ),
        [],
    )


def licensor_payout_values(raw: dict[str, Any], path: str, errors: list[str]) -> dict[str, Any]:
    """The `Licensor` fields of a catalog licensor's `payout` (errors appended to `errors`); {}
    when the node is absent, so that a licensor without one keeps what it has (the admin may
    have set it)."""
    if "payout" not in raw:
        return {}
    terms, problems = parse_payout(raw["payout"], f"{path}.payout")
    errors.extend(problems)
    return {} if terms is None else terms.licensor_values()


__all__ = ["PAYOUT_FIELDS", "RAILS", "PayoutTerms", "licensor_payout_values", "parse_payout"]
