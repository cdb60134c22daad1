"""Property (issue 17): any catalog that `import_catalog` accepts can be billed. Small random
catalogs in the format of docs/catalog.md (every charge kind of docs/rating.md, thresholds,
minimums and caps, versions changing within the month, an optional agreement) are imported, a
handful of usage records is posted through the REST API, and the month's run must end `done`, with
a settlement per host that posted usage whose total is the sum of its rounded lines, and that
`run_billing --verify` reproduces once approved."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from rest_framework.test import APIClient

from billing.models import BillingRun, Settlement
from billing.review import settlement_approve
from billing.verify import settlements_verify
from core.money import quantize
from licensing.catalog import CatalogError, catalog_import
from licensing.models import Host
from tests.billing.conftest import post_usage, run_billing

PERIOD = "2026-10"
CATEGORIES = ["individual", "commercial", "research", "nonprofit"]
REGIONS = ["US", "CN", "DE", "JP"]
HOSTS = ("h-one", "h-two")


def _money(currency: str) -> st.SearchStrategy[str]:
    """A positive amount written the way the catalog and the API take it: a decimal string with
    no more places than the currency's minor unit (JPY has none)."""
    whole = st.integers(min_value=1, max_value=5000)
    if currency == "JPY":
        return whole.map(str)
    return st.tuples(whole, st.sampled_from(["00", "05", "50", "99"])).map(
        lambda p: f"{p[0]}.{p[1]}"
    )


def _above(currency: str) -> st.SearchStrategy[dict[str, str] | None]:
    return st.none() | st.fixed_dictionaries(
        {
            "metric": st.sampled_from(["revenue", "tokens"]),
            "window": st.sampled_from(["month", "calendar_year"]),
            "amount": st.sampled_from(["0", "100", "2500", "1000000"]),
        }
    )


def _with_above(charge: dict[str, Any], above: dict[str, str] | None) -> dict[str, Any]:
    return charge if above is None else {**charge, "above": above}


def _share(currency: str) -> st.SearchStrategy[dict[str, Any]]:
    return st.builds(
        _with_above,
        st.fixed_dictionaries(
            {
                "type": st.just("revenue_share"),
                "percent": st.sampled_from(["0", "5", "12", "12.5", "33.333", "100"]),
            }
        ),
        _above(currency),
    )


def _per_token(currency: str) -> st.SearchStrategy[dict[str, Any]]:
    rate = st.sampled_from(["0.005", "0.03", "0.12", "1", "7"])
    per_million = st.dictionaries(
        st.sampled_from(["input", "cached_input", "output"]), rate, min_size=1, max_size=3
    )
    return st.builds(
        _with_above,
        st.fixed_dictionaries({"type": st.just("per_token"), "per_million": per_million}),
        _above(currency),
    )


def _charge(currency: str) -> st.SearchStrategy[dict[str, Any]]:
    metered = _share(currency) | _per_token(currency)
    inner_of = st.lists(metered, min_size=2, max_size=3).map(
        lambda of: {"type": "greater_of", "of": of}
    )
    greater_of = st.lists(metered | inner_of, min_size=2, max_size=3).map(
        lambda of: {"type": "greater_of", "of": of}
    )
    return st.one_of(
        st.just({"type": "free"}),
        metered,
        _money(currency).map(lambda amount: {"type": "flat", "amount": amount}),
        greater_of,
    )


def _match() -> st.SearchStrategy[dict[str, Any] | None]:
    regions = st.lists(st.sampled_from(REGIONS), min_size=1, max_size=2, unique=True)
    return st.none() | st.fixed_dictionaries(
        {},
        optional={
            "customer_category": st.lists(
                st.sampled_from(CATEGORIES), min_size=1, max_size=3, unique=True
            ),
            "region_in": regions,
            "region_not_in": regions,
        },
    )


def _rule(currency: str) -> st.SearchStrategy[dict[str, Any]]:
    def build(match: dict[str, Any] | None, charge: dict[str, Any]) -> dict[str, Any]:
        return {"charge": charge} if match is None else {"match": match, "charge": charge}

    return st.builds(build, _match(), _charge(currency))


@st.composite
def _terms(draw: st.DrawFn, currency: str, day: int) -> dict[str, Any]:
    """The terms fields shared by a license version and an agreement, in force from `day`."""
    return {
        "effective_from": f"{PERIOD}-{day:02d}T00:00:00Z",
        "currency": currency,
        "rules": draw(st.lists(_rule(currency), min_size=1, max_size=4)),
        "minimum_per_month": draw(st.none() | _money(currency)),
        "cap_per_month": draw(st.none() | _money(currency)),
    }


@st.composite
def catalogs(draw: st.DrawFn) -> dict[str, Any]:
    currency = draw(st.sampled_from(["USD", "EUR", "JPY"]))
    hosts = HOSTS[: draw(st.integers(min_value=1, max_value=2))]
    # The first version is in force from the 1st, so no record of the month lacks terms by
    # construction alone (rules that match nothing still leave usage unlicensed).
    later_days = draw(st.lists(st.integers(min_value=2, max_value=28), max_size=2, unique=True))
    versions = [
        {"version": f"v{i + 1}", **draw(_terms(currency, day))}
        for i, day in enumerate([1, *sorted(later_days)])
    ]
    agreements = []
    if draw(st.booleans()):
        day = draw(st.integers(min_value=1, max_value=28))
        agreements.append(
            {"host": hosts[0], "license": "lic", "version": "agr-1", **draw(_terms(currency, day))}
        )
    models: list[dict[str, Any]] = [{"slug": "base", "licensor": "lsr", "license": "lic"}]
    if draw(st.booleans()):
        models.append({"slug": "tuned", "licensor": "lsr", "license": None, "parent": "base"})
    return {
        "licensors": [{"slug": "lsr", "name": "Licensor"}],
        "hosts": [{"slug": h, "name": h, "currency": currency} for h in hosts],
        "licenses": [{"slug": "lic", "licensor": "lsr", "name": "License", "versions": versions}],
        "models": models,
        "agreements": agreements,
    }


@st.composite
def usage_records(draw: st.DrawFn, catalog: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(host slug, record) pairs in the license's currency, on days 1-28 of the month."""
    currency = catalog["licenses"][0]["versions"][0]["currency"]
    hosts = [h["slug"] for h in catalog["hosts"]]
    model_slugs = [m["slug"] for m in catalog["models"]]
    out = []
    for i in range(draw(st.integers(min_value=1, max_value=6))):
        rec: dict[str, Any] = {
            "event_id": f"e-{i}",
            "model": draw(st.sampled_from(model_slugs)),
            "occurred_at": f"{PERIOD}-{draw(st.integers(min_value=1, max_value=28)):02d}T"
            f"{draw(st.integers(min_value=0, max_value=23)):02d}:00:00Z",
            "customer_category": draw(st.sampled_from(CATEGORIES)),
            "revenue": draw(st.just("0") | _money(currency)),
            "currency": currency,
            "input_tokens": draw(st.integers(min_value=0, max_value=3_000_000)),
            "cached_input_tokens": draw(st.integers(min_value=0, max_value=1_000_000)),
            "output_tokens": draw(st.integers(min_value=0, max_value=3_000_000)),
        }
        region = draw(st.none() | st.sampled_from(REGIONS))
        if region is not None:
            rec["region"] = region
        out.append((draw(st.sampled_from(hosts)), rec))
    return out


_EXAMPLES = itertools.count()
_SLUGS = ("lsr", "lic", "h-one", "h-two", "base", "tuned")


def _period(n: int) -> str:
    """Example n bills a month of its own: once a month's run completed, a new pair's usage in it
    is late and is billed as an adjustment of a later month (docs/billing.md)."""
    return f"{2021 + n % 60 // 12}-{n % 12 + 1:02d}"  # from TOLLGATE_EARLIEST_PERIOD on


def _fresh(value: Any, n: int) -> Any:
    """`value` with every slug of the generated world suffixed by `n`: usage ingestion commits
    (durable transactions), so examples cannot be rolled back; each bills a world of its own, and
    the approved settlements of earlier examples close their pairs for later runs of the month."""
    text = json.dumps(value).replace(f"{PERIOD}-", f"{_period(n)}-")
    for slug in _SLUGS:
        text = text.replace(f'"{slug}"', f'"{slug}-{n}"')
    return json.loads(text)


@pytest.mark.django_db(transaction=True)
@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_any_imported_catalog_can_be_billed(
    data: st.DataObject, client_for: Callable[..., APIClient]
) -> None:
    catalog = data.draw(catalogs(), label="catalog")
    records = data.draw(usage_records(catalog), label="records")
    n = next(_EXAMPLES)
    _bill_and_check(_fresh(catalog, n), _fresh(records, n), client_for, _period(n))


def _bill_and_check(
    catalog: dict[str, Any],
    records: list[tuple[str, dict[str, Any]]],
    client_for: Callable[..., APIClient],
    period: str,
) -> None:
    # given: an accepted catalog and the hosts' usage posted through the API
    try:
        catalog_import(catalog)
    except CatalogError:
        assume(False)
    by_host: dict[str, list[dict[str, Any]]] = {}
    for host, rec in records:
        by_host.setdefault(host, []).append(rec)
    for host, recs in by_host.items():
        post_usage(client_for(host=Host.objects.get(slug=host)), recs)

    # when
    run_billing(period)

    # then: the run finished cleanly and billed every host that posted usage
    run = BillingRun.objects.filter(period=period).latest("started_at")
    assert run.status == BillingRun.Status.DONE, run.error
    settlements = list(
        Settlement.objects.filter(period=period, host__slug__in=by_host).prefetch_related("lines")
    )
    assert {s.host.slug for s in settlements} == set(by_host)
    for s in settlements:
        amounts = [line.amount for line in s.lines.all()]
        assert all(a == quantize(a, s.currency) for a in amounts), amounts
        assert s.total == sum(amounts, Decimal(0))
        assert s.currency == catalog["licenses"][0]["versions"][0]["currency"]

    # and: approved, every settlement is reproduced by --verify
    for s in settlements:
        settlement_approve(settlement=s, actor="test")
    checked, problems = settlements_verify(period=period)
    assert problems == []
    assert checked == len(settlements)
    # and: as well from the month's aggregation at once (what --verify does for a run's many
    # settlements): a pair's part of the month is its own aggregation
    assert settlements_verify(period=period, month_at_once=1) == (checked, [])
