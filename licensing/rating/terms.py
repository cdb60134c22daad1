"""Terms in force: a license version or a host's agreement, and which one rates a record."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal, Protocol, TypeVar

from core.money import is_valid_currency
from licensing.rating.rules import Rule, decimal_to_json, rules_to_json

__all__ = [
    "Terms",
    "terms_in_force",
]

def _require_aware(at: object, name: str) -> datetime:
    if not isinstance(at, datetime):
        raise TypeError(f"{name} must be a datetime, not {type(at).__name__}")
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, not naive ({at.isoformat()})")
    return at


def _require_optional_decimal(value: object, name: str) -> None:
    if value is None:
        return
    if isinstance(value, float):
        raise TypeError(f"{name} must be a Decimal, not a float ({value!r})")
    if not isinstance(value, Decimal) or not value.is_finite() or value < 0:
        raise TypeError(f"{name} must be a finite Decimal >= 0 or None, not {value!r}")


@dataclass(frozen=True, slots=True)
class Terms:
    """One set of terms: a public license version or a host's private agreement.

    ``label`` is the version string that appears on settlement lines ("2026-04-15", "fw-2026-06");
    labels must be unique among the terms handed to one rating. Amounts are in ``currency``.
    """

    label: str
    kind: Literal["version", "agreement"]
    effective_from: datetime  # aware; in force from here until the next terms of the same kind
    currency: str
    rules: tuple[Rule, ...]
    minimum_per_month: Decimal | None = None
    cap_per_month: Decimal | None = None
    attribution: str | None = None  # text the host must display, e.g. "Built with MiniMax M2.7"

    def __post_init__(self) -> None:
        if not isinstance(self.label, str) or not self.label:
            raise ValueError("label must be a non-empty string")
        if self.kind not in ("version", "agreement"):
            raise ValueError(f"kind must be version or agreement, not {self.kind!r}")
        _require_aware(self.effective_from, "effective_from")
        if not is_valid_currency(self.currency):
            raise ValueError(f"unknown currency code {self.currency!r}")
        if not isinstance(self.rules, tuple) or not all(isinstance(r, Rule) for r in self.rules):
            raise TypeError("rules must be a tuple of Rule (use parse_rules)")
        _require_optional_decimal(self.minimum_per_month, "minimum_per_month")
        _require_optional_decimal(self.cap_per_month, "cap_per_month")
        if self.attribution is not None and not isinstance(self.attribution, str):
            raise TypeError("attribution must be a string or None")

    def to_json(self) -> dict[str, Any]:
        """Canonical JSON form: what ``terms_digest`` hashes."""
        return {
            "label": self.label,
            "kind": self.kind,
            "effective_from": self.effective_from.astimezone(UTC).isoformat(),
            "currency": self.currency,
            "rules": rules_to_json(self.rules),
            "minimum_per_month": _optional_decimal_json(self.minimum_per_month),
            "cap_per_month": _optional_decimal_json(self.cap_per_month),
            "attribution": self.attribution,
        }


def _optional_decimal_json(value: Decimal | None) -> str | None:
    return None if value is None else decimal_to_json(value)


class Dated(Protocol):
    """What ``terms_in_force`` reads of a set of terms: a ``Terms``, or a catalog row
    (``licensing.models.LicenseVersion`` / ``Agreement``) read straight from the database."""

    @property
    def label(self) -> str: ...

    @property
    def effective_from(self) -> datetime: ...


T = TypeVar("T", bound=Dated)


def _latest(candidates: Iterable[T], at: datetime) -> T | None:
    in_force = [t for t in candidates if t.effective_from <= at]
    # Equal effective_from is a catalog mistake; the label decides so the answer is still stable.
    return max(in_force, key=lambda t: (t.effective_from, t.label), default=None)


def terms_in_force(versions: Iterable[T], agreements: Iterable[T], at: datetime) -> T | None:
    """The terms that rate a record of this host that occurred ``at``.

    A version is in force from its ``effective_from`` until the next version's; the same for the
    host's agreements. An agreement in force replaces the license's version in force. None means
    nothing was in force yet: such usage is billed nothing and flagged ``unlicensed``.

    This is the one definition of the rule: ingestion (the currency in force), the models
    endpoint and billing's aggregation (the terms of each bucket of a month) all call it.
    """
    _require_aware(at, "at")
    agreement = _latest(agreements, at)
    return agreement if agreement is not None else _latest(versions, at)
