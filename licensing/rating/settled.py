"""Re-rating a settled month: late usage becomes ``adjustment`` lines on a later settlement.

A settled month is never reopened. Its usage, late records included, is rated again and the
difference from what was already billed for it is carried as adjustment lines, per model, customer
category and terms label. See docs/rating.md ("Late usage and adjustments", "Editions").
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from core.periods import period_bounds
from licensing.rating.engine import EDITION, EDITIONS, Edition, Line, RatingResult, rate
from licensing.rating.terms import Terms
from licensing.rating.usage import UsageGroup, WindowState

__all__ = [
    "Billed",
    "adjustment_lines",
    "rerate_settled",
]


def adjustment_lines(
    *, period: str, rerated: Sequence[Line], settled: Sequence[Line]
) -> tuple[Line, ...]:
    """Re-rated minus settled, per model, customer category and terms label of ``period``.

    ``settled`` is every line already billed for ``period``: the lines of its own settlement
    and any adjustment lines for it in later settlements. Keys whose difference is zero in amount
    and in every quantity produce no line. The amounts are differences of rounded amounts, so
    they are already on the minor unit.
    """
    period_bounds(period)
    delta: dict[tuple[str, str, str], list[Any]] = {}
    for sign, lines in ((1, rerated), (-1, settled)):
        for line in lines:
            if not isinstance(line, Line):
                raise TypeError(f"lines must be Line, not {type(line).__name__}")
            if line.period != period:
                raise ValueError(f"a line of {line.period} cannot adjust {period}")
            acc = delta.setdefault(
                (line.license_version, line.model, line.customer_category),
                [0, 0, 0, 0, Decimal(0), Decimal(0)],
            )
            acc[0] += sign * line.input_tokens
            acc[1] += sign * line.cached_input_tokens
            acc[2] += sign * line.output_tokens
            acc[3] += sign * line.requests
            acc[4] += sign * line.revenue
            acc[5] += sign * line.amount
    result = [
        Line(
            kind="adjustment",
            model=model,
            customer_category=category,
            period=period,
            license_version=label,
            input_tokens=acc[0],
            cached_input_tokens=acc[1],
            output_tokens=acc[2],
            requests=acc[3],
            revenue=acc[4],
            amount=acc[5],
            description=f"adjustment for {period}",
        )
        for (label, model, category), acc in sorted(delta.items())
        if any(acc)
    ]
    return tuple(result)


@dataclass(frozen=True, slots=True)
class Billed:
    """One settlement's lines for the settled period (its own, or adjustments of it), and a way
    to fetch the period's usage as it had been received when that settlement was computed:
    ``usage()`` returns its groups and the year-to-date before the period."""

    lines: tuple[Line, ...]
    usage: Callable[[], tuple[Sequence[UsageGroup], WindowState]]


def _edition_offset(period: str, terms: Sequence[Terms], history: Sequence[Billed]) -> list[Line]:
    """What to add to the lines already billed so that they read as the current edition.

    Latest settlement first: if everything billed up to it is what the current edition rates the
    usage received by then, nothing (later billing was computed against it). If it is what
    edition 1 rates, the difference between the two editions' ratings of that usage: the change
    of rules is not billed, and every later adjustment was computed on top of it. If neither
    (a record missed by that settlement), the settlement before it decides."""
    for last in range(len(history) - 1, -1, -1):
        so_far = [line for billed in history[: last + 1] for line in billed.lines]
        groups, window = history[last].usage()

        def rating(
            edition: Edition, groups: Sequence[UsageGroup] = groups, window: WindowState = window
        ) -> tuple[Line, ...]:
            return rate(
                period=period, terms=terms, usage=groups, window_state=window, edition=edition
            ).lines

        current = rating(EDITION)
        if not adjustment_lines(period=period, rerated=current, settled=so_far):
            return []
        if any(
            not adjustment_lines(period=period, rerated=rating(edition), settled=so_far)
            for edition in EDITIONS
            if edition != EDITION
        ):
            return list(adjustment_lines(period=period, rerated=current, settled=so_far))
    return []


def rerate_settled(
    *,
    period: str,
    terms: Sequence[Terms],
    usage: Iterable[UsageGroup],
    window_state: WindowState,
    settled: Sequence[Line],
    history: Sequence[Billed] | None = None,
    edition: Edition = EDITION,
) -> RatingResult:
    """Re-rate a settled ``period`` with all its usage (late records included) and return
    ``adjustment`` lines for the difference from ``settled``, to carry on the next settlement.

    ``window_state`` is the year-to-date before ``period``, as when it was first rated. The
    digests are those of the re-rating; the settled period's own settlement is never touched.

    ``history`` (optional): the settlements that billed ``settled``, oldest first (their lines
    together are ``settled``). Given it, a period billed under edition 1 of the rules is compared
    as if it had been billed under the current edition, so the new rules add no adjustment.

    ``edition=1`` re-derives an adjustment as edition 1's code computed it (against ``settled``
    as stored; ``history`` unused), only to verify settlements written before edition 2.
    """
    rerated = rate(
        period=period, terms=terms, usage=usage, window_state=window_state, edition=edition
    )
    lines = adjustment_lines(period=period, rerated=rerated.lines, settled=settled)
    # When nothing differs from the stored lines there is nothing to adjust, and the history (an
    # aggregation per settlement) need not be read: the common case of a month re-rated again.
    if lines and history and edition == EDITION:
        baseline = [*settled, *_edition_offset(period, terms, history)]
        lines = adjustment_lines(period=period, rerated=rerated.lines, settled=baseline)
    return RatingResult(
        period=period,
        currency=rerated.currency,
        lines=lines,
        flags=rerated.flags,
        total=sum((line.amount for line in lines), Decimal(0)),
        terms_digest=rerated.terms_digest,
        usage_digest=rerated.usage_digest,
        window_state=rerated.window_state,
    )
