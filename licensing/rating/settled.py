"""Re-rating a settled month: late usage becomes ``adjustment`` lines on a later settlement.

A settled month is never reopened. Its usage, late records included, is rated again and the
difference from what was already billed for it is carried as adjustment lines, per model, customer
category and terms label. See docs/rating.md ("Late usage and adjustments", "Editions").
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Any

from core.periods import period_bounds
from licensing.rating.engine import EDITION, EDITIONS, Line, RatingResult, rate
from licensing.rating.terms import Terms
from licensing.rating.usage import UsageGroup, WindowState

__all__ = [
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


def _baseline(
    *,
    period: str,
    terms: Sequence[Terms],
    settled: Sequence[Line],
    settled_usage: Iterable[UsageGroup],
    window_state: WindowState,
) -> Sequence[Line]:
    """What the new rating is compared with: ``settled`` itself, unless it was rated under an
    earlier edition (an earlier edition's re-rating of ``settled_usage`` reproduces it and the
    current one does not); then the current edition's re-rating of that same usage, so that the
    change of rules is never billed, only the usage that arrived since."""
    usage = list(settled_usage)
    ratings = {
        edition: rate(
            period=period, terms=terms, usage=usage, window_state=window_state, edition=edition
        ).lines
        for edition in EDITIONS
    }
    if not adjustment_lines(period=period, rerated=ratings[EDITION], settled=settled):
        return settled
    for edition in EDITIONS:
        if edition != EDITION and not adjustment_lines(
            period=period, rerated=ratings[edition], settled=settled
        ):
            return ratings[EDITION]
    return settled  # reproduced by no edition (usage the settlement missed): compare as stored


def rerate_settled(
    *,
    period: str,
    terms: Sequence[Terms],
    usage: Iterable[UsageGroup],
    window_state: WindowState,
    settled: Sequence[Line],
    settled_usage: Iterable[UsageGroup] | None = None,
    settled_window_state: WindowState | None = None,
) -> RatingResult:
    """Re-rate a settled ``period`` with all its usage (late records included) and return
    ``adjustment`` lines for the difference from ``settled``, to carry on the next settlement.

    ``window_state`` is the year-to-date before ``period``, as when it was first rated. The
    digests are those of the re-rating; the settled period's own settlement is never touched.

    ``settled_usage`` (optional): the groups of the usage that ``settled`` billed (rated with
    ``settled_window_state``, default ``window_state``). Given it, a period settled under an
    earlier edition of the rules is compared with the current edition's rating of that usage
    instead of with its stored lines, so the new rules add no adjustment of their own.
    """
    rerated = rate(period=period, terms=terms, usage=usage, window_state=window_state)
    baseline = settled
    if settled_usage is not None:
        baseline = _baseline(
            period=period,
            terms=terms,
            settled=settled,
            settled_usage=settled_usage,
            window_state=settled_window_state or window_state,
        )
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
