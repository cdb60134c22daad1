"""Rating: one host, one license, one month of usage groups -> settlement lines.

Every amount is computed exactly in ``Decimal`` (80 significant digits, so the only inexact step,
the fraction of a record that crosses a threshold, is far below a minor unit) and rounded once per
line by ``core.money.quantize``. A total is the sum of its rounded lines.

Editions: ``EDITION`` (2) is how every rating is done now. Edition 1 is kept only to reproduce
settlements written before it (``run_billing --verify``, and re-rating their months for late usage):
it made a line per rule, let usage no rule matched choose the minimum and cap, and deduplicated flat
fees by identical rule. docs/rating.md ("Editions") says how settled months are treated.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Context, Decimal, localcontext
from operator import itemgetter
from typing import Any, Literal, TypeAlias

from core.money import quantize
from core.periods import period_bounds
from core.vocabulary import LINE_KINDS, FlagKind, LineKind
from licensing.rating.digests import canonical_json, group_json, terms_digest_of, usage_digest_of
from licensing.rating.rules import (
    Above,
    Charge,
    Flat,
    Free,
    GreaterOf,
    RevenueShare,
    Rule,
    first_match,
    rule_to_json,
)
from licensing.rating.terms import Terms
from licensing.rating.text import describe
from licensing.rating.usage import (
    UsageGroup,
    UsageRecord,
    WindowState,
    group_records,
)

__all__ = [
    "EDITION",
    "EDITIONS",
    "Edition",
    "Flag",
    "Line",
    "RatingResult",
    "describe",
    "rate",
    "rate_records",
]

Edition: TypeAlias = Literal[1, 2]
EDITION: Edition = 2  # the rules every new rating follows (docs/rating.md)
EDITIONS: tuple[Edition, ...] = (1, 2)

_KIND_ORDER: dict[str, int] = {kind: i for i, kind in enumerate(LINE_KINDS)}
_EXACT = Context(prec=80, rounding=ROUND_HALF_EVEN)
_MILLION = Decimal(1_000_000)
_HUNDRED = Decimal(100)


def _require_signed_money(value: object, name: str) -> None:
    if type(value) is Decimal and value.is_finite():  # the common case, first
        return
    if isinstance(value, float):
        raise TypeError(f"{name} must be a Decimal, not a float ({value!r})")
    if not isinstance(value, Decimal) or not value.is_finite():
        raise TypeError(f"{name} must be a finite Decimal, not {value!r}")


def _require_signed_count(value: object, name: str) -> None:
    if type(value) is int:  # the common case, first
        return
    if isinstance(value, float):
        raise TypeError(f"{name} must be an int, not a float ({value!r})")
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")


@dataclass(frozen=True, slots=True)
class Line:
    """One settlement line, as in docs/api.md. Quantities of an adjustment line are deltas."""

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

    kind: FlagKind
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


# --- the arithmetic -------------------------------------------------------------------------------


def _leaves(charge: Charge) -> list[Charge]:
    """The charges that produce an amount, depth first; greater_of only compares them."""
    if isinstance(charge, GreaterOf):
        return [leaf for part in charge.of for leaf in _leaves(part)]
    return [charge]


def _evaluate(charge: Charge, sums: Iterable[Decimal]) -> Decimal:
    """The line amount from the per-leaf sums, comparing greater_of per line."""
    return _walk(charge, iter(sums))


def _walk(node: Charge, leaf_sums: Iterator[Decimal]) -> Decimal:
    # A function of its own, not a closure that calls itself: such a closure is a reference
    # cycle, garbage only the cyclic collector frees (two a settlement line, in a billing run).
    if isinstance(node, GreaterOf):
        return max(_walk(part, leaf_sums) for part in node.of)
    return next(leaf_sums)


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
    """The usage of one settlement line while it is summed: per rule that rated part of it, the
    exact sums of that rule's leaf charges (a greater_of compares its parts on these sums)."""

    terms: Terms
    model: str
    customer_category: str
    sums: dict[int, list[Decimal]] = field(default_factory=dict)  # rule index -> leaf sums
    input_tokens: int = 0
    cached_input_tokens: int = 0
    output_tokens: int = 0
    requests: int = 0
    revenue: Decimal = field(default_factory=lambda: Decimal(0))

    def add(self, group: UsageGroup, index: int, year: WindowState) -> None:
        self.input_tokens += group.input_tokens
        self.cached_input_tokens += group.cached_input_tokens
        self.output_tokens += group.output_tokens
        self.requests += group.requests
        self.revenue += group.revenue
        leaves = _leaves(self.terms.rules[index].charge)
        sums = self.sums.setdefault(index, [Decimal(0)] * len(leaves))
        for position, leaf in enumerate(leaves):
            sums[position] += _leaf_amount(leaf, group, year)

    def exact_amount(self) -> Decimal:
        """Each rule's amount over its part of the line (greater_of compared there), summed."""
        rules = self.terms.rules
        return sum(
            (_evaluate(rules[index].charge, sums) for index, sums in sorted(self.sums.items())),
            Decimal(0),
        )

    def description(self) -> str:
        """The charge of every rule that rated part of the line, in rule order, each once."""
        texts: list[str] = []
        for index in sorted(self.sums):
            text = describe(self.terms.rules[index].charge, self.terms.currency)
            if text not in texts:
                texts.append(text)
        return "; ".join(texts)


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
    edition: Edition = EDITION,
) -> RatingResult:
    """Rate one month of one host's usage under one license.

    ``terms``: every version and agreement whose label a group carries (more is harmless).
    ``usage``: the month's groups, each tagged with the label of the terms that rate it (see
    ``terms_in_force``) and carrying its opening offset (see ``licensing.rating.usage``).
    ``window_state``: the host's year-to-date under the license before this month.
    ``edition``: leave it; 1 only reproduces settlements written under those rules.
    """
    period_bounds(period)
    if edition not in EDITIONS:
        raise ValueError(f"edition must be one of {EDITIONS}, not {edition!r}")
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
    # Each group's canonical form is written once: it is both the sort key and its part of the
    # usage digest.
    keyed = sorted(((group_json(g), g) for g in groups), key=itemgetter(0))
    groups = [g for _, g in keyed]

    with localcontext(_EXACT):
        return _rate(period, by_label, groups, [key for key, _ in keyed], opening, edition)


def _order(t: Terms) -> tuple[object, ...]:
    """Terms in the order they come into force (ties, a catalog mistake, broken by label)."""
    return (t.effective_from, t.label)


def _flat_lines(
    period: str, matched: dict[str, set[int]], by_label: dict[str, Terms], edition: Edition
) -> list[tuple[tuple[object, ...], Line]]:
    """``flat_fee`` lines from the flat rules that matched usage (terms label -> rule indexes).

    A flat charge is billed at most once per host, license and month: only the flat rules of the
    latest terms (in force order) whose flat rules matched usage this month are billed, each once.
    """
    chosen: list[tuple[Terms, int]] = []
    if edition == 1:
        # Edition 1: once per distinct rule JSON, under the latest terms that matched with it.
        by_json: dict[bytes, tuple[Terms, int]] = {}
        for label, indexes in matched.items():
            t = by_label[label]
            for index in indexes:
                key = canonical_json(rule_to_json(t.rules[index]))
                seen = by_json.get(key)
                if seen is None or _order(seen[0]) < _order(t):
                    by_json[key] = (t, index)
        chosen = list(by_json.values())
    elif matched:
        latest = max((by_label[label] for label in matched), key=_order)
        chosen = [(latest, index) for index in sorted(matched[latest.label])]
    lines: list[tuple[tuple[object, ...], Line]] = []
    for t, index in chosen:
        charge = t.rules[index].charge
        assert isinstance(charge, Flat)  # noqa: S101 - only flat rules are collected
        amount = quantize(charge.amount, t.currency)
        line = _bare_line("flat_fee", period, t, amount, "flat monthly fee")
        lines.append(((1, t.effective_from, t.label, "", "", index), line))
    return lines


def _rate(
    period: str,
    by_label: dict[str, Terms],
    groups: list[UsageGroup],
    canonical_groups: list[bytes],
    opening: WindowState,
    edition: Edition,
) -> RatingResult:
    # By label (unique among the terms, so one per terms), not by hashing whole terms.
    tagged = sorted(
        (by_label[label] for label in {g.terms_label for g in groups} if label), key=_order
    )
    currencies = {t.currency for t in tagged}
    if len(currencies) > 1:
        raise ValueError(
            f"terms used in {period} are in different currencies ({', '.join(sorted(currencies))})"
        )
    currency = tagged[-1].currency if tagged else None

    # One line per terms, model and category (edition 1: and rule).
    buckets: dict[tuple[str, str, str, int], _Bucket] = {}
    flats: dict[str, set[int]] = {}  # terms label -> indexes of flat rules that matched usage
    rated: set[str] = set()  # labels of terms whose rules matched usage (free and flat included)
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
        rated.add(t.label)
        if t.attribution:
            attribution.setdefault((t.label, group.model, group.customer_category), _FlagSum()).add(
                group
            )
        if isinstance(t.rules[index].charge, Flat):
            flats.setdefault(t.label, set()).add(index)
        key = (t.label, group.model, group.customer_category, index if edition == 1 else 0)
        bucket = buckets.get(key)
        if bucket is None:
            bucket = buckets[key] = _Bucket(t, group.model, group.customer_category)
        bucket.add(group, index, opening)

    lines: list[tuple[tuple[object, ...], Line]] = []
    for (_, _, _, rule_key), bucket in buckets.items():
        t = bucket.terms
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
            amount=quantize(bucket.exact_amount(), t.currency),
            description=bucket.description(),
        )
        order = (0, t.effective_from, t.label, bucket.model, bucket.customer_category, rule_key)
        lines.append((order, line))
    lines += _flat_lines(period, flats, by_label, edition)

    # Minimum and cap: per host, license and month, with the values of the last terms that rated
    # usage this month, and only in a month with rated usage: usage no rule matched is not rated
    # (edition 1 counted every terms the month's usage was tagged with).
    last_candidates = tagged if edition == 1 else [by_label[label] for label in rated]
    if last_candidates:
        lines += _minimum_and_cap(period, max(last_candidates, key=_order), lines)

    lines.sort(key=lambda pair: pair[0])
    ordered_lines = tuple(line for _, line in lines)
    return RatingResult(
        period=period,
        currency=currency,
        lines=ordered_lines,
        flags=_flags(unlicensed, attribution, by_label),
        total=sum((line.amount for line in ordered_lines), Decimal(0)),
        terms_digest=terms_digest_of(tagged),
        usage_digest=usage_digest_of(period, opening, canonical_groups),
        window_state=WindowState(
            opening.year, opening.revenue + month_revenue, opening.tokens + month_tokens
        ),
    )


def _minimum_and_cap(
    period: str, last: Terms, lines: list[tuple[tuple[object, ...], Line]]
) -> list[tuple[tuple[object, ...], Line]]:
    """The true-up and cap lines of ``last`` (its values) over the month's usage and flat lines."""
    charges = sum((line.amount for _, line in lines), Decimal(0))
    result: list[tuple[tuple[object, ...], Line]] = []
    if last.minimum_per_month is not None and charges < last.minimum_per_month:
        true_up = quantize(last.minimum_per_month - charges, last.currency)
        if true_up:
            line = _bare_line("minimum_true_up", period, last, true_up, "minimum guarantee true-up")
            result.append(((2, last.effective_from, last.label, "", "", 0), line))
            charges += true_up
    if last.cap_per_month is not None and charges > last.cap_per_month:
        credit = quantize(last.cap_per_month - charges, last.currency)
        if credit:
            line = _bare_line("cap_credit", period, last, credit, "cap credit")
            result.append(((3, last.effective_from, last.label, "", "", 0), line))
    return result


def _flags(
    unlicensed: dict[tuple[str | None, str, str], _FlagSum],
    attribution: dict[tuple[str, str, str], _FlagSum],
    by_label: dict[str, Terms],
) -> tuple[Flag, ...]:
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
    return tuple(flags)


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
