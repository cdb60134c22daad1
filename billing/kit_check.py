"""`verify_kit`: check a settlement's verification kit (billing/kit.py) with no database.

The usage records of the kit are grouped as billing's aggregation groups them (billing/
aggregation.py: per model, category, region, currency and terms label; for a license with
threshold points, net of corrections and split where a record lies below, across or above each
point), rated by the pure engine (`licensing.rating`) under the terms of the kit, and the digests
and lines compared with the kit's settlement. docs/verification.md walks an auditor through it.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import IO, Any

from billing.rerating import Bundle
from core.money import quantize
from core.periods import period_of
from core.vocabulary import CUSTOMER_CATEGORIES
from licensing.rating import (
    Line,
    Terms,
    Threshold,
    UsageGroup,
    WindowState,
    parse_rules,
    position_class,
    rate,
    rerate_settled,
    terms_in_force,
)

KIT_FILES = ("settlement.json", "terms.json", "rating.json", "usage.ndjson")
_COUNTS = ("input_tokens", "cached_input_tokens", "output_tokens", "requests")


class KitError(Exception):
    """The kit cannot be read: a file missing, or a record or a term malformed."""


@dataclass
class KitResult:
    problems: list[str]
    lines: int
    total: str
    currency: str
    records: int


@dataclass
class _Acc:
    """Sums of records in one group (or one event net of its corrections)."""

    input_tokens: int = 0
    cached_input_tokens: int = 0
    output_tokens: int = 0
    requests: int = 0
    revenue: Decimal = field(default_factory=lambda: Decimal(0))
    originals: int = 0  # corrections are not counted (billing/aggregation.py)
    revenue_before: Decimal | None = None
    tokens_before: int | None = None

    def add(self, other: _Acc) -> None:
        for name in _COUNTS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.revenue += other.revenue
        self.originals += other.originals

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.cached_input_tokens + self.output_tokens


@dataclass
class _LicenseMonth:
    """One license's month in the kit: its rating.json entry and the records seen so far."""

    entry: dict[str, Any]
    points: list[Threshold]
    plain: dict[tuple[Any, ...], _Acc] = field(default_factory=dict)  # group key -> sums
    # For threshold licenses: event (the original's id) -> (group keys, net sums)
    net: dict[str, tuple[tuple[Any, ...], datetime, _Acc]] = field(default_factory=dict)


def _decimal(value: Any, where: str) -> Decimal:
    if not isinstance(value, str):
        raise KitError(f"{where}: a decimal string is required, not {value!r}")
    try:
        result = Decimal(value)
    except InvalidOperation:
        raise KitError(f"{where}: {value!r} is not a decimal") from None
    if not result.is_finite():
        raise KitError(f"{where}: {value!r} is not a decimal")
    return result


def _when(value: Any, where: str) -> datetime:
    try:
        at = datetime.fromisoformat(str(value))
    except ValueError:
        raise KitError(f"{where}: {value!r} is not an RFC 3339 time") from None
    if at.tzinfo is None:
        raise KitError(f"{where}: {value!r} has no offset")
    return at


def _read_json(zf: zipfile.ZipFile, name: str) -> Any:
    try:
        return json.loads(zf.read(name))
    except KeyError:
        raise KitError(f"{name} is missing from the kit") from None
    except ValueError as exc:
        raise KitError(f"{name} is not JSON: {exc}") from None


def _terms_of(catalog: dict[str, Any], host: str) -> dict[str, list[Terms]]:
    """license slug -> its versions and the host's agreements, as the engine's terms."""

    def one(raw: dict[str, Any], kind: str, where: str) -> Terms:
        try:
            return Terms(
                label=raw["version"],
                kind=kind,  # type: ignore[arg-type]
                effective_from=_when(raw["effective_from"], f"{where}.effective_from"),
                currency=raw["currency"],
                rules=parse_rules(raw["rules"], f"{where}.rules"),
                minimum_per_month=_optional(raw.get("minimum_per_month"), where),
                cap_per_month=_optional(raw.get("cap_per_month"), where),
                attribution=raw.get("attribution") or None,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise KitError(f"terms.json {where}: {exc}") from None

    out: dict[str, list[Terms]] = {}
    for i, lic in enumerate(catalog.get("licenses", [])):
        out.setdefault(lic["slug"], []).extend(
            one(v, "version", f"licenses[{i}].versions[{j}]")
            for j, v in enumerate(lic.get("versions", []))
        )
    for i, a in enumerate(catalog.get("agreements", [])):
        if a.get("host") == host:
            out.setdefault(a["license"], []).append(one(a, "agreement", f"agreements[{i}]"))
    return out


def _optional(value: Any, where: str) -> Decimal | None:
    return None if value is None else _decimal(value, where)


def _model_licenses(catalog: dict[str, Any]) -> dict[str, str]:
    """model slug -> the license that rates it (its own, or its nearest ancestor's)."""
    models = {m["slug"]: m for m in catalog.get("models", [])}
    out: dict[str, str] = {}
    for slug in models:
        current: dict[str, Any] | None = models[slug]
        seen: set[str] = set()
        while current is not None and current["slug"] not in seen:
            seen.add(current["slug"])
            if current.get("license"):
                out[slug] = current["license"]
                break
            current = models.get(current.get("parent") or "")
    return out


def _record(raw: Any, where: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise KitError(f"{where}: a JSON object is required")
    rec = dict(raw)
    for name in ("event_id", "model", "currency"):
        if not isinstance(rec.get(name), str) or not rec[name]:
            raise KitError(f"{where}: {name} is required")
    if rec.get("customer_category") not in CUSTOMER_CATEGORIES:
        raise KitError(f"{where}: customer_category {rec.get('customer_category')!r} is unknown")
    for name in _COUNTS:
        if isinstance(rec.get(name), bool) or not isinstance(rec.get(name), int):
            raise KitError(f"{where}: {name} must be an integer")
    rec["occurred_at"] = _when(rec.get("occurred_at"), f"{where}: occurred_at")
    rec["revenue"] = _decimal(rec.get("revenue"), f"{where}: revenue")
    for name in ("region", "corrects"):
        if rec.get(name) is not None and not isinstance(rec[name], str):
            raise KitError(f"{where}: {name} must be a string or null")
    return rec


def _usage_lines(zf: zipfile.ZipFile) -> Iterator[tuple[int, Any]]:
    try:
        raw: IO[bytes] = zf.open("usage.ndjson")
    except KeyError:
        raise KitError("usage.ndjson is missing from the kit") from None
    with raw, io.TextIOWrapper(raw, encoding="utf-8") as text:
        for number, line in enumerate(text, start=1):
            if line.strip():
                try:
                    yield number, json.loads(line)
                except ValueError:
                    raise KitError(f"usage.ndjson line {number} is not JSON") from None


def _groups(month: _LicenseMonth, window: WindowState) -> list[UsageGroup]:
    """The month's groups as billing/aggregation.py forms them."""
    groups: dict[tuple[Any, ...], _Acc] = dict(month.plain)
    if month.points:
        # Running totals per host and license in event-time order, (occurred_at, event_id).
        revenue, tokens = Decimal(0), 0
        for eid, (keys, _, acc) in sorted(month.net.items(), key=lambda kv: (kv[1][1], kv[0])):
            sides = []
            for p in month.points:
                before: Decimal | int = revenue if p.metric == "revenue" else tokens
                if p.window == "calendar_year":
                    before += window.revenue if p.metric == "revenue" else window.tokens
                size = acc.revenue if p.metric == "revenue" else acc.tokens
                sides.append(position_class(before, size, p.amount))
            single = eid if "crossing" in sides else None
            key = (*keys, tuple(sides), single)
            group = groups.setdefault(key, _Acc())
            group.add(acc)
            # A group's opening offset is its first record's (the minimum over its records, as
            # the SQL takes it: running totals only grow).
            if group.revenue_before is None:
                group.revenue_before, group.tokens_before = revenue, tokens
            revenue += acc.revenue
            tokens += acc.tokens
    out = []
    for key, acc in groups.items():
        model, category, region, _, label = key[:5]
        out.append(
            UsageGroup(
                model=model,
                customer_category=category,
                terms_label=label,
                region=region,
                input_tokens=acc.input_tokens,
                cached_input_tokens=acc.cached_input_tokens,
                output_tokens=acc.output_tokens,
                requests=acc.requests,
                revenue=acc.revenue,
                record_count=max(acc.originals, 1),
                revenue_before=acc.revenue_before or Decimal(0),
                tokens_before=acc.tokens_before or 0,
            )
        )
    return out


def _line(raw: dict[str, Any], where: str) -> Line:
    try:
        return Line(
            kind=raw["kind"],
            model=raw["model"],
            customer_category=raw["customer_category"],
            period=raw["period"],
            license_version=raw["license_version"],
            input_tokens=raw["input_tokens"],
            cached_input_tokens=raw["cached_input_tokens"],
            output_tokens=raw["output_tokens"],
            requests=raw["requests"],
            revenue=_decimal(raw["revenue"], f"{where}.revenue"),
            amount=_decimal(raw["amount"], f"{where}.amount"),
            description=raw["description"],
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise KitError(f"{where}: {exc}") from None


def _key(line: Line) -> tuple[str, ...]:
    return (line.kind, line.period, line.license_version, line.model, line.customer_category)


def _name(line: Line) -> str:
    what = " ".join(p for p in (line.model, line.customer_category) if p)
    return f"{line.kind} {what + ' ' if what else ''}{line.period} {line.license_version}".strip()


_FIELDS = (
    "input_tokens",
    "cached_input_tokens",
    "output_tokens",
    "requests",
    "revenue",
    "amount",
    "description",
)


def _compare_lines(stored: list[Line], computed: list[Line]) -> list[str]:
    problems = []
    left: dict[tuple[str, ...], list[Line]] = {}
    for line in computed:
        left.setdefault(_key(line), []).append(line)
    for position, line in enumerate(stored, start=1):
        candidates = left.get(_key(line), [])
        if not candidates:
            problems.append(
                f"line {position} ({_name(line)}) of settlement.json is not in the recomputation"
            )
            continue
        mine = candidates.pop(0)
        for name in _FIELDS:
            if getattr(line, name) != getattr(mine, name):
                problems.append(
                    f"line {position} ({_name(line)}): {name} is {getattr(line, name)} in "
                    f"settlement.json, {getattr(mine, name)} recomputed"
                )
                break
    for rest in left.values():
        problems += [
            f"recomputed line ({_name(line)}) is missing from settlement.json" for line in rest
        ]
    return problems


def kit_verify(source: str | IO[bytes]) -> KitResult:
    """Recompute a kit's digests and lines; `problems` is empty when they all agree.
    Raises KitError when the kit cannot be read."""
    try:
        zf = zipfile.ZipFile(source)
    except (zipfile.BadZipFile, OSError) as exc:
        raise KitError(f"not a zip file: {exc}") from None
    with zf:
        settlement = _read_json(zf, "settlement.json")
        catalog = _read_json(zf, "terms.json")
        rating = _read_json(zf, "rating.json")
        try:
            host, currency = settlement["host"], settlement["currency"]
            stored = [
                _line(raw, f"settlement.json lines[{i}]")
                for i, raw in enumerate(settlement["lines"])
            ]
        except (KeyError, TypeError) as exc:
            raise KitError(f"settlement.json: {exc} is missing") from None
        terms = _terms_of(catalog, host)
        licenses_of = _model_licenses(catalog)
        months: dict[tuple[str, str], _LicenseMonth] = {}
        for entry in rating.get("months", []):
            points = [
                Threshold(p["metric"], p["window"], _decimal(p["amount"], "rating.json"))
                for p in entry.get("threshold_points", [])
            ]
            months[(entry["license"], entry["period"])] = _LicenseMonth(entry, sorted(points))

        records = 0
        for number, raw in _usage_lines(zf):
            where = f"usage.ndjson line {number}"
            rec = _record(raw, where)
            license_slug = licenses_of.get(rec["model"])
            if license_slug is None:
                raise KitError(f"{where}: model {rec['model']!r} is not in terms.json")
            month = months.get((license_slug, period_of(rec["occurred_at"])))
            if month is None:
                raise KitError(f"{where}: no month of rating.json rates it")
            records += 1
            t = terms_in_force(
                [x for x in terms.get(license_slug, []) if x.kind == "version"],
                [x for x in terms.get(license_slug, []) if x.kind == "agreement"],
                rec["occurred_at"],
            )
            keys = (
                rec["model"],
                rec["customer_category"],
                rec["region"] or None,
                rec["currency"],
                t.label if t is not None else None,
            )
            acc = _Acc(
                input_tokens=rec["input_tokens"],
                cached_input_tokens=rec["cached_input_tokens"],
                output_tokens=rec["output_tokens"],
                requests=rec["requests"],
                revenue=rec["revenue"],
                originals=0 if rec["corrects"] else 1,
            )
            if month.points:
                eid = rec["corrects"] or rec["event_id"]
                _, _, net = month.net.setdefault(eid, (keys, rec["occurred_at"], _Acc()))
                net.add(acc)
            else:
                month.plain.setdefault(keys, _Acc()).add(acc)

    bundle = Bundle()
    computed: list[Line] = []
    for (license_slug, month_period), month in months.items():
        ws = month.entry["window_state"]
        window = WindowState(
            int(ws["year"]), _decimal(ws["revenue"], "rating.json"), int(ws["tokens"])
        )
        groups = _groups(month, window)
        license_terms = terms.get(license_slug, [])
        if not month.entry.get("adjusted"):
            result = rate(
                period=month_period, terms=license_terms, usage=groups, window_state=window
            )
            bundle.usage_digests[license_slug] = result.usage_digest
            bundle.terms_digests[license_slug] = result.terms_digest
        else:
            billed = [
                _line(raw, f"rating.json billed[{i}]")
                for i, raw in enumerate(month.entry.get("billed", []))
            ]
            result = rerate_settled(
                period=month_period,
                terms=license_terms,
                usage=groups,
                window_state=window,
                settled=billed,
            )
        computed += result.lines

    problems = []
    usage_digest, terms_digest = bundle.digests()
    if usage_digest != settlement.get("usage_digest"):
        problems.append(
            f"usage_digest differs: {settlement.get('usage_digest')} in settlement.json, "
            f"{usage_digest} recomputed from usage.ndjson"
        )
    if terms_digest != settlement.get("terms_digest"):
        problems.append(
            f"terms_digest differs: {settlement.get('terms_digest')} in settlement.json, "
            f"{terms_digest} recomputed from terms.json"
        )
    problems += _compare_lines(stored, computed)
    total = _decimal(settlement.get("total"), "settlement.json total")
    lines_total = quantize(sum((line.amount for line in stored), Decimal(0)), currency)
    if total != lines_total:
        problems.append(f"total {total} is not the sum of the lines, {lines_total}")
    return KitResult(
        problems=problems,
        lines=len(stored),
        total=settlement.get("total", ""),
        currency=currency,
        records=records,
    )


__all__ = ["KIT_FILES", "KitError", "KitResult", "kit_verify"]
