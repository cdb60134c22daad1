"""The catalog file's validation (docs/catalog.md): walks the whole document and names the path
of every bad node, so one run lists every error; `licensing.catalog` writes only what passes.

`parse_catalog(data, errors)` returns the valid parts, ready to write, and collects the errors as
'<path>: <message>' in `errors.items`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from typing import Any

from core.money import is_valid_currency
from licensing.event_mapping import HOST_EVENT_KEYS, host_events_errors, host_events_values
from licensing.models import Host, License, LicensedModel, Licensor, ModelAlias
from licensing.payout_terms import licensor_payout_values
from licensing.rating import RulesError, parse_rules, parse_terms_amount

SLUG_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
MODEL_SLUG_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:-]{0,127}$")


class Errors:
    """The errors found so far, each '<path>: <message>'."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, path: str, message: str) -> None:
        self.items.append(f"{path}: {message}")


def _obj(raw: Any, path: str, errors: Errors, allowed: set[str], required: set[str]) -> bool:
    if not isinstance(raw, dict):
        errors.add(path, "must be an object")
        return False
    for key in sorted(set(raw) - allowed):
        errors.add(f"{path}.{key}", "unknown field")
    for key in sorted(required - set(raw)):
        errors.add(f"{path}.{key}", "is required")
    return True


def _str(
    raw: Any,
    key: str,
    path: str,
    errors: Errors,
    *,
    pattern: re.Pattern[str] | None = None,
    max_length: int = 200,
    required: bool = True,
) -> str | None:
    value = raw.get(key)
    where = f"{path}.{key}"
    if value is None:
        if required and key in raw:
            errors.add(where, "is required")
        return None
    if not isinstance(value, str) or not value.strip():
        errors.add(where, "must be a non-empty string")
        return None
    if len(value) > max_length:
        errors.add(where, f"must be at most {max_length} characters")
        return None
    if pattern is not None and not pattern.match(value):
        errors.add(where, f"must match {pattern.pattern}")
        return None
    return value


def _datetime(raw: Any, key: str, path: str, errors: Errors) -> datetime | None:
    value = raw.get(key)
    where = f"{path}.{key}"
    if value is None:
        return None
    if not isinstance(value, str):
        errors.add(where, "must be an RFC 3339 timestamp with an offset")
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        errors.add(where, "must be an RFC 3339 timestamp with an offset")
        return None
    if parsed.tzinfo is None:
        errors.add(where, "must carry a UTC offset (e.g. 2026-04-15T00:00:00Z)")
        return None
    return parsed


def _currency(raw: Any, path: str, errors: Errors) -> str | None:
    value = raw.get("currency")
    if value is None:
        return None
    if not is_valid_currency(value):
        errors.add(f"{path}.currency", "must be an ISO 4217 code such as USD")
        return None
    return str(value)


def _amount(raw: Any, key: str, path: str, errors: Errors) -> Decimal | None:
    try:
        return parse_terms_amount(raw.get(key), f"{path}.{key}")
    except RulesError as exc:
        errors.items.extend(exc.errors)
        return None


def _list(raw: Any, key: str, path: str, errors: Errors) -> list[Any]:
    value = raw.get(key, [])
    if value is None:
        return []
    if not isinstance(value, list):
        errors.add(f"{path}.{key}" if path else key, "must be a list")
        return []
    return value


def _email(raw: Any, path: str, errors: Errors) -> Any:
    """A licensor's or host's optional contact address, as given (an error when it is no email)."""
    email = raw.get("email")
    if email is not None and (not isinstance(email, str) or "@" not in email):
        errors.add(f"{path}.email", "must be an email address")
    return email


def _unique(slug: str | None, kind: str, path: str, seen: set[str], errors: Errors) -> None:
    """A slug given twice in the file is an error; a slug is known even when other fields of its
    object are bad, so references to it do not cascade into more errors."""
    if slug in seen:
        errors.add(f"{path}.slug", f"duplicate {kind} {slug!r}")
    if slug:
        seen.add(slug)


@dataclass
class Terms:
    """A license version's or an agreement's terms, validated and ready to write."""

    label: str
    effective_from: datetime
    currency: str
    rules: list[Any]
    minimum_per_month: Decimal | None
    cap_per_month: Decimal | None
    attribution: str
    review_days: int | None = None


TERMS_FIELDS = {
    "version",
    "effective_from",
    "currency",
    "rules",
    "minimum_per_month",
    "cap_per_month",
    "attribution",
    "review_days",
}


def _terms(raw: Any, path: str, errors: Errors, extra: set[str] = frozenset()) -> Terms | None:  # type: ignore[assignment]
    required = {"version", "effective_from", "currency", "rules"}
    if not _obj(raw, path, errors, TERMS_FIELDS | extra, required):
        return None
    before = len(errors.items)
    label = _str(raw, "version", path, errors, max_length=64)
    effective_from = _datetime(raw, "effective_from", path, errors)
    currency = _currency(raw, path, errors)
    try:
        parse_rules(raw.get("rules"), f"{path}.rules")
    except RulesError as exc:
        errors.items.extend(exc.errors)
    minimum = _amount(raw, "minimum_per_month", path, errors)
    cap = _amount(raw, "cap_per_month", path, errors)
    if minimum is not None and cap is not None and cap < minimum:
        errors.add(f"{path}.cap_per_month", "must not be below minimum_per_month")
    attribution = raw.get("attribution")
    if attribution is not None and not isinstance(attribution, str):
        errors.add(f"{path}.attribution", "must be a string or null")
    days = raw.get("review_days")  # an int >= 1 (a bool is no int here) or None: never deemed
    if days is not None and (type(days) is not int or days < 1):
        errors.add(f"{path}.review_days", "must be an integer of at least 1, or null")
    if len(errors.items) != before or label is None or effective_from is None or currency is None:
        return None
    terms = Terms(label, effective_from, currency, raw["rules"], minimum, cap, attribution or "")
    return replace(terms, review_days=days)


@dataclass
class _Parsed:
    licensors: list[dict[str, Any]] = field(default_factory=list)
    hosts: list[dict[str, Any]] = field(default_factory=list)
    licenses: list[tuple[dict[str, Any], list[Terms]]] = field(default_factory=list)
    models: list[dict[str, Any]] = field(default_factory=list)
    agreements: list[tuple[dict[str, Any], Terms]] = field(default_factory=list)


def parse_catalog(data: Any, errors: Errors) -> _Parsed:
    """The valid parts of a catalog document; every problem is added to `errors`."""
    parsed = _Parsed()
    if not _obj(
        data, "catalog", errors, {"licensors", "hosts", "licenses", "models", "agreements"}, set()
    ):
        return parsed
    licensor_slugs = set(Licensor.objects.values_list("slug", flat=True))
    host_slugs = set(Host.objects.values_list("slug", flat=True))
    license_slugs = set(License.objects.values_list("slug", flat=True))

    seen: set[str] = set()
    for i, raw in enumerate(_list(data, "licensors", "", errors)):
        path = f"licensors[{i}]"
        if not _obj(raw, path, errors, {"slug", "name", "email", "payout"}, {"slug", "name"}):
            continue
        slug = _str(raw, "slug", path, errors, pattern=SLUG_RE)
        name = _str(raw, "name", path, errors)
        email = _email(raw, path, errors)
        _unique(slug, "licensor", path, seen, errors)
        payout = licensor_payout_values(raw, path, errors.items)
        if slug and name:
            parsed.licensors.append({"slug": slug, "name": name, "email": email or "", **payout})
    licensor_slugs |= seen

    seen = set()
    for i, raw in enumerate(_list(data, "hosts", "", errors)):
        path = f"hosts[{i}]"
        allowed = {"slug", "name", "currency", "email", *HOST_EVENT_KEYS}
        if not _obj(raw, path, errors, allowed, {"slug", "name", "currency"}):
            continue
        slug = _str(raw, "slug", path, errors, pattern=SLUG_RE)
        name = _str(raw, "name", path, errors)
        currency = _currency(raw, path, errors)
        errors.items += host_events_errors(raw, path)
        email = _email(raw, path, errors)
        _unique(slug, "host", path, seen, errors)
        if slug and name and currency:
            parsed.hosts.append(
                {"slug": slug, "name": name, "currency": currency, "email": email or ""}
                | host_events_values(raw)
            )
    host_slugs |= seen

    seen = set()
    for i, raw in enumerate(_list(data, "licenses", "", errors)):
        path = f"licenses[{i}]"
        if not _obj(
            raw,
            path,
            errors,
            {"slug", "licensor", "name", "versions"},
            {"slug", "licensor", "name", "versions"},
        ):
            continue
        slug = _str(raw, "slug", path, errors, pattern=SLUG_RE)
        name = _str(raw, "name", path, errors)
        licensor = _str(raw, "licensor", path, errors)
        if licensor and licensor not in licensor_slugs:
            errors.add(f"{path}.licensor", f"unknown licensor {licensor!r}")
        if slug in seen:
            errors.add(f"{path}.slug", f"duplicate license {slug!r}")
        versions: list[Terms] = []
        labels: set[str] = set()
        starts: set[datetime] = set()
        for j, raw_version in enumerate(_list(raw, "versions", path, errors)):
            vpath = f"{path}.versions[{j}]"
            terms = _terms(raw_version, vpath, errors)
            if terms is None:
                continue
            if terms.label in labels:
                errors.add(f"{vpath}.version", f"duplicate version {terms.label!r}")
            if terms.effective_from in starts:
                errors.add(f"{vpath}.effective_from", "another version starts at the same time")
            labels.add(terms.label)
            starts.add(terms.effective_from)
            versions.append(terms)
        if slug:
            seen.add(slug)
        if slug and name and licensor:
            parsed.licenses.append(({"slug": slug, "name": name, "licensor": licensor}, versions))
    license_slugs |= seen

    model_slugs_in_db = dict(LicensedModel.objects.values_list("slug", "pk"))
    alias_owner_in_db = dict(ModelAlias.objects.values_list("alias", "model__slug"))
    file_models = {
        raw.get("slug")
        for raw in _list(data, "models", "", Errors())
        if isinstance(raw, dict) and isinstance(raw.get("slug"), str)
    }
    all_model_slugs = set(model_slugs_in_db) | file_models
    alias_owner: dict[str, str] = {}
    seen = set()
    for i, raw in enumerate(_list(data, "models", "", errors)):
        path = f"models[{i}]"
        if not _obj(
            raw,
            path,
            errors,
            {"slug", "name", "licensor", "license", "aliases", "parent"},
            {"slug", "licensor"},
        ):
            continue
        slug = _str(raw, "slug", path, errors, pattern=MODEL_SLUG_RE)
        licensor = _str(raw, "licensor", path, errors)
        license_slug = _str(raw, "license", path, errors, required=False)
        parent = _str(raw, "parent", path, errors, required=False)
        name = raw.get("name")
        if name is not None and not isinstance(name, str):
            errors.add(f"{path}.name", "must be a string")
        if licensor and licensor not in licensor_slugs:
            errors.add(f"{path}.licensor", f"unknown licensor {licensor!r}")
        if license_slug and license_slug not in license_slugs:
            errors.add(f"{path}.license", f"unknown license {license_slug!r}")
        if parent and parent not in all_model_slugs:
            errors.add(f"{path}.parent", f"unknown model {parent!r}")
        if parent and parent == slug:
            errors.add(f"{path}.parent", "a model cannot be its own parent")
        if not license_slug and not parent:
            errors.add(
                f"{path}.license", "a model needs a license, or a parent whose license it inherits"
            )
        if slug in seen:
            errors.add(f"{path}.slug", f"duplicate model {slug!r}")
        aliases: list[str] = []
        for k, alias in enumerate(_list(raw, "aliases", path, errors)):
            apath = f"{path}.aliases[{k}]"
            if not isinstance(alias, str) or not alias.strip() or len(alias) > 200:
                errors.add(apath, "must be a non-empty string of at most 200 characters")
                continue
            if alias in all_model_slugs:
                errors.add(apath, f"{alias!r} is already a model's slug")
            elif alias in alias_owner and alias_owner[alias] != slug:
                errors.add(apath, f"{alias!r} is already an alias of {alias_owner[alias]!r}")
            elif alias in alias_owner_in_db and alias_owner_in_db[alias] != slug:
                errors.add(apath, f"{alias!r} is already an alias of {alias_owner_in_db[alias]!r}")
            alias_owner[alias] = slug or ""
            aliases.append(alias)
        if slug and licensor:
            seen.add(slug)
            parsed.models.append(
                {
                    "slug": slug,
                    "name": name or "",
                    "licensor": licensor,
                    "license": license_slug,
                    "parent": parent,
                    "aliases": aliases if "aliases" in raw else None,
                }
            )
    _check_model_cycles(parsed.models, errors)

    for i, raw in enumerate(_list(data, "agreements", "", errors)):
        path = f"agreements[{i}]"
        terms = _terms(raw, path, errors, extra={"host", "license"})
        if not isinstance(raw, dict):
            continue
        host = _str(raw, "host", path, errors)
        license_slug = _str(raw, "license", path, errors)
        if "host" not in raw:
            errors.add(f"{path}.host", "is required")
        if "license" not in raw:
            errors.add(f"{path}.license", "is required")
        if host and host not in host_slugs:
            errors.add(f"{path}.host", f"unknown host {host!r}")
        if license_slug and license_slug not in license_slugs:
            errors.add(f"{path}.license", f"unknown license {license_slug!r}")
        if terms is not None and host and license_slug:
            parsed.agreements.append(({"host": host, "license": license_slug}, terms))
    return parsed


def _check_model_cycles(models: list[dict[str, Any]], errors: Errors) -> None:
    parents = dict(LicensedModel.objects.values_list("slug", "parent__slug"))
    parents.update({m["slug"]: m["parent"] for m in models})
    for i, model in enumerate(models):
        seen = {model["slug"]}
        current = model["parent"]
        while current:
            if current in seen:
                errors.add(f"models[{i}].parent", "parents form a cycle")
                break
            seen.add(current)
            current = parents.get(current)
