"""Billing periods: a period is a UTC calendar month written ``YYYY-MM``.

Pure (no Django, no clock): every module that parses, bounds or steps a period uses these.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from functools import lru_cache

__all__ = [
    "PERIOD_PATTERN",
    "add_months",
    "is_period",
    "month_bounds",
    "period_bounds",
    "period_of",
    "period_parse",
    "previous_period",
]

# For database check constraints and validators: ``YYYY-MM`` with a month from 01 to 12.
PERIOD_PATTERN = r"^[0-9]{4}-(0[1-9]|1[0-2])$"
_PERIOD = re.compile(PERIOD_PATTERN)


def is_period(value: object) -> bool:
    """True for a ``YYYY-MM`` string with a month from 01 to 12."""
    return isinstance(value, str) and _PERIOD.match(value) is not None


def period_parse(period: object) -> tuple[int, int]:
    """``"2026-10"`` -> ``(2026, 10)``; a ``ValueError`` for anything that is not ``YYYY-MM``."""
    if not isinstance(period, str) or _PERIOD.match(period) is None:
        raise ValueError(f"period must be YYYY-MM, not {period!r}")
    return int(period[:4]), int(period[5:7])


def month_bounds(year: int, month: int) -> tuple[datetime, datetime]:
    """[first instant of the month, first instant of the next) in UTC."""
    start = datetime(year, month, 1, tzinfo=UTC)
    end = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC)
    return start, end


def period_bounds(period: str) -> tuple[datetime, datetime]:
    """``"2026-10"`` -> [2026-10-01T00:00Z, 2026-11-01T00:00Z)."""
    if type(period) is str:  # the common case, memoised: a billing run bounds one month per line
        return _period_bounds(period)
    return month_bounds(*period_parse(period))


@lru_cache(maxsize=1024)
def _period_bounds(period: str) -> tuple[datetime, datetime]:
    return month_bounds(*period_parse(period))


def period_of(at: datetime) -> str:
    """The UTC calendar month ``"YYYY-MM"`` an aware datetime falls in."""
    if not isinstance(at, datetime):
        raise TypeError(f"at must be a datetime, not {type(at).__name__}")
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"at must be timezone-aware, not naive ({at.isoformat()})")
    return at.astimezone(UTC).strftime("%Y-%m")


def add_months(year: int, month: int, delta: int) -> tuple[int, int]:
    """The (year, month) ``delta`` months after (or before, when negative) the given one."""
    index = year * 12 + (month - 1) + delta
    return index // 12, index % 12 + 1


def previous_period(at: datetime) -> str:
    """The UTC month before ``at``'s: what the run on the 1st bills."""
    year, month = add_months(*period_parse(period_of(at)), -1)
    return f"{year:04d}-{month:02d}"
