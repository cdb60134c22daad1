"""Rating: one host, one license, one month of usage groups -> settlement lines.

Every amount is computed exactly in ``Decimal`` (80 significant digits, so the only inexact step,
the fraction of a record that crosses a threshold, is far below a minor unit) and rounded once per
line by ``core.money.quantize``. A total is the sum of its rounded lines.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Context, Decimal, localcontext
from typing import Any, Literal

from core.money import quantize
from core.periods import period_bounds
from core.vocabulary import LINE_KINDS, LineKind
from licensing.rating.rules import (
    Above,
    Charge,
    Flat,
    Free,
    GreaterOf,
    PerToken,
    RevenueShare,
    Rule,
    decimal_to_json,
    first_match,
    rule_to_json,
)
from licensing.rating.terms import Terms
from licensing.rating.usage import (
    UsageGroup,
    UsageRecord,
    WindowState,
    group_records,
)

__all__ = [
    "Flag",
    "Line",
    "RatingResult",
    "adjustment_lines",
    "describe",
    "rate",
    "rate_records",
    "rerate_settled",
]

_KIND_ORDER: dict[str, int] = {kind: i for i, kind in enumerate(LINE_KINDS)}
_EXACT = Context(prec=80, rounding=ROUND_HALF_EVEN)
_MILLION = Decimal(1_000_000)
_HUNDRED = Decimal(100)


def _require_signed_money(value: object, name: str) -> None:
    if isinstance(value, float):
        raise TypeError(f"{name} must be a Decimal, not a float ({value!r})")
    if not isinstance(value, Decimal) or not value.is_finite():
        raise TypeError(f"{name} must be a finite Decimal, not {value!r}")


def _require_signed_count(value: object, name: str) -> None:
    if isinstance(value, float):
        raise TypeError(f"{name} must be an int, not a float ({value!r})")
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")


@dataclass(frozen=True, slots=True)
class Line:
    """One settlement line, as in contract §3. Quantities of an adjustment line are deltas."""

    kind: LineKind
    model: str  # "" on flat_fee, minimum_true_up and cap_credit lines
    customer_category: str  # "" likewise
    period: str  # the month of the usage; for an adjustment, the settled month it corrects
    license_version: str  # the terms label
    input_tokens: int
    cached_input_tokens: int
    output_tokens: int
    requests: int
    revenue: Decimal
    amount: Decimal  # rounded to the minor unit of the terms' currency
    description: str

    def __post_init__(self) -> None:
        if self.kind not in _KIND_ORDER:
            raise ValueError(f"unknown line kind {self.kind!r}")
        period_bounds(self.period)
        for name in ("input_tokens", "cached_input_tokens", "output_tokens", "requests"):
            _require_signed_count(getattr(self, name), name)
        _require_signed_money(self.revenue, "revenue")
        _require_signed_money(self.amount, "amount")

    def to_json(self) -> dict[str, Any]:
        """The line as the API shows it: amounts and revenue as decimal strings."""
        return {
            "kind": self.kind,
            "model": self.model,
            "customer_category": self.customer_category,
            "period": self.period,
            "license_version": self.license_version,
            "input_tokens": self.input_tokens,
            "cached_input_tokens": self.cached_input_tokens,
            "output_tokens": self.output_tokens,
            "requests": self.requests,
            "revenue": format(self.revenue, "f"),
            "amount": format(self.amount, "f"),
            "description": self.description,
        }


@dataclass(frozen=True, slots=True)
class Flag:
    """Something the licensor must see on the settlement besides money.

    ``unlicensed``: usage no rule matched (or no terms were in force for); it is billed nothing.
    ``attribution``: usage was rated under terms that oblige the host to display a text.
    """

    kind: Literal["unlicensed", "attribution"]
    license_version: str | None
    model: str
    customer_category: str
    record_count: int
    revenue: Decimal
    tokens: int
    message: str

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "license_version": self.license_version,
            "model": self.model,
            "customer_category": self.customer_category,
            "record_count": self.record_count,
            "revenue": format(self.revenue, "f"),
            "tokens": self.tokens,
            "message": self.message,
        }


@dataclass(frozen=True, slots=True)
class RatingResult:
    period: str
    currency: str | None  # of the terms used; None when no terms rated anything
    lines: tuple[Line, ...]
    flags: tuple[Flag, ...]
    total: Decimal  # the sum of the rounded line amounts
    terms_digest: str  # "sha256:<hex>" of the canonical JSON of the terms used
    usage_digest: str  # "sha256:<hex>" of the canonical JSON of the usage rated
    window_state: WindowState  # the year-to-date after this month, for the next month


# --- canonical JSON and digests -----------------------------------------------------------------


def _canonical(value: object) -> bytes:
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def _digest(value: object) -> str:
    return "sha256:" + hashlib.sha256(_canonical(value)).hexdigest()


def _terms_digest(used: Sequence[Terms]) -> str:
    return _digest([t.to_json() for t in used])


def _usage_digest(period: str, opening: WindowState, groups: Iterable[UsageGroup]) -> str:
    usage = sorted((g.to_json() for g in groups), key=lambda g: _canonical(g))
    return _digest({"period": period, "window_state": opening.to_json(), "usage": usage})


# --- descriptions ---------------------------------------------------------------------------------

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


# --- the arithmetic -------------------------------------------------------------------------------


def _leaves(charge: Charge) -> list[Charge]:
    """The charges that produce an amount, depth first; greater_of only compares them."""
    if isinstance(charge, GreaterOf):
        return [leaf for part in charge.of for leaf in _leaves(part)]
    return [charge]


def _evaluate(charge: Charge, sums: Iterable[Decimal]) -> Decimal:
    """The line amount from the per-leaf sums, comparing greater_of per line."""
    it = iter(sums)

    def walk(node: Charge) -> Decimal:
        if isinstance(node, GreaterOf):
            return max(walk(part) for part in node.of)
        return next(it)

    return walk(charge)


def _charged_part(full: Decimal, group: UsageGroup, above: Above, year: WindowState) -> Decimal:
    """The part of ``full`` that lies beyond the threshold (marginal).

    A group of several records lies wholly on one side of every threshold (the grouping
    invariant), so its opening offset decides; a single record that crosses is charged the
    fraction of its metric beyond the threshold.
    """
    if above.metric == "revenue":
        before, size = group.revenue_before, group.revenue
        if above.window == "calendar_year":
            before += year.revenue
    else:
        before, size = Decimal(group.tokens_before), Decimal(group.tokens)
        if above.window == "calendar_year":
            before += year.tokens
    if before >= above.amount:
        return full
    beyond = before + size - above.amount
    if group.record_count > 1 or beyond <= 0:
        return Decimal(0)
    return full * beyond / size


def _leaf_amount(charge: Charge, group: UsageGroup, year: WindowState) -> Decimal:
    """The exact amount of one leaf charge for one group."""
    if isinstance(charge, Free | Flat | GreaterOf):
        return Decimal(0)
    if isinstance(charge, RevenueShare):
        full = group.revenue * charge.percent / _HUNDRED
    else:
        full = (
            group.input_tokens * (charge.input or 0)
            + group.cached_input_tokens * (charge.cached_input or 0)
            + group.output_tokens * (charge.output or 0)
        ) / _MILLION
    if charge.above is None:
        return full
    return _charged_part(full, group, charge.above, year)


def _first_match(rules: Sequence[Rule], group: UsageGroup) -> int | None:
    return first_match(rules, group.customer_category, group.region)


@dataclass
class _Bucket:
    """The usage of one settlement line while it is summed."""

    terms: Terms
    rule_index: int
    model: str
    customer_category: str
    sums: list[Decimal]
    input_tokens: int = 0
    cached_input_tokens: int = 0
    output_tokens: int = 0
    requests: int = 0
    revenue: Decimal = field(default_factory=lambda: Decimal(0))

    def add(self, group: UsageGroup) -> None:
        self.input_tokens += group.input_tokens
        self.cached_input_tokens += group.cached_input_tokens
        self.output_tokens += group.output_tokens
        self.requests += group.requests
        self.revenue += group.revenue


@dataclass
class _FlagSum:
    record_count: int = 0
    revenue: Decimal = field(default_factory=lambda: Decimal(0))
    tokens: int = 0

    def add(self, group: UsageGroup) -> None:
        self.record_count += group.record_count
        self.revenue += group.revenue
        self.tokens += group.tokens


def _check_terms(terms: Sequence[Terms]) -> dict[str, Terms]:
    by_label: dict[str, Terms] = {}
    for t in terms:
        if not isinstance(t, Terms):
            raise TypeError(f"terms must be Terms, not {type(t).__name__}")
        if t.label in by_label:
            raise ValueError(f"two terms are labelled {t.label!r}")
        by_label[t.label] = t
    return by_label


def rate(
    *,
    period: str,
    terms: Sequence[Terms],
    usage: Iterable[UsageGroup],
    window_state: WindowState,
) -> RatingResult:
    """Rate one month of one host's usage under one license.

    ``terms``: every version and agreement whose label a group carries (more is harmless).
    ``usage``: the month's groups, each tagged with the label of the terms that rate it (see
    ``terms_in_force``) and carrying its opening offset (see ``licensing.rating.usage``).
    ``window_state``: the host's year-to-date under the license before this month.
    """
    period_bounds(period)
    by_label = _check_terms(terms)
    if not isinstance(window_state, WindowState):
        raise TypeError("window_state must be a WindowState")
    opening = window_state.opening_for(period)
    groups = list(usage)
    for group in groups:
        if not isinstance(group, UsageGroup):
            raise TypeError(f"usage must be UsageGroup, not {type(group).__name__}")
        if group.terms_label is not None and group.terms_label not in by_label:
            raise ValueError(f"usage is tagged with unknown terms {group.terms_label!r}")
    # A canonical order makes every sum below, and so every byte of the result, order independent.
    groups.sort(key=lambda g: _canonical(g.to_json()))

    with localcontext(_EXACT):
        return _rate(period, by_label, groups, opening)


def _rate(
    period: str, by_label: dict[str, Terms], groups: list[UsageGroup], opening: WindowState
) -> RatingResult:
    used_labels = {g.terms_label for g in groups if g.terms_label is not None}
    used = sorted(
        (by_label[label] for label in used_labels), key=lambda t: (t.effective_from, t.label)
    )
    currencies = {t.currency for t in used}
    if len(currencies) > 1:
        raise ValueError(
            f"terms used in {period} are in different currencies ({', '.join(sorted(currencies))})"
        )
    currency = used[-1].currency if used else None

    buckets: dict[tuple[str, str, str, int], _Bucket] = {}
    flats: dict[bytes, tuple[Terms, Flat]] = {}
    unlicensed: dict[tuple[str | None, str, str], _FlagSum] = {}
    attribution: dict[tuple[str, str, str], _FlagSum] = {}
    month_revenue, month_tokens = Decimal(0), 0

    for group in groups:
        month_revenue += group.revenue
        month_tokens += group.tokens
        t = by_label[group.terms_label] if group.terms_label is not None else None
        index = _first_match(t.rules, group) if t is not None else None
        if t is None or index is None:
            label = t.label if t is not None else None
            unlicensed.setdefault((label, group.model, group.customer_category), _FlagSum()).add(
                group
            )
            continue
        rule = t.rules[index]
        if t.attribution:
            attribution.setdefault((t.label, group.model, group.customer_category), _FlagSum()).add(
                group
            )
        if isinstance(rule.charge, Flat):
            # Once per month per distinct flat rule, even if a new version repeats it unchanged:
            # charged under the latest terms that matched usage with it.
            key = _canonical(rule_to_json(rule))
            seen = flats.get(key)
            if seen is None or (seen[0].effective_from, seen[0].label) < (
                t.effective_from,
                t.label,
            ):
                flats[key] = (t, rule.charge)
        leaves = _leaves(rule.charge)
        bucket_key = (t.label, group.model, group.customer_category, index)
        bucket = buckets.get(bucket_key)
        if bucket is None:
            bucket = _Bucket(
                t, index, group.model, group.customer_category, [Decimal(0)] * len(leaves)
            )
            buckets[bucket_key] = bucket
        bucket.add(group)
        for position, leaf in enumerate(leaves):
            bucket.sums[position] += _leaf_amount(leaf, group, opening)

    lines: list[tuple[tuple[object, ...], Line]] = []
    for bucket in buckets.values():
        t = bucket.terms
        charge = t.rules[bucket.rule_index].charge
        amount = quantize(_evaluate(charge, bucket.sums), t.currency)
        line = Line(
            kind="usage",
            model=bucket.model,
            customer_category=bucket.customer_category,
            period=period,
            license_version=t.label,
            input_tokens=bucket.input_tokens,
            cached_input_tokens=bucket.cached_input_tokens,
            output_tokens=bucket.output_tokens,
            requests=bucket.requests,
            revenue=bucket.revenue,
            amount=amount,
            description=describe(charge, t.currency),
        )
        lines.append(
            (
                (
                    0,
                    t.effective_from,
                    t.label,
                    bucket.model,
                    bucket.customer_category,
                    bucket.rule_index,
                ),
                line,
            )
        )
    for t, flat in flats.values():
        line = _bare_line(
            "flat_fee", period, t, quantize(flat.amount, t.currency), "flat monthly fee"
        )
        lines.append(((1, t.effective_from, t.label, "", "", 0), line))

    charges = sum((line.amount for _, line in lines), Decimal(0))
    if used:
        # Minimum and cap: per host, license and month, with the values of the last terms that
        # rated usage this month, and only in a month with usage (this function sees no other).
        last = used[-1]
        if last.minimum_per_month is not None and charges < last.minimum_per_month:
            true_up = quantize(last.minimum_per_month - charges, last.currency)
            if true_up:
                lines.append(
                    (
                        (2, last.effective_from, last.label, "", "", 0),
                        _bare_line(
                            "minimum_true_up", period, last, true_up, "minimum guarantee true-up"
                        ),
                    )
                )
                charges += true_up
        if last.cap_per_month is not None and charges > last.cap_per_month:
            credit = quantize(last.cap_per_month - charges, last.currency)
            if credit:
                lines.append(
                    (
                        (3, last.effective_from, last.label, "", "", 0),
                        _bare_line("cap_credit", period, last, credit, "cap credit"),
                    )
                )

    lines.sort(key=lambda pair: pair[0])
    ordered_lines = tuple(line for _, line in lines)
    flags = [
        Flag(
            kind="unlicensed",
            license_version=label,
            model=model,
            customer_category=category,
            record_count=s.record_count,
            revenue=s.revenue,
            tokens=s.tokens,
            message=(
                f"no rule of {label} matches this usage; billed nothing"
                if label is not None
                else "no terms were in force when this usage occurred; billed nothing"
            ),
        )
        for (label, model, category), s in unlicensed.items()
    ]
    flags += [
        Flag(
            kind="attribution",
            license_version=label,
            model=model,
            customer_category=category,
            record_count=s.record_count,
            revenue=s.revenue,
            tokens=s.tokens,
            message=f"must display {by_label[label].attribution!r}",
        )
        for (label, model, category), s in attribution.items()
    ]
    flags.sort(key=lambda f: (f.kind, f.license_version or "", f.model, f.customer_category))
    return RatingResult(
        period=period,
        currency=currency,
        lines=ordered_lines,
        flags=tuple(flags),
        total=sum((line.amount for line in ordered_lines), Decimal(0)),
        terms_digest=_terms_digest(used),
        usage_digest=_usage_digest(period, opening, groups),
        window_state=WindowState(
            opening.year, opening.revenue + month_revenue, opening.tokens + month_tokens
        ),
    )


def _bare_line(kind: LineKind, period: str, t: Terms, amount: Decimal, text: str) -> Line:
    return Line(
        kind=kind,
        model="",
        customer_category="",
        period=period,
        license_version=t.label,
        input_tokens=0,
        cached_input_tokens=0,
        output_tokens=0,
        requests=0,
        revenue=Decimal(0),
        amount=amount,
        description=text,
    )


def rate_records(
    *,
    period: str,
    terms: Sequence[Terms],
    records: Iterable[UsageRecord],
    window_state: WindowState,
) -> RatingResult:
    """``rate`` of individual records, grouped by the reference ``group_records``."""
    groups = group_records(records, period=period, window_state=window_state, terms=terms)
    return rate(period=period, terms=terms, usage=groups, window_state=window_state)


# --- re-rating a settled period -------------------------------------------------------------------


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


def rerate_settled(
    *,
    period: str,
    terms: Sequence[Terms],
    usage: Iterable[UsageGroup],
    window_state: WindowState,
    settled: Sequence[Line],
) -> RatingResult:
    """Re-rate a settled ``period`` with all its usage (late records included) and return
    ``adjustment`` lines for the difference from ``settled``, to carry on the next settlement.

    ``window_state`` is the year-to-date before ``period``, as when it was first rated. The
    digests are those of the re-rating; the settled period's own settlement is never touched.
    """
    rerated = rate(period=period, terms=terms, usage=usage, window_state=window_state)
    lines = adjustment_lines(period=period, rerated=rerated.lines, settled=settled)
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
